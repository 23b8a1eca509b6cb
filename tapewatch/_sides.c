/* tapewatch._sides: one side of an order book in contiguous memory (the native twin of
 * tapewatch.book_sides.PySide; both pass the same tests, and tapewatch.book_sides picks this one when it was
 * built).
 *
 * Why: replay of a whole-market capture keeps ~800 books, far more than the CPU cache holds. The Python side
 * (a dict of price -> qty plus a sorted list of float objects) pays a cache miss per hash probe and per bisect
 * step, on objects scattered over the heap. Here a side is two parallel arrays of doubles (keys, quantities)
 * sorted ascending with the best level LAST, so the levels a diff touches (near the touch) sit together at
 * the end of the arrays: a lookup gallops from the end (log2 of the level's depth steps, within a cache
 * line or two for the top levels) and an insert or delete moves only the levels better than it.
 *
 * Keys: a bid's key is its price; an ask's key is minus its price (exact for doubles), so both sides keep
 * ascending keys with the best level last and share one code path.
 *
 * Semantics (identical to PySide): update(levels) sets each (price, qty) level, qty 0 removes it (a missing
 * level is no error); load(levels) replaces the side with a snapshot's levels, keeping only qty > 0, the last
 * listing of a price winning; sums run best first, one addition at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    double *k; /* keys, ascending; best level last */
    double *q; /* quantities, parallel to k */
    Py_ssize_t n;
    Py_ssize_t cap;
    int ask; /* 1: keys are -price */
} SideObject;

static int
reserve(SideObject *self, Py_ssize_t want)
{
    if (want <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 64;
    while (cap < want)
        cap *= 2;
    double *k = self->k;
    PyMem_Resize(k, double, (size_t)cap); /* NULL on overflow too */
    if (k == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->k = k;
    double *q = self->q;
    PyMem_Resize(q, double, (size_t)cap);
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->q = q;
    self->cap = cap;
    return 0;
}

/* The smallest i with k[i] >= key (n when none), galloping from the end: the levels a diff touches are near
 * the best level, which is last. */
static Py_ssize_t
lower_bound(const double *k, Py_ssize_t n, double key)
{
    if (n == 0 || k[n - 1] < key)
        return n;
    Py_ssize_t hi = n - 1; /* k[hi] >= key */
    Py_ssize_t lo;         /* -1 or k[lo] < key */
    Py_ssize_t step = 1;
    for (;;) {
        lo = hi - step;
        if (lo < 0) {
            lo = -1;
            break;
        }
        if (k[lo] < key)
            break;
        hi = lo;
        step <<= 1;
    }
    while (hi - lo > 1) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (k[mid] < key)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* Set one level (qty 0 removes it). ``skip_existing``: leave a price already present as it is (load, which
 * walks the snapshot backwards so that the last listing of a price wins). */
static int
set_level(SideObject *self, double key, double qty, int skip_existing)
{
    Py_ssize_t n = self->n;
    Py_ssize_t i = lower_bound(self->k, n, key);
    if (i < n && self->k[i] == key) {
        if (skip_existing)
            return 0;
        if (qty != 0.0) {
            self->q[i] = qty;
        }
        else {
            Py_ssize_t tail = n - i - 1;
            memmove(self->k + i, self->k + i + 1, (size_t)tail * sizeof(double));
            memmove(self->q + i, self->q + i + 1, (size_t)tail * sizeof(double));
            self->n = n - 1;
        }
        return 0;
    }
    if (qty == 0.0)
        return 0;
    if (reserve(self, n + 1) < 0)
        return -1;
    Py_ssize_t tail = n - i;
    memmove(self->k + i + 1, self->k + i, (size_t)tail * sizeof(double));
    memmove(self->q + i + 1, self->q + i, (size_t)tail * sizeof(double));
    self->k[i] = key;
    self->q[i] = qty;
    self->n = n + 1;
    return 0;
}

static int
as_double(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* The (price, qty) of one level: a 2-tuple of floats on the hot path, any 2-sequence of numbers otherwise.
 * The caller holds a reference to ``level``; the items of a mutable level are held while they are converted
 * (a number's __float__ may run Python code that changes the level). */
static int
read_level(PyObject *level, double *price, double *qty)
{
    if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
        if (as_double(PyTuple_GET_ITEM(level, 0), price) < 0)
            return -1;
        return as_double(PyTuple_GET_ITEM(level, 1), qty);
    }
    PyObject *seq = PySequence_Fast(level, "a book level must be a (price, qty) pair");
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a book level must be a (price, qty) pair");
        return -1;
    }
    PyObject *p = PySequence_Fast_GET_ITEM(seq, 0);
    PyObject *q = PySequence_Fast_GET_ITEM(seq, 1);
    Py_INCREF(p);
    Py_INCREF(q);
    Py_DECREF(seq);
    int rc = (as_double(p, price) == 0 && as_double(q, qty) == 0) ? 0 : -1;
    Py_DECREF(p);
    Py_DECREF(q);
    return rc;
}

/* update (load = 0) or load (load = 1) the side with a sequence of levels. A load empties the side first and
 * walks the snapshot backwards: a snapshot lists the best level first, so its keys come in ascending order
 * this way and each lands at the end; the last listing of a price (met first here) wins, and only qty > 0
 * makes a level. A load that fails on a level leaves the side empty, never half a snapshot. The sequence's
 * length and items are read afresh for each level, and each level is held while it is read (converting a
 * number may run Python code that changes the sequence). */
static PyObject *
apply_levels(SideObject *self, PyObject *levels, int load)
{
    PyObject *seq = PySequence_Fast(levels, "levels must be a sequence of (price, qty) pairs");
    if (seq == NULL)
        return NULL;
    double sign = self->ask ? -1.0 : 1.0;
    if (load) {
        self->n = 0;
        if (reserve(self, PySequence_Fast_GET_SIZE(seq)) < 0)
            goto fail;
    }
    for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(seq); j++) {
        Py_ssize_t index = load ? PySequence_Fast_GET_SIZE(seq) - 1 - j : j;
        PyObject *level = PySequence_Fast_GET_ITEM(seq, index);
        double price, qty;
        Py_INCREF(level);
        int rc = read_level(level, &price, &qty);
        Py_DECREF(level);
        if (rc < 0)
            goto fail;
        if (load && !(qty > 0.0))
            continue;
        if (set_level(self, sign * price, qty, load) < 0)
            goto fail;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    if (load)
        self->n = 0;
    Py_DECREF(seq);
    return NULL;
}

static PyObject *
Side_update(SideObject *self, PyObject *levels)
{
    return apply_levels(self, levels, 0);
}

static PyObject *
Side_load(SideObject *self, PyObject *levels)
{
    return apply_levels(self, levels, 1);
}

static inline double
price_at(const SideObject *self, Py_ssize_t i)
{
    return self->ask ? -self->k[i] : self->k[i];
}

static PyObject *
pair(double price, double qty)
{
    return Py_BuildValue("(dd)", price, qty);
}

static PyObject *
Side_best(SideObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->n == 0)
        Py_RETURN_NONE;
    return pair(price_at(self, self->n - 1), self->q[self->n - 1]);
}

static PyObject *
Side_best_price(SideObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->n == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(price_at(self, self->n - 1));
}

static PyObject *
Side_worst_price(SideObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->n == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(price_at(self, 0));
}

static Py_ssize_t
count_arg(PyObject *arg)
{
    Py_ssize_t want = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (want == -1 && PyErr_Occurred())
        return -1;
    return want < 0 ? 0 : want;
}

static PyObject *
Side_top(SideObject *self, PyObject *arg)
{
    Py_ssize_t want = count_arg(arg);
    if (want < 0)
        return NULL;
    Py_ssize_t m = want < self->n ? want : self->n;
    /* copied first: making the Python objects may run a collection, and a finalizer could change the side */
    double *levels = PyMem_New(double, 2 * (size_t)(m ? m : 1));
    if (levels == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t i = self->n - 1 - j;
        levels[2 * j] = price_at(self, i);
        levels[2 * j + 1] = self->q[i];
    }
    PyObject *out = PyList_New(m);
    for (Py_ssize_t j = 0; out != NULL && j < m; j++) {
        PyObject *item = pair(levels[2 * j], levels[2 * j + 1]);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, j, item);
    }
    PyMem_Free(levels);
    return out;
}

static PyObject *
Side_volume(SideObject *self, PyObject *arg)
{
    Py_ssize_t want = count_arg(arg);
    if (want < 0)
        return NULL;
    Py_ssize_t m = want < self->n ? want : self->n;
    double total = 0.0;
    for (Py_ssize_t j = 0; j < m; j++)
        total += self->q[self->n - 1 - j];
    return PyFloat_FromDouble(total);
}

static PyObject *
Side_notional_within(SideObject *self, PyObject *arg)
{
    double limit;
    if (as_double(arg, &limit) < 0)
        return NULL;
    /* bids: price >= limit; asks: price <= limit, i.e. key = -price >= -limit */
    double bound = self->ask ? -limit : limit;
    double total = 0.0;
    for (Py_ssize_t i = self->n - 1; i >= 0 && self->k[i] >= bound; i--)
        total += price_at(self, i) * self->q[i];
    return PyFloat_FromDouble(total);
}

static PyObject *
Side_clear(SideObject *self, PyObject *Py_UNUSED(ignored))
{
    self->n = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
Side_len(SideObject *self)
{
    return self->n;
}

static int
Side_init(SideObject *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) > 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) > 0)) {
        PyErr_SetString(PyExc_TypeError, "a book side takes no arguments");
        return -1;
    }
    self->n = 0;
    return 0;
}

static void
Side_dealloc(SideObject *self)
{
    PyMem_Free(self->k);
    PyMem_Free(self->q);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject AsksType;

static PyObject *
Side_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    SideObject *self = (SideObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->k = NULL;
    self->q = NULL;
    self->n = self->cap = 0;
    self->ask = PyType_IsSubtype(type, &AsksType);
    return (PyObject *)self;
}

static PyMethodDef Side_methods[] = {
    {"update", (PyCFunction)Side_update, METH_O, "Set each (price, qty) level; qty 0 removes the level."},
    {"load", (PyCFunction)Side_load, METH_O, "Replace the side with a snapshot's levels (qty 0 is no level)."},
    {"best", (PyCFunction)Side_best, METH_NOARGS, "(price, qty) of the best level, or None when empty."},
    {"best_price", (PyCFunction)Side_best_price, METH_NOARGS, "The best price, or None when empty."},
    {"worst_price", (PyCFunction)Side_worst_price, METH_NOARGS, "The worst price held, or None when empty."},
    {"top", (PyCFunction)Side_top, METH_O, "The best n levels, best first."},
    {"volume", (PyCFunction)Side_volume, METH_O, "Sum of qty of the best n levels, summed best first."},
    {"notional_within", (PyCFunction)Side_notional_within, METH_O,
     "Sum of price*qty of the levels at or better than the limit price, summed best first."},
    {"clear", (PyCFunction)Side_clear, METH_NOARGS, "Remove every level."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Side_as_sequence = {
    .sq_length = (lenfunc)Side_len,
};

#define SIDE_TYPE(cname, pyname, doc)                                                                    \
    static PyTypeObject cname = {                                                                          \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapewatch._sides." pyname,                              \
        .tp_doc = PyDoc_STR(doc),                                                                          \
        .tp_basicsize = sizeof(SideObject),                                                                \
        .tp_flags = Py_TPFLAGS_DEFAULT,                                                                    \
        .tp_new = Side_new,                                                                                \
        .tp_init = (initproc)Side_init,                                                                    \
        .tp_dealloc = (destructor)Side_dealloc,                                                            \
        .tp_methods = Side_methods,                                                                        \
        .tp_as_sequence = &Side_as_sequence,                                                               \
    }

SIDE_TYPE(BidsType, "NativeBids", "The bid side of a book: best (highest) price first when read.");
SIDE_TYPE(AsksType, "NativeAsks", "The ask side of a book: best (lowest) price first when read.");

/* The native replay path for depth diffs and bookTickers (it applies diffs to these sides directly). */
#include "_native_lines.c"

static struct PyModuleDef sides_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tapewatch._sides",
    .m_doc = PyDoc_STR("Order book sides in contiguous memory (see tapewatch.book_sides)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__sides(void)
{
    PyTypeObject *types[] = {&BidsType, &AsksType, &FeederType, &BufferedType};
    if (lines_init_strings() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&sides_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        /* PyModule_AddType readies the type and adds a reference of its own */
        if (PyModule_AddType(m, types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
