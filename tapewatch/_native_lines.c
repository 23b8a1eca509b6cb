/* tapewatch._sides.LineFeeder: capture lines of depth diffs, bookTickers, aggTrades and klines applied to a Market
 * in C (the native replay path; tapewatch.native_lines drives it). Included by _sides.c: it applies diffs to the
 * native sides directly.
 *
 * It takes a line only when it knows the Python path would take the same common path, and decides that before it
 * changes anything: a well-formed websocket line of one of the four kinds (plain JSON, decimal strings, the
 * payload's symbol the stream's), a synced book whose last id the diff continues (or one waiting for the snapshot
 * it asked for, which keeps the diff: a BufferedDiff), an event time the market clock
 * takes without a jump, a ticker newer than the symbol's last, an aggTrade whose id is the next after the last
 * applied one (no gap held open) at a time the clock takes and not before the symbol's newest trade, a possible
 * kline bar of the stream's interval within the clock's tolerance for an existing series. Every other line
 * (snapshots, @trade fills, REST answers, anything unusual or malformed) is left to the Python path: feed()
 * returns its index. What it does to the state is what Market._on_depth / _on_book_ticker / _on_agg_trade /
 * _on_kline, OrderBook.apply, TopCheck.on_sides / on_ticker, TradeWindow.add and CandleSeries.update do on their
 * common path (a kline that closes or opens a bar goes to CandleSeries.update itself); the rare turns after a change (a top the
 * floor/ceiling check refuses, a ticker that disagrees with the book, a kline that left a candle hole) call back
 * into Python, which finishes them with the same code as live. tests/tapewatch/test_native_lines.py replays
 * every capture both ways and compares the whole market state.
 */
#include <structmember.h>

#define KIND_OTHER 0
#define KIND_DEPTH 1
#define KIND_TICKER 2
#define KIND_AGG 3
#define KIND_KLINE 4
#define MAX_NUMBER 40 /* longer decimal strings go the Python way */

#define ROUTE_KEY 72 /* bytes of a route's names kept in the route itself (longer ones: on the heap) */

typedef struct {
    int kind;           /* KIND_*: OTHER caches "never fast" */
    Py_ssize_t len, symlen, ilen; /* of the stream name, the symbol, the interval */
    char *heap;         /* the names when longer than ROUTE_KEY, else NULL */
    char key[ROUTE_KEY]; /* the stream name (key of the route table), then the symbol's and the interval's bytes:
                          * what a payload's "s" and "i" are compared with */
    PyObject *symbol;   /* str */
    PyObject *st;       /* SymbolState */
    PyObject *book;     /* OrderBook */
    PyObject *check;    /* TopCheck */
    SideObject *bids;
    SideObject *asks;
    PyObject *flow; /* KIND_AGG: the symbol's two TradeWindows */
    PyObject *vwap;
    PyObject *series;   /* KIND_KLINE: the symbol's CandleSeries of the stream's interval */
    PyObject *interval; /* str */
} Route;

/* A slot of the route table: the stream name's hash and the route's index (-1: empty). */
typedef struct {
    Py_hash_t hash;
    Py_ssize_t route;
} TableSlot;

static inline const char *
route_key(const Route *r)
{
    return r->heap ? r->heap : r->key;
}

typedef struct {
    PyObject_HEAD
    PyObject *market;
    PyObject *route_fn;      /* stream -> (kind, symbol, st, book, check, bids, asks) | None | False */
    PyObject *after_apply;   /* (st, line) after a diff whose new top the book must judge itself */
    PyObject *mismatch;      /* (st, update_id, ticker, top) a ticker that disagrees with the book */
    PyObject *drop_oldest;   /* topcheck._drop_oldest(dict, keep) */
    PyObject *after_kline;   /* (st, series, interval, event_time) after a kline that left a candle hole */
    PyObject *synced;        /* BookState.SYNCED */
    PyObject *waiting;       /* BookState.WAITING_SNAPSHOT: a diff is kept (BufferedDiff) for the snapshot */
    PyTypeObject *st_type, *book_type, *check_type, *window_type, *series_type, *candle_type;
    /* slot offsets */
    Py_ssize_t st_last_event_time, st_last_ticker_id, st_last_agg_id, st_fill, st_snapshot_pending;
    Py_ssize_t window_last_time, series_missing, series_forming, series_closed;
    /* TradeWindow's slots and FlowTrade's fields (TradeWindow.add in C) */
    Py_ssize_t window_trades, window_ms, window_large_size, window_large_buys, window_large_sells, window_last_price,
        window_qv, window_pq, window_q, window_expired;
    Py_ssize_t trade_time, trade_qty, trade_quote, trade_is_sell, trade_large;
    PyTypeObject *trade_type; /* FlowTrade */
    Py_ssize_t candle[13]; /* Candle's fields, in its order (open_time, close_time, interval, open, ...) */
    Py_ssize_t book_state, book_last_update_id, book_last_event_time, book_applied, book_floor, book_ceiling,
        book_buffer;
    Py_ssize_t check_keep, check_checks, check_tops, check_tickers;
    /* routes: an open-addressing table of indices into an array */
    Route *routes;
    Py_ssize_t nroutes, caproutes;
    TableSlot *table;
    Py_ssize_t tablecap;
    /* the levels of the diff being read: price, qty pairs; bids first, then asks */
    double *levels;
    Py_ssize_t levelcap;
    /* what was taken */
    long long taken;      /* lines applied entirely here */
    long long callbacks;  /* lines applied here and finished by a callback (their decode is counted there) */
    long long diffs, buffered, tickers, trades, klines;
} FeederObject;

/* --- slots ---------------------------------------------------------------------------------------------- */

static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, name);
        return -1;
    }
    PyMemberDef *def = ((PyMemberDescrObject *)descr)->d_member;
    if (def->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return def->offset;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Set a slot to a new reference (stolen). */
static inline void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

/* A slot holding a Python int, read as a long long; -1 with an error if unset or not one that fits. */
static int
slot_ll(PyObject *obj, Py_ssize_t off, long long *out)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL || !PyLong_CheckExact(v))
        return -1;
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

static int
slot_set_ll(PyObject *obj, Py_ssize_t off, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    slot_set(obj, off, v);
    return 0;
}

/* --- JSON scanning (only what the fast path takes; anything else fails and the line goes the Python way) --- */

typedef struct {
    const char *p, *end;
} Scan;

static inline void
ws(Scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static inline int
expect(Scan *s, char c)
{
    ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A string without escapes: its bytes in [*a, *a + *n). */
static inline int
string(Scan *s, const char **a, Py_ssize_t *n)
{
    if (!expect(s, '"'))
        return 0;
    const char *start = s->p;
    const char *q = memchr(start, '"', (size_t)(s->end - start));
    if (q == NULL || memchr(start, '\\', (size_t)(q - start)) != NULL)
        return 0;
    *a = start;
    *n = q - start;
    s->p = q + 1;
    return 1;
}

/* A JSON integer, 0 or positive, at most 18 digits, no leading zero, not the start of a float. */
static inline int
integer(Scan *s, long long *out)
{
    ws(s);
    const char *p = s->p;
    long long v = 0;
    int digits = 0;
    while (p < s->end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        p++;
        if (++digits > 18)
            return 0;
    }
    if (digits == 0 || (digits > 1 && *s->p == '0'))
        return 0;
    if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E' || *p == '-' || *p == '+'))
        return 0;
    s->p = p;
    *out = v;
    return 1;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A decimal in a JSON string, "digits" or "digits.digits" (no sign, no exponent, no leading zero before
 * more digits), as the nearest double: exactly Python's float() of it (Clinger's fast path when the digits
 * fit in 53 bits and the scale in 10^22, else the interpreter's own conversion). */
static inline int
decimal(Scan *s, double *out)
{
    if (!expect(s, '"'))
        return 0;
    const char *start = s->p, *p = s->p;
    unsigned long long m = 0;
    int digits = 0, scale = 0, big = 0;
    while (p < s->end && *p >= '0' && *p <= '9') {
        if (m < (1ULL << 53) / 10 - 1)
            m = m * 10 + (unsigned long long)(*p - '0');
        else
            big = 1;
        digits++;
        p++;
    }
    if (digits == 0 || (digits > 1 && *start == '0'))
        return 0;
    if (p < s->end && *p == '.') {
        p++;
        int frac = 0;
        while (p < s->end && *p >= '0' && *p <= '9') {
            if (m < (1ULL << 53) / 10 - 1)
                m = m * 10 + (unsigned long long)(*p - '0');
            else
                big = 1;
            frac++;
            p++;
        }
        if (frac == 0)
            return 0;
        scale = frac;
    }
    if (p >= s->end || *p != '"' || p - start > MAX_NUMBER)
        return 0;
    if (!big && scale <= 22) {
        *out = (double)m / POW10[scale];
    }
    else {
        char buf[MAX_NUMBER + 1];
        memcpy(buf, start, (size_t)(p - start));
        buf[p - start] = '\0';
        double v = PyOS_string_to_double(buf, NULL, NULL);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = v;
    }
    s->p = p + 1;
    return 1;
}

/* Skip one JSON value (an unknown key's), checking its grammar as a JSON parser would: a line that is not JSON
 * goes the Python way, which counts it. Strings: ASCII without control characters, escapes allowed. */
static int skip_value(Scan *s, int depth);

static int
skip_string(Scan *s)
{
    if (!expect(s, '"'))
        return 0;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p++;
        if (c == '"')
            return 1;
        if (c < 0x20 || c >= 0x80)
            return 0;
        if (c == '\\') {
            if (s->p >= s->end || !strchr("\"\\/bfnrtu", *s->p))
                return 0;
            s->p++;
        }
    }
    return 0;
}

static int
skip_number(Scan *s)
{
    const char *p = s->p, *e = s->end;
    if (p < e && *p == '-')
        p++;
    if (p >= e || *p < '0' || *p > '9')
        return 0;
    if (*p == '0')
        p++;
    else
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return 0;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return 0;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return 1;
}

static int
skip_literal(Scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

static int
skip_value(Scan *s, int depth)
{
    ws(s);
    if (s->p >= s->end || depth > 32)
        return 0;
    char c = *s->p;
    if (c == '"')
        return skip_string(s);
    if (c == '{') {
        s->p++;
        if (expect(s, '}'))
            return 1;
        do {
            if (!skip_string(s) || !expect(s, ':') || !skip_value(s, depth + 1))
                return 0;
        } while (expect(s, ','));
        return expect(s, '}');
    }
    if (c == '[') {
        s->p++;
        if (expect(s, ']'))
            return 1;
        do {
            if (!skip_value(s, depth + 1))
                return 0;
        } while (expect(s, ','));
        return expect(s, ']');
    }
    if (c == 't')
        return skip_literal(s, "true");
    if (c == 'f')
        return skip_literal(s, "false");
    if (c == 'n')
        return skip_literal(s, "null");
    return skip_number(s);
}

static inline int
key_is(const char *a, Py_ssize_t n, const char *name)
{
    /* the first byte before memcmp: most keys are one or two bytes, compared with several names each */
    return (Py_ssize_t)strlen(name) == n && (n == 0 || (a[0] == name[0] && memcmp(a, name, (size_t)n) == 0));
}

/* --- the routes ----------------------------------------------------------------------------------------- */

/* A stream name's hash, eight bytes at a time (a name is read for every line). */
static Py_hash_t
hash_bytes(const char *a, Py_ssize_t n)
{
    unsigned long long h = 0x9E3779B97F4A7C15ULL ^ (unsigned long long)n, w;
    for (; n >= 8; a += 8, n -= 8) {
        memcpy(&w, a, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, a, (size_t)n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    return (Py_hash_t)(h >> 1);
}

static void
table_put(TableSlot *table, Py_ssize_t cap, Py_hash_t hash, Py_ssize_t route)
{
    Py_ssize_t i = hash & (cap - 1);
    while (table[i].route >= 0)
        i = (i + 1) & (cap - 1);
    table[i].hash = hash;
    table[i].route = route;
}

static int
table_grow(FeederObject *self)
{
    Py_ssize_t cap = self->tablecap ? self->tablecap * 2 : 1024;
    TableSlot *table = PyMem_New(TableSlot, (size_t)cap);
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < cap; i++)
        table[i].route = -1;
    for (Py_ssize_t t = 0; t < self->tablecap; t++) {
        if (self->table[t].route >= 0)
            table_put(table, cap, self->table[t].hash, self->table[t].route);
    }
    PyMem_Free(self->table);
    self->table = table;
    self->tablecap = cap;
    return 0;
}

/* Release what a route holds (its references and its names on the heap). */
static void
route_clear(Route *route)
{
    PyMem_Free(route->heap);
    route->heap = NULL;
    Py_CLEAR(route->symbol);
    Py_CLEAR(route->st);
    Py_CLEAR(route->book);
    Py_CLEAR(route->check);
    Py_CLEAR(route->bids);
    Py_CLEAR(route->asks);
    Py_CLEAR(route->flow);
    Py_CLEAR(route->vwap);
    Py_CLEAR(route->series);
    Py_CLEAR(route->interval);
}

/* The route of a stream, asked of Python the first time; NULL with no error: not now (no state yet). */
static Route *
route_of(FeederObject *self, const char *a, Py_ssize_t n)
{
    Py_hash_t h = hash_bytes(a, n);
    if (self->tablecap) {
        Py_ssize_t i = h & (self->tablecap - 1);
        const TableSlot *slot;
        while ((slot = &self->table[i])->route >= 0) {
            if (slot->hash == h) {
                Route *route = &self->routes[slot->route];
                if (route->len == n && memcmp(route_key(route), a, (size_t)n) == 0)
                    return route;
            }
            i = (i + 1) & (self->tablecap - 1);
        }
    }
    PyObject *name = PyUnicode_DecodeUTF8(a, n, NULL);
    if (name == NULL) { /* not UTF-8: the Python way counts the line */
        PyErr_Clear();
        return NULL;
    }
    PyObject *answer = PyObject_CallOneArg(self->route_fn, name);
    Py_DECREF(name);
    if (answer == NULL)
        return NULL;
    if (answer == Py_False) {
        Py_DECREF(answer);
        return NULL;
    }
    Route route = {0};
    route.kind = KIND_OTHER;
    if (answer != Py_None) {
        long kind;
        PyObject *symbol, *st, *book, *check, *bids, *asks;
        if (!PyArg_ParseTuple(answer, "lUOOOOO", &kind, &symbol, &st, &book, &check, &bids, &asks)) {
            Py_DECREF(answer);
            return NULL;
        }
        if (kind == KIND_KLINE && Py_IS_TYPE(st, self->st_type) && Py_IS_TYPE(book, self->series_type) &&
            PyUnicode_CheckExact(check)) { /* (4, symbol, st, series, interval, None, None) */
            route.kind = KIND_KLINE;
            route.symbol = Py_NewRef(symbol);
            route.st = Py_NewRef(st);
            route.series = Py_NewRef(book);
            route.interval = Py_NewRef(check);
        }
        else if (kind == KIND_AGG && Py_IS_TYPE(st, self->st_type) && Py_IS_TYPE(bids, self->window_type) &&
            Py_IS_TYPE(asks, self->window_type)) { /* (3, symbol, st, book, check, flow, vwap) */
            route.kind = KIND_AGG;
            route.symbol = Py_NewRef(symbol);
            route.st = Py_NewRef(st);
            route.flow = Py_NewRef(bids);
            route.vwap = Py_NewRef(asks);
        }
        else if ((kind == KIND_DEPTH || kind == KIND_TICKER) && Py_IS_TYPE(st, self->st_type) &&
                 Py_IS_TYPE(book, self->book_type) && Py_IS_TYPE(check, self->check_type) &&
                 Py_IS_TYPE(bids, &BidsType) && Py_IS_TYPE(asks, &AsksType)) {
            route.kind = (int)kind;
            route.symbol = Py_NewRef(symbol);
            route.st = Py_NewRef(st);
            route.book = Py_NewRef(book);
            route.check = Py_NewRef(check);
            route.bids = (SideObject *)Py_NewRef(bids);
            route.asks = (SideObject *)Py_NewRef(asks);
        }
    }
    Py_DECREF(answer);
    if (self->nroutes == self->caproutes) {
        Py_ssize_t cap = self->caproutes ? self->caproutes * 2 : 256;
        Route *routes = self->routes;
        PyMem_Resize(routes, Route, (size_t)cap);
        if (routes == NULL) {
            PyErr_NoMemory();
            route_clear(&route);
            return NULL;
        }
        self->routes = routes;
        self->caproutes = cap;
    }
    Py_ssize_t symlen = 0, ilen = 0;
    const char *sym = NULL, *ival = NULL;
    if ((route.symbol != NULL && (sym = PyUnicode_AsUTF8AndSize(route.symbol, &symlen)) == NULL) ||
        (route.interval != NULL && (ival = PyUnicode_AsUTF8AndSize(route.interval, &ilen)) == NULL)) {
        route_clear(&route);
        return NULL;
    }
    char *key = route.key;
    if (n + symlen + ilen > ROUTE_KEY) {
        if ((key = route.heap = PyMem_Malloc((size_t)(n + symlen + ilen))) == NULL) {
            PyErr_NoMemory();
            route_clear(&route);
            return NULL;
        }
    }
    memcpy(key, a, (size_t)n);
    if (symlen)
        memcpy(key + n, sym, (size_t)symlen);
    if (ilen)
        memcpy(key + n + symlen, ival, (size_t)ilen);
    route.symlen = symlen;
    route.ilen = ilen;
    route.len = n;
    self->routes[self->nroutes++] = route;
    if (2 * self->nroutes > self->tablecap && table_grow(self) < 0)
        return NULL;
    table_put(self->table, self->tablecap, h, self->nroutes - 1);
    return &self->routes[self->nroutes - 1];
}

/* --- payloads ------------------------------------------------------------------------------------------- */

typedef struct {
    long long E, T, U, u, pu;
    const char *sym;
    Py_ssize_t symlen;
    Py_ssize_t nbids, nasks; /* levels in FeederObject.levels: bids, then asks */
} Diff;

typedef struct {
    long long u;
    double b, B, a, A;
    const char *sym;
    Py_ssize_t symlen;
} Ticker;

typedef struct {
    long long a, T;
    double p, q;
    int m;
    const char *sym;
    Py_ssize_t symlen;
} Agg;

typedef struct {
    long long E, t, T, n;
    double o, c, h, l, v, q, V, Q;
    int x;
    const char *sym, *i;
    Py_ssize_t symlen, ilen;
} Kl;

/* A price (tapewatch.events.Price: 0 < p < 1e15) or a quantity (Qty: 0 <= q < 1e18) */
static inline int
price(Scan *s, double *out)
{
    return decimal(s, out) && *out > 0.0 && *out < 1e15;
}

static inline int
qty(Scan *s, double *out)
{
    return decimal(s, out) && *out < 1e18;
}

/* true or false */
static inline int
boolean(Scan *s, int *out)
{
    if (s->p < s->end && *s->p == 't' && skip_literal(s, "true")) {
        *out = 1;
        return 1;
    }
    if (s->p < s->end && *s->p == 'f' && skip_literal(s, "false")) {
        *out = 0;
        return 1;
    }
    return 0;
}

static int
push_level(FeederObject *self, Py_ssize_t at, double p, double q)
{
    if (2 * (at + 1) > self->levelcap) {
        Py_ssize_t cap = self->levelcap ? self->levelcap * 2 : 256;
        double *levels = self->levels;
        PyMem_Resize(levels, double, (size_t)cap);
        if (levels == NULL)
            return 0;
        self->levels = levels;
        self->levelcap = cap;
    }
    self->levels[2 * at] = p;
    self->levels[2 * at + 1] = q;
    return 1;
}

/* [["price","qty"],...]: a price and a quantity each (tapewatch.events.Price / Qty), appended. */
static int
levels(FeederObject *self, Scan *s, Py_ssize_t *count, Py_ssize_t offset)
{
    if (!expect(s, '['))
        return 0;
    Py_ssize_t n = 0;
    if (expect(s, ']')) {
        *count = 0;
        return 1;
    }
    for (;;) {
        double p, q;
        if (!expect(s, '[') || !price(s, &p) || !expect(s, ',') || !qty(s, &q) || !expect(s, ']'))
            return 0;
        if (!push_level(self, offset + n, p, q))
            return 0;
        n++;
        if (expect(s, ']'))
            break;
        if (!expect(s, ','))
            return 0;
    }
    *count = n;
    return 1;
}

/* A field reader of an object's key k: 1 read, 0 the line refused, -1 not a key it reads (skipped). */
typedef int (*Field)(Scan *s, const char *k, Py_ssize_t kn, void *out, unsigned *seen);

#define SEEN(bit)                                                                                          \
    do {                                                                                                   \
        if (*seen & (bit))                                                                                 \
            return 0;                                                                                      \
        *seen |= (bit);                                                                                    \
    } while (0)

/* A JSON object (not {}) whose keys ``field`` reads; the bits of the keys read are or-ed into *seen. */
static int
object(Scan *s, Field field, void *out, unsigned *seen)
{
    if (!expect(s, '{') || expect(s, '}'))
        return 0;
    for (;;) {
        const char *k;
        Py_ssize_t kn;
        if (!string(s, &k, &kn) || !expect(s, ':'))
            return 0;
        int rc = field(s, k, kn, out, seen);
        if (rc == 0 || (rc < 0 && !skip_value(s, 0)))
            return 0;
        if (expect(s, '}'))
            return 1;
        if (!expect(s, ','))
            return 0;
    }
}

/* "e": the payload's event name, which must be ``want`` (stricter than msgspec, which ignores it) */
static int
event_is(Scan *s, const char *want)
{
    const char *e;
    Py_ssize_t en;
    return string(s, &e, &en) && key_is(e, en, want);
}

typedef struct {
    FeederObject *self;
    Diff *d;
    Py_ssize_t nb, na;
} DiffRead;

static int
diff_field(Scan *s, const char *k, Py_ssize_t kn, void *out, unsigned *seen)
{
    DiffRead *r = out;
    Diff *d = r->d;
    if (key_is(k, kn, "e")) {
        SEEN(1);
        return event_is(s, "depthUpdate");
    }
    if (key_is(k, kn, "E")) {
        SEEN(2);
        return integer(s, &d->E);
    }
    if (key_is(k, kn, "T")) {
        SEEN(4);
        return integer(s, &d->T);
    }
    if (key_is(k, kn, "s")) {
        SEEN(8);
        return string(s, &d->sym, &d->symlen);
    }
    if (key_is(k, kn, "U")) {
        SEEN(16);
        return integer(s, &d->U);
    }
    if (key_is(k, kn, "u")) {
        SEEN(32);
        return integer(s, &d->u);
    }
    if (key_is(k, kn, "pu")) {
        SEEN(64);
        return integer(s, &d->pu);
    }
    if (key_is(k, kn, "b")) {
        SEEN(128);
        return levels(r->self, s, &r->nb, 0);
    }
    if (key_is(k, kn, "a")) {
        /* the bids must be read before the asks to share the buffer: asks first go the Python way */
        if (!(*seen & 128))
            return 0;
        SEEN(256);
        return levels(r->self, s, &r->na, r->nb);
    }
    return -1;
}

static int
parse_diff(FeederObject *self, Scan *s, Diff *d)
{
    DiffRead r = {self, d, 0, 0};
    unsigned seen = 0;
    if (!object(s, diff_field, &r, &seen))
        return 0;
    d->nbids = r.nb;
    d->nasks = r.na;
    return seen == 511;
}

static int
ticker_field(Scan *s, const char *k, Py_ssize_t kn, void *out, unsigned *seen)
{
    Ticker *t = out;
    long long ignored;
    if (key_is(k, kn, "e")) {
        SEEN(1);
        return event_is(s, "bookTicker");
    }
    if (key_is(k, kn, "u")) {
        SEEN(2);
        return integer(s, &t->u);
    }
    if (key_is(k, kn, "s")) {
        SEEN(4);
        return string(s, &t->sym, &t->symlen);
    }
    if (key_is(k, kn, "b")) {
        SEEN(8);
        return price(s, &t->b);
    }
    if (key_is(k, kn, "B")) {
        SEEN(16);
        return qty(s, &t->B);
    }
    if (key_is(k, kn, "a")) {
        SEEN(32);
        return price(s, &t->a);
    }
    if (key_is(k, kn, "A")) {
        SEEN(64);
        return qty(s, &t->A);
    }
    if (key_is(k, kn, "E")) {
        SEEN(128);
        return integer(s, &ignored);
    }
    if (key_is(k, kn, "T")) {
        SEEN(256);
        return integer(s, &ignored);
    }
    return -1;
}

static int
parse_ticker(Scan *s, Ticker *t)
{
    unsigned seen = 0;
    return object(s, ticker_field, t, &seen) && (seen & 127) == 127;
}

static int
agg_field(Scan *s, const char *k, Py_ssize_t kn, void *out, unsigned *seen)
{
    Agg *t = out;
    long long ignored;
    if (key_is(k, kn, "e")) {
        SEEN(1);
        return event_is(s, "aggTrade");
    }
    if (key_is(k, kn, "E")) {
        SEEN(2);
        return integer(s, &ignored);
    }
    if (key_is(k, kn, "a")) {
        SEEN(4);
        return integer(s, &t->a);
    }
    if (key_is(k, kn, "s")) {
        SEEN(8);
        return string(s, &t->sym, &t->symlen);
    }
    if (key_is(k, kn, "p")) {
        SEEN(16);
        return price(s, &t->p);
    }
    if (key_is(k, kn, "q")) {
        SEEN(32);
        return qty(s, &t->q) && t->q > 0.0; /* AggTrade.qty: > 0, not >= 0 */
    }
    if (key_is(k, kn, "f")) {
        SEEN(64);
        return integer(s, &ignored);
    }
    if (key_is(k, kn, "l")) {
        SEEN(128);
        return integer(s, &ignored);
    }
    if (key_is(k, kn, "T")) {
        SEEN(256);
        return integer(s, &t->T);
    }
    if (key_is(k, kn, "m")) {
        SEEN(512);
        return boolean(s, &t->m);
    }
    return -1;
}

/* An aggTrade payload (tapewatch.events.AggTrade: every field given, 0 < p < 1e15, 0 < q < 1e18). */
static int
parse_agg(Scan *s, Agg *t)
{
    unsigned seen = 0;
    return object(s, agg_field, t, &seen) && seen == 1023;
}

static int
candle_field(Scan *s, const char *key, Py_ssize_t kn, void *out, unsigned *seen)
{
    Kl *k = out;
    if (key_is(key, kn, "t")) {
        SEEN(1);
        return integer(s, &k->t);
    }
    if (key_is(key, kn, "T")) {
        SEEN(2);
        return integer(s, &k->T);
    }
    if (key_is(key, kn, "i")) {
        SEEN(4);
        return string(s, &k->i, &k->ilen);
    }
    if (key_is(key, kn, "o")) {
        SEEN(8);
        return price(s, &k->o);
    }
    if (key_is(key, kn, "c")) {
        SEEN(16);
        return price(s, &k->c);
    }
    if (key_is(key, kn, "h")) {
        SEEN(32);
        return price(s, &k->h);
    }
    if (key_is(key, kn, "l")) {
        SEEN(64);
        return price(s, &k->l);
    }
    if (key_is(key, kn, "v")) {
        SEEN(128);
        return qty(s, &k->v);
    }
    if (key_is(key, kn, "n")) {
        SEEN(256);
        return integer(s, &k->n);
    }
    if (key_is(key, kn, "x")) {
        SEEN(512);
        return boolean(s, &k->x);
    }
    if (key_is(key, kn, "q")) {
        SEEN(1024);
        return qty(s, &k->q);
    }
    if (key_is(key, kn, "V")) {
        SEEN(2048);
        return qty(s, &k->V);
    }
    if (key_is(key, kn, "Q")) {
        SEEN(4096);
        return qty(s, &k->Q);
    }
    return -1;
}

/* The "k" object of a kline (tapewatch.events.Candle: V and Q may be absent, 0 then), a possible candle
 * (check_ohlc: low <= open, close <= high). */
static int
parse_candle(Scan *s, Kl *k)
{
    unsigned seen = 0;
    k->V = k->Q = 0.0;
    if (!object(s, candle_field, k, &seen) || (seen & 2047) != 2047)
        return 0;
    return k->l <= k->h && k->l <= k->o && k->o <= k->h && k->l <= k->c && k->c <= k->h;
}

static int
kline_field(Scan *s, const char *key, Py_ssize_t kn, void *out, unsigned *seen)
{
    Kl *k = out;
    if (key_is(key, kn, "e")) {
        SEEN(1);
        return event_is(s, "kline");
    }
    if (key_is(key, kn, "E")) {
        SEEN(2);
        return integer(s, &k->E);
    }
    if (key_is(key, kn, "s")) {
        SEEN(4);
        return string(s, &k->sym, &k->symlen);
    }
    if (key_is(key, kn, "k")) {
        SEEN(8);
        return parse_candle(s, k);
    }
    return -1;
}

/* A kline payload (tapewatch.events.Kline). */
static int
parse_kline(Scan *s, Kl *k)
{
    unsigned seen = 0;
    return object(s, kline_field, k, &seen) && seen == 15;
}

/* --- the market clock (Market.now_ms / ahead_ms, read as feed starts, written back before Python runs) ----- */

typedef struct {
    long long now, ahead, tolerance;
    int dirty;
} Clock;

static PyObject *s_now_ms, *s_ahead_ms, *s_tolerance;

static int
attr_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
clock_read(FeederObject *self, Clock *c)
{
    c->dirty = 0;
    if (attr_ll(self->market, s_now_ms, &c->now) < 0 || attr_ll(self->market, s_ahead_ms, &c->ahead) < 0 ||
        attr_ll(self->market, s_tolerance, &c->tolerance) < 0)
        return -1;
    return 0;
}

static int
set_attr_ll(PyObject *obj, PyObject *name, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

static int
clock_write(FeederObject *self, Clock *c)
{
    if (!c->dirty)
        return 0;
    c->dirty = 0;
    if (set_attr_ll(self->market, s_now_ms, c->now) < 0 || set_attr_ll(self->market, s_ahead_ms, c->ahead) < 0)
        return -1;
    return 0;
}

/* A diff's event time that would make the clock jump (MarketDepth._on_depth leaves it to _diff_ahead). */
static inline int
clock_jumps(const Clock *c, long long t)
{
    return t > c->now && t > c->ahead;
}

/* MarketDepth._on_depth's common path: a later event time moves the clock. */
static inline void
clock_advance(Clock *c, long long t)
{
    if (t > c->now) {
        c->now = t;
        c->ahead = t + c->tolerance;
        c->dirty = 1;
    }
}

/* --- diffs kept for a snapshot ----------------------------------------------------------------------------- */

/* tapewatch._sides.BufferedDiff: a depth diff the feeder kept in a book's buffer while the book waits for its
 * snapshot (tapewatch.book_types.Diff: what OrderBook reads of a DepthUpdate, with the same values). One object
 * holding the levels as doubles: a cold start buffers ~10 s of every symbol's diffs and drops most of them at the
 * snapshot, so each costs one allocation and one free; the level lists are built when the book applies it. */
typedef struct {
    PyObject_VAR_HEAD       /* ob_size: the doubles in v (price, qty pairs: the bids, then the asks) */
    PyObject *symbol;       /* str */
    long long E, T, U, u, pu;
    Py_ssize_t nbids;
    double v[1];
} BufferedObject;

static PyObject *
buffered_levels(BufferedObject *self, Py_ssize_t from, Py_ssize_t to)
{
    PyObject *list = PyList_New(to - from);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = from; i < to; i++) {
        PyObject *level = Py_BuildValue("(dd)", self->v[2 * i], self->v[2 * i + 1]);
        if (level == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i - from, level);
    }
    return list;
}

static PyObject *
Buffered_bids(BufferedObject *self, void *Py_UNUSED(closure))
{
    return buffered_levels(self, 0, self->nbids);
}

static PyObject *
Buffered_asks(BufferedObject *self, void *Py_UNUSED(closure))
{
    return buffered_levels(self, self->nbids, Py_SIZE(self) / 2);
}

static PyObject *
Buffered_repr(BufferedObject *self)
{
    return PyUnicode_FromFormat("BufferedDiff(symbol=%R, U=%lld, u=%lld, pu=%lld, E=%lld, levels=%zd+%zd)",
                                self->symbol, self->U, self->u, self->pu, self->E, self->nbids,
                                Py_SIZE(self) / 2 - self->nbids);
}

static void
Buffered_dealloc(BufferedObject *self)
{
    Py_XDECREF(self->symbol);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Buffered_members[] = {
    {"symbol", T_OBJECT_EX, offsetof(BufferedObject, symbol), READONLY, NULL},
    {"event_time", T_LONGLONG, offsetof(BufferedObject, E), READONLY, NULL},
    {"transaction_time", T_LONGLONG, offsetof(BufferedObject, T), READONLY, NULL},
    {"first_id", T_LONGLONG, offsetof(BufferedObject, U), READONLY, NULL},
    {"final_id", T_LONGLONG, offsetof(BufferedObject, u), READONLY, NULL},
    {"prev_final_id", T_LONGLONG, offsetof(BufferedObject, pu), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Buffered_getset[] = {
    {"bids", (getter)Buffered_bids, NULL, "The bid levels, (price, qty) each, as the diff listed them.", NULL},
    {"asks", (getter)Buffered_asks, NULL, "The ask levels, (price, qty) each, as the diff listed them.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BufferedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapewatch._sides.BufferedDiff",
    .tp_doc = PyDoc_STR("A depth diff kept by the native replay path for a book waiting for its snapshot."),
    .tp_basicsize = offsetof(BufferedObject, v),
    .tp_itemsize = sizeof(double),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Buffered_dealloc,
    .tp_repr = (reprfunc)Buffered_repr,
    .tp_members = Buffered_members,
    .tp_getset = Buffered_getset,
};

static PyObject *
buffered_new(PyObject *symbol, const Diff *d, const double *levels)
{
    Py_ssize_t n = 2 * (d->nbids + d->nasks);
    BufferedObject *b = PyObject_NewVar(BufferedObject, &BufferedType, n);
    if (b == NULL)
        return NULL;
    b->symbol = Py_NewRef(symbol);
    b->E = d->E;
    b->T = d->T;
    b->U = d->U;
    b->u = d->u;
    b->pu = d->pu;
    b->nbids = d->nbids;
    if (n)
        memcpy(b->v, levels, (size_t)n * sizeof(double));
    return (PyObject *)b;
}

/* --- applying ------------------------------------------------------------------------------------------- */

#define TAKEN 1
#define SLOW 0
#define FAILED -1

/* A kept quote: (bid price, bid qty, ask price, ask qty[, symbol]). It holds only floats and a str, so it can be
 * in no reference cycle: untracked at once, as the collector would untrack it at its first pass (a replay keeps
 * ~1,000 per symbol, and each collection would walk them). */
static PyObject *
quote(double bp, double bq, double ap, double aq, PyObject *symbol)
{
    PyObject *t =
        symbol ? Py_BuildValue("(ddddO)", bp, bq, ap, aq, symbol) : Py_BuildValue("(dddd)", bp, bq, ap, aq);
    if (t != NULL && PyObject_GC_IsTracked(t))
        PyObject_GC_UnTrack(t);
    return t;
}

/* Keep ``value`` under ``key`` in a TopCheck dict, trimmed to the newest ``keep`` past twice that. */
static int
keep_entry(FeederObject *self, PyObject *check, Py_ssize_t dict_off, PyObject *key, PyObject *value)
{
    PyObject *dict = SLOT(check, dict_off);
    if (dict == NULL || !PyDict_CheckExact(dict)) {
        PyErr_SetString(PyExc_TypeError, "TopCheck dicts are not dicts");
        return -1;
    }
    if (PyDict_SetItem(dict, key, value) < 0)
        return -1;
    long long keep;
    if (slot_ll(check, self->check_keep, &keep) < 0) {
        PyErr_SetString(PyExc_TypeError, "TopCheck.keep is not an int");
        return -1;
    }
    if (PyDict_GET_SIZE(dict) > 2 * keep) {
        PyObject *r = PyObject_CallFunctionObjArgs(self->drop_oldest, dict, SLOT(check, self->check_keep), NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* dict.pop(key) into *found (a new reference, NULL when absent); -1 on error. */
static int
dict_pop(PyObject *dict, PyObject *key, PyObject **found)
{
    PyObject *v = PyDict_GetItemWithError(dict, key);
    if (v == NULL) {
        *found = NULL;
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(v);
    if (PyDict_DelItem(dict, key) < 0) {
        Py_DECREF(v);
        return -1;
    }
    *found = v;
    return 0;
}

static int
count_check(FeederObject *self, PyObject *check)
{
    long long checks;
    if (slot_ll(check, self->check_checks, &checks) < 0) {
        PyErr_SetString(PyExc_TypeError, "TopCheck.checks is not an int");
        return -1;
    }
    return slot_set_ll(check, self->check_checks, checks + 1);
}

/* The four numbers of a kept quote (a tuple of floats). */
static int
quote_numbers(PyObject *t, double out[4])
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) < 4) {
        PyErr_SetString(PyExc_TypeError, "a kept quote is not a tuple");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        out[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(t, i));
        if (out[i] == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int
call_mismatch(FeederObject *self, Clock *c, Route *r, PyObject *key, PyObject *ticker, PyObject *top)
{
    if (clock_write(self, c) < 0)
        return -1;
    PyObject *res = PyObject_CallFunctionObjArgs(self->mismatch, r->st, key, ticker, top, NULL);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return clock_read(self, c);
}

static PyObject *s_append;

/* MarketDepth._on_depth for a book waiting for the snapshot it asked for (a cold start, a resync): the clock takes
 * the time as for any diff, and OrderBook.apply keeps the diff in the book's buffer (a BufferedDiff). */
static int
buffer_diff(FeederObject *self, Clock *c, Route *r, Diff *d)
{
    PyObject *book = r->book, *st = r->st;
    long long t = d->E;
    if (clock_jumps(c, t))
        return SLOW;
    if (SLOT(st, self->st_snapshot_pending) != Py_True) /* none asked for: the Python way asks */
        return SLOW;
    PyObject *buffer = SLOT(book, self->book_buffer);
    if (buffer == NULL)
        return SLOW;
    PyObject *kept = buffered_new(r->symbol, d, self->levels);
    if (kept == NULL)
        return FAILED;
    clock_advance(c, t);
    if (slot_set_ll(st, self->st_last_event_time, t) < 0) {
        Py_DECREF(kept);
        return FAILED;
    }
    PyObject *res = PyObject_CallMethodOneArg(buffer, s_append, kept);
    Py_DECREF(kept);
    if (res == NULL)
        return FAILED;
    Py_DECREF(res);
    self->buffered++;
    return TAKEN;
}

static int
apply_diff(FeederObject *self, Clock *c, Route *r, Diff *d, PyObject *line)
{
    PyObject *book = r->book, *st = r->st;
    if (SLOT(book, self->book_state) == self->waiting)
        return buffer_diff(self, c, r, d);
    /* decide first: the clock takes the time without a jump, the book is synced and this diff continues it */
    long long t = d->E;
    if (clock_jumps(c, t))
        return SLOW;
    if (SLOT(book, self->book_state) != self->synced)
        return SLOW;
    long long last;
    if (slot_ll(book, self->book_last_update_id, &last) < 0)
        return SLOW;
    if (d->u <= last || d->pu != last)
        return SLOW;
    PyObject *floor_o = SLOT(book, self->book_floor), *ceil_o = SLOT(book, self->book_ceiling);
    if (floor_o == NULL || ceil_o == NULL || !PyFloat_CheckExact(floor_o) || !PyFloat_CheckExact(ceil_o))
        return SLOW;
    long long applied;
    if (slot_ll(book, self->book_applied, &applied) < 0)
        return SLOW;
    clock_advance(c, t); /* MarketDepth._on_depth */
    PyObject *time_o = PyLong_FromLongLong(t);
    if (time_o == NULL)
        return FAILED;
    slot_set(st, self->st_last_event_time, Py_NewRef(time_o));
    /* OrderBook.apply, synced */
    SideObject *bids = r->bids, *asks = r->asks;
    const double *lv = self->levels;
    for (Py_ssize_t i = 0; i < d->nbids; i++) {
        if (set_level(bids, lv[2 * i], lv[2 * i + 1], 0) < 0) {
            Py_DECREF(time_o);
            return FAILED;
        }
    }
    for (Py_ssize_t i = d->nbids; i < d->nbids + d->nasks; i++) {
        if (set_level(asks, -lv[2 * i], lv[2 * i + 1], 0) < 0) {
            Py_DECREF(time_o);
            return FAILED;
        }
    }
    PyObject *key = PyLong_FromLongLong(d->u);
    if (key == NULL) {
        Py_DECREF(time_o);
        return FAILED;
    }
    slot_set(book, self->book_last_update_id, Py_NewRef(key));
    slot_set(book, self->book_last_event_time, time_o);
    if (slot_set_ll(book, self->book_applied, applied + 1) < 0) {
        Py_DECREF(key);
        return FAILED;
    }
    self->diffs++;
    int ok = bids->n > 0 && asks->n > 0;
    double bp = 0, bq = 0, ap = 0, aq = 0;
    if (ok) {
        bp = bids->k[bids->n - 1];
        bq = bids->q[bids->n - 1];
        ap = -asks->k[asks->n - 1];
        aq = asks->q[asks->n - 1];
        ok = PyFloat_AS_DOUBLE(floor_o) <= bp && bp < ap && ap <= PyFloat_AS_DOUBLE(ceil_o);
    }
    if (!ok) { /* OrderBook._check_top and what follows: Python */
        Py_DECREF(key);
        if (clock_write(self, c) < 0)
            return FAILED;
        PyObject *res = PyObject_CallFunctionObjArgs(self->after_apply, st, line, NULL);
        if (res == NULL)
            return FAILED;
        Py_DECREF(res);
        self->callbacks++;
        return clock_read(self, c) < 0 ? FAILED : TAKEN + 1;
    }
    /* TopCheck.on_sides */
    PyObject *check = r->check;
    PyObject *tickers = SLOT(check, self->check_tickers);
    if (tickers == NULL || !PyDict_CheckExact(tickers)) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_TypeError, "TopCheck._tickers is not a dict");
        return FAILED;
    }
    int rc = 0;
    if (PyDict_GET_SIZE(tickers)) {
        PyObject *held;
        if (dict_pop(tickers, key, &held) < 0) {
            Py_DECREF(key);
            return FAILED;
        }
        if (held != NULL) {
            double h[4];
            if (quote_numbers(held, h) < 0)
                rc = -1;
            else if (h[0] == bp && h[1] == bq && h[2] == ap && h[3] == aq)
                rc = count_check(self, check);
            else {
                PyObject *top = quote(bp, bq, ap, aq, NULL);
                rc = top == NULL ? -1 : call_mismatch(self, c, r, key, held, top);
                Py_XDECREF(top);
            }
            Py_DECREF(held);
            Py_DECREF(key);
            return rc < 0 ? FAILED : TAKEN;
        }
    }
    PyObject *top = quote(bp, bq, ap, aq, NULL);
    rc = top == NULL ? -1 : keep_entry(self, check, self->check_tops, key, top);
    Py_XDECREF(top);
    Py_DECREF(key);
    return rc < 0 ? FAILED : TAKEN;
}

static int
apply_ticker(FeederObject *self, Clock *c, Route *r, Ticker *t)
{
    PyObject *st = r->st, *check = r->check;
    long long last;
    if (slot_ll(st, self->st_last_ticker_id, &last) < 0 || t->u <= last)
        return SLOW; /* out of order (or a bogus last id): MarketDepth._on_book_ticker decides */
    PyObject *tops = SLOT(check, self->check_tops);
    if (tops == NULL || !PyDict_CheckExact(tops))
        return SLOW;
    PyObject *key = PyLong_FromLongLong(t->u);
    if (key == NULL)
        return FAILED;
    slot_set(st, self->st_last_ticker_id, Py_NewRef(key));
    self->tickers++;
    PyObject *top;
    int rc = 0;
    if (dict_pop(tops, key, &top) < 0) {
        Py_DECREF(key);
        return FAILED;
    }
    if (top != NULL) {
        double q[4];
        if (quote_numbers(top, q) < 0)
            rc = -1;
        else if (q[0] == t->b && q[1] == t->B && q[2] == t->a && q[3] == t->A)
            rc = count_check(self, check);
        else {
            PyObject *held = quote(t->b, t->B, t->a, t->A, r->symbol);
            rc = held == NULL ? -1 : call_mismatch(self, c, r, key, held, top);
            Py_XDECREF(held);
        }
        Py_DECREF(top);
    }
    else {
        PyObject *held = quote(t->b, t->B, t->a, t->A, r->symbol);
        rc = held == NULL ? -1 : keep_entry(self, check, self->check_tickers, key, held);
        Py_XDECREF(held);
    }
    Py_DECREF(key);
    return rc < 0 ? FAILED : TAKEN;
}

static PyObject *s_add, *s_popleft, *s_resum;

/* A slot holding a float, read as a double; 0 when it does not (unset, or another type). */
static inline int
slot_double(PyObject *obj, Py_ssize_t off, double *out)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL || !PyFloat_CheckExact(v))
        return 0;
    *out = PyFloat_AS_DOUBLE(v);
    return 1;
}

static int
slot_set_double(PyObject *obj, Py_ssize_t off, double value)
{
    PyObject *v = PyFloat_FromDouble(value);
    if (v == NULL)
        return -1;
    slot_set(obj, off, v);
    return 0;
}

/* TradeWindow.add(time, price, qty, buyer_is_maker) for a trade not before the window's newest, in C: the same
 * steps in the same order (the same sums, bit for bit), a FlowTrade appended, the trades older than the window's
 * horizon expired (TradeWindow._expire; its re-summing, rare, is the Python method). 1 done; 0 the window's slots
 * are not the plain ints and floats this reads (nothing changed: the caller calls the Python method); -1 an
 * error. ``time`` is t->T, ``price`` and ``qty`` its objects. */
static int
window_add(FeederObject *self, PyObject *w, const Agg *t, PyObject *time, PyObject *price, PyObject *qty)
{
    long long ms, last, buys, sells, expired;
    double size, qv, pq, q;
    PyObject *trades = SLOT(w, self->window_trades), *size_o = SLOT(w, self->window_large_size);
    if (trades == NULL || size_o == NULL || slot_ll(w, self->window_ms, &ms) < 0 ||
        slot_ll(w, self->window_last_time, &last) < 0 || t->T < last ||
        slot_ll(w, self->window_large_buys, &buys) < 0 || slot_ll(w, self->window_large_sells, &sells) < 0 ||
        slot_ll(w, self->window_expired, &expired) < 0 || !slot_double(w, self->window_qv, &qv) ||
        !slot_double(w, self->window_pq, &pq) || !slot_double(w, self->window_q, &q))
        return 0;
    if (PyFloat_CheckExact(size_o))
        size = PyFloat_AS_DOUBLE(size_o);
    else { /* an int: compared exactly as a double only up to 2**53 */
        long long n;
        if (slot_ll(w, self->window_large_size, &n) < 0 || n > (1LL << 53) || n < -(1LL << 53))
            return 0;
        size = (double)n;
    }
    double quote = t->p * t->q;
    int large = quote >= size;
    PyObject *quote_o = PyFloat_FromDouble(quote);
    if (quote_o == NULL)
        return -1;
    PyObject *args[6] = {time, price, qty, quote_o, t->m ? Py_True : Py_False, large ? Py_True : Py_False};
    PyObject *trade = PyObject_Vectorcall((PyObject *)self->trade_type, args, 6, NULL);
    Py_DECREF(quote_o);
    if (trade == NULL)
        return -1;
    PyObject *res = PyObject_CallMethodOneArg(trades, s_append, trade);
    Py_DECREF(trade);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    qv += quote;
    pq += quote;
    q += t->q;
    if (large) {
        if (t->m)
            sells++;
        else
            buys++;
    }
    slot_set(w, self->window_last_time, Py_NewRef(time)); /* not before the newest: the newest now */
    slot_set(w, self->window_last_price, Py_NewRef(price));
    long long cutoff = t->T - ms, gone = 0;
    Py_ssize_t left;
    for (;;) { /* TradeWindow._expire */
        if ((left = PyObject_Length(trades)) < 0)
            return -1;
        if (left == 0)
            break;
        PyObject *first = PySequence_GetItem(trades, 0);
        if (first == NULL)
            return -1;
        long long ft;
        double fq, fquote;
        if (!Py_IS_TYPE(first, self->trade_type) || slot_ll(first, self->trade_time, &ft) < 0 ||
            !slot_double(first, self->trade_quote, &fquote) || !slot_double(first, self->trade_qty, &fq)) {
            Py_DECREF(first);
            PyErr_SetString(PyExc_TypeError, "a TradeWindow holds something other than a FlowTrade");
            return -1;
        }
        int old_large = SLOT(first, self->trade_large) == Py_True;
        int old_sell = SLOT(first, self->trade_is_sell) == Py_True;
        Py_DECREF(first);
        if (ft >= cutoff)
            break;
        PyObject *old = PyObject_CallMethodNoArgs(trades, s_popleft);
        if (old == NULL)
            return -1;
        Py_DECREF(old);
        gone++;
        qv -= fquote;
        pq -= fquote;
        q -= fq;
        if (old_large) {
            if (old_sell)
                sells--;
            else
                buys--;
        }
    }
    if (slot_set_double(w, self->window_qv, qv) < 0 || slot_set_double(w, self->window_pq, pq) < 0 ||
        slot_set_double(w, self->window_q, q) < 0 || slot_set_ll(w, self->window_large_buys, buys) < 0 ||
        slot_set_ll(w, self->window_large_sells, sells) < 0)
        return -1;
    if (gone) {
        expired += gone;
        if (slot_set_ll(w, self->window_expired, expired) < 0)
            return -1;
        if (expired >= left) { /* TradeWindow._resum: rare, in Python */
            PyObject *r = PyObject_CallMethodNoArgs(w, s_resum);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
    }
    return 1;
}

/* MarketTrades._on_agg_trade on its common path: no gap held open, the id the next after the last applied one,
 * a trade time the clock takes (not past ahead_ms) and not before either window's newest trade: the id is kept
 * and the trade added to both windows (TradeWindow.add: window_add, or the Python method for a window whose slots
 * it does not read). Trades do not move the market clock. */
static int
apply_agg(FeederObject *self, Clock *c, Route *r, Agg *t)
{
    PyObject *st = r->st;
    if (t->T > c->ahead)
        return SLOW;
    if (SLOT(st, self->st_fill) != Py_None)
        return SLOW;
    /* the next id (a symbol's first trade, last = -1, goes the Python way unless its id is 0: the same then) */
    long long last, flow_time;
    if (slot_ll(st, self->st_last_agg_id, &last) < 0 || last == LLONG_MAX || t->a != last + 1)
        return SLOW;
    /* not before the symbol's newest trade (MarketTrades._add_trade; both windows have the same newest) */
    if (slot_ll(r->flow, self->window_last_time, &flow_time) < 0 || t->T < flow_time)
        return SLOW;
    if (slot_set_ll(st, self->st_last_agg_id, t->a) < 0)
        return FAILED;
    PyObject *args[5] = {NULL, PyLong_FromLongLong(t->T), PyFloat_FromDouble(t->p), PyFloat_FromDouble(t->q),
                         t->m ? Py_True : Py_False};
    if (args[1] == NULL || args[2] == NULL || args[3] == NULL) {
        Py_XDECREF(args[1]);
        Py_XDECREF(args[2]);
        Py_XDECREF(args[3]);
        return FAILED;
    }
    int rc = TAKEN;
    PyObject *windows[2] = {r->flow, r->vwap};
    for (int w = 0; w < 2 && rc == TAKEN; w++) {
        int done = window_add(self, windows[w], t, args[1], args[2], args[3]);
        if (done < 0) {
            rc = FAILED;
            break;
        }
        if (done)
            continue;
        args[0] = windows[w];
        PyObject *took = PyObject_VectorcallMethod(s_add, args, 5, NULL);
        if (took == NULL)
            rc = FAILED;
        else {
            if (took != Py_True) { /* cannot be: the trade is not before the window's newest */
                PyErr_SetString(PyExc_RuntimeError, "TradeWindow.add left out a trade the feeder took");
                rc = FAILED;
            }
            Py_DECREF(took);
        }
    }
    Py_DECREF(args[1]);
    Py_DECREF(args[2]);
    Py_DECREF(args[3]);
    if (rc == TAKEN)
        self->trades++;
    return rc;
}

static PyObject *s_update, *s_copy;

/* A Candle's 13 field values, in its order, from a kline (new references; 0 when one could not be made: those
 * made are still there for the caller to release). */
static int
candle_values(const Kl *k, PyObject *interval, PyObject *out[13])
{
    out[0] = PyLong_FromLongLong(k->t);
    out[1] = PyLong_FromLongLong(k->T);
    out[2] = Py_NewRef(interval);
    out[3] = PyFloat_FromDouble(k->o);
    out[4] = PyFloat_FromDouble(k->c);
    out[5] = PyFloat_FromDouble(k->h);
    out[6] = PyFloat_FromDouble(k->l);
    out[7] = PyFloat_FromDouble(k->v);
    out[8] = PyLong_FromLongLong(k->n);
    out[9] = Py_NewRef(k->x ? Py_True : Py_False);
    out[10] = PyFloat_FromDouble(k->q);
    out[11] = PyFloat_FromDouble(k->V);
    out[12] = PyFloat_FromDouble(k->Q);
    int ok = 1;
    for (int f = 0; f < 13; f++)
        ok = ok && out[f] != NULL;
    return ok;
}

/* The open time of a Candle (or a subclass); -1 when it is not one or its open_time is not an int. */
static long long
candle_open(FeederObject *self, PyObject *candle)
{
    long long t;
    if (candle == NULL || !PyObject_TypeCheck(candle, self->candle_type) || slot_ll(candle, self->candle[0], &t) < 0)
        return -1;
    return t;
}

/* CandleSeries.update's common case, a kline that does not close the forming bar it updates: the forming candle is
 * replaced (``series.forming = candle``, update's answer False). 1 done; 0 not that case (nothing changed); -1 an
 * error. The new Candle is a copy of the forming one (Struct.__copy__) given the kline's values: its __post_init__
 * (check_ohlc) has nothing to add to parse_candle's check of the same bounds. */
static int
kline_forming(FeederObject *self, Route *r, Kl *k)
{
    PyObject *series = r->series;
    PyObject *forming = SLOT(series, self->series_forming);
    if (k->x || forming == NULL || !Py_IS_TYPE(forming, self->candle_type) || candle_open(self, forming) != k->t)
        return 0;
    PyObject *closed = SLOT(series, self->series_closed);
    if (closed == NULL)
        return 0;
    Py_ssize_t n = PyObject_Length(closed);
    if (n < 0) {
        PyErr_Clear();
        return 0;
    }
    if (n > 0) { /* update() counts a kline for a bar at or before the last closed one as stale (CandleSeries never
                  * leaves a closed bar at or after the forming one: a guard, as update() has) */
        PyObject *last = PySequence_GetItem(closed, n - 1);
        if (last == NULL) {
            PyErr_Clear();
            return 0;
        }
        long long last_open = candle_open(self, last);
        Py_DECREF(last);
        if (last_open < 0 || last_open >= k->t)
            return 0;
    }
    PyObject *candle = PyObject_CallMethodNoArgs(forming, s_copy);
    if (candle == NULL)
        return -1;
    if (candle == forming || Py_REFCNT(candle) != 1 || !Py_IS_TYPE(candle, self->candle_type)) {
        Py_DECREF(candle); /* not a new Candle of its own (another msgspec?): its slots are not ours to set */
        return 0;
    }
    PyObject *values[13];
    int ok = candle_values(k, r->interval, values);
    for (int f = 0; f < 13; f++) {
        if (values[f] != NULL)
            slot_set(candle, self->candle[f], values[f]);
    }
    if (!ok) {
        Py_DECREF(candle);
        return -1;
    }
    slot_set(series, self->series_forming, candle);
    return 1;
}

/* MarketKlines._on_kline on its common path: a bar opening within the clock's tolerance, of the stream's interval,
 * for a symbol whose series of that interval exists: the candle (tapewatch.events.Candle, built here) goes to
 * CandleSeries.update; a hole it leaves is handed to the market's kline_fill (a callback). */
static int
apply_kline(FeederObject *self, Clock *c, Route *r, Kl *k)
{
    if (k->t > c->ahead)
        return SLOW;
    if (r->ilen != k->ilen || memcmp(route_key(r) + r->len + r->symlen, k->i, (size_t)k->ilen) != 0)
        return SLOW;
    /* the route's objects (the route holds them), not the route: Python code may run before their last use */
    PyObject *series = r->series, *st = r->st, *interval = r->interval;
    int fast = kline_forming(self, r, k);
    if (fast < 0)
        return FAILED;
    if (fast)
        goto updated;
    PyObject *args[13];
    PyObject *candle = NULL;
    int ok = candle_values(k, interval, args);
    if (ok)
        candle = PyObject_Vectorcall((PyObject *)self->candle_type, args, 13, NULL);
    for (int a = 0; a < 13; a++)
        Py_XDECREF(args[a]);
    if (candle == NULL)
        return FAILED;
    PyObject *call[2] = {series, candle};
    PyObject *res = PyObject_VectorcallMethod(s_update, call, 2, NULL);
    Py_DECREF(candle);
    if (res == NULL)
        return FAILED;
    Py_DECREF(res);
updated:
    self->klines++;
    if (SLOT(series, self->series_missing) == Py_None)
        return TAKEN;
    /* a hole to refill: the market asks for it (counted, logged, at most one refill in flight) */
    if (clock_write(self, c) < 0)
        return FAILED;
    PyObject *e = PyLong_FromLongLong(k->E);
    if (e == NULL)
        return FAILED;
    res = PyObject_CallFunctionObjArgs(self->after_kline, st, series, interval, e, NULL);
    Py_DECREF(e);
    if (res == NULL)
        return FAILED;
    Py_DECREF(res);
    return clock_read(self, c) < 0 ? FAILED : TAKEN;
}

/* One line: TAKEN (or TAKEN + 1: finished by a callback), SLOW (nothing changed), FAILED (an error is set). */
static int
take_line(FeederObject *self, Clock *c, PyObject *line)
{
    if (!PyBytes_CheckExact(line))
        return SLOW;
    Scan s = {PyBytes_AS_STRING(line), PyBytes_AS_STRING(line) + PyBytes_GET_SIZE(line)};
    if (!expect(&s, '{'))
        return SLOW;
    const char *k;
    Py_ssize_t kn;
    long long recv;
    Route *route = NULL;
    int seen = 0, kind = 0;
    Diff d = {0};
    Ticker t = {0};
    Agg g = {0};
    Kl kl = {0};
    if (expect(&s, '}'))
        return SLOW;
    for (;;) {
        if (!string(&s, &k, &kn) || !expect(&s, ':'))
            return SLOW;
        if (key_is(k, kn, "recv")) {
            if (seen & 1 || !integer(&s, &recv))
                return SLOW;
            seen |= 1;
        }
        else if (key_is(k, kn, "stream")) {
            const char *a;
            Py_ssize_t n;
            if (seen & 2 || !string(&s, &a, &n))
                return SLOW;
            seen |= 2;
            route = route_of(self, a, n);
            if (route == NULL)
                return PyErr_Occurred() ? FAILED : SLOW;
            if (route->kind == KIND_OTHER)
                return SLOW;
            /* a diff for a book neither synced nor waiting for its snapshot: the Python way */
            if (route->kind == KIND_DEPTH && SLOT(route->book, self->book_state) != self->synced &&
                SLOT(route->book, self->book_state) != self->waiting)
                return SLOW;
        }
        else if (key_is(k, kn, "data")) {
            if (seen & 4 || !(seen & 2)) /* the stream first, as tapewatch writes it */
                return SLOW;
            seen |= 4;
            kind = route->kind;
            if (kind == KIND_DEPTH) {
                if (!parse_diff(self, &s, &d))
                    return SLOW;
            }
            else if (kind == KIND_AGG) {
                if (!parse_agg(&s, &g))
                    return SLOW;
            }
            else if (kind == KIND_KLINE) {
                if (!parse_kline(&s, &kl))
                    return SLOW;
            }
            else if (!parse_ticker(&s, &t)) {
                return SLOW;
            }
        }
        else if (!skip_value(&s, 0)) {
            return SLOW;
        }
        if (expect(&s, '}'))
            break;
        if (!expect(&s, ','))
            return SLOW;
    }
    ws(&s);
    if (s.p != s.end || seen != 7)
        return SLOW;
    /* the payload names the stream's symbol */
    const char *sym = kind == KIND_DEPTH ? d.sym : kind == KIND_AGG ? g.sym : kind == KIND_KLINE ? kl.sym : t.sym;
    Py_ssize_t symlen = kind == KIND_DEPTH  ? d.symlen
                        : kind == KIND_AGG  ? g.symlen
                        : kind == KIND_KLINE ? kl.symlen
                                             : t.symlen;
    if (route->symlen != symlen || memcmp(route_key(route) + route->len, sym, (size_t)symlen) != 0)
        return SLOW;
    if (kind == KIND_AGG)
        return apply_agg(self, c, route, &g);
    if (kind == KIND_KLINE)
        return apply_kline(self, c, route, &kl);
    return kind == KIND_DEPTH ? apply_diff(self, c, route, &d, line) : apply_ticker(self, c, route, &t);
}

/* --- prefetching ----------------------------------------------------------------------------------------
 * A line's cost is mostly the cache misses on what it touches: its route-table slot, its route, then its
 * symbol's objects, spread over ~800 symbols. They are independent of the lines before, so feed() asks for them
 * ahead, in stages a few lines apart: the table slot of line i + 4 (its stream name read by the writer's
 * layout, `{"recv":N,"stream":"...`), the route of line i + 2, the objects of line i + 1. A prefetch is a hint
 * with no effect on what the feeder does: a line not laid out so, or a stream without a route yet, gets none.
 * (Measured on the 800-symbol capture, run side by side: -5 to -15 %; a fourth stage, for what the objects
 * point to, added nothing.) */

#define AHEAD 8 /* ring of lookahead lines (a power of two, more than the deepest stage) */

typedef struct {
    Py_hash_t hash;
    Py_ssize_t route; /* -1: not known */
    int hashed;
} Ahead;

static inline void
prefetch_object(const void *obj)
{
    if (obj != NULL) {
        __builtin_prefetch(obj);
        __builtin_prefetch((const char *)obj + 64);
    }
}

/* Stage 1: hash line j's stream name and ask for its table slot. */
static inline void
ahead_hash(FeederObject *self, PyObject *line, Ahead *a)
{
    a->hashed = 0;
    a->route = -1;
    if (!PyBytes_CheckExact(line) || self->tablecap == 0)
        return;
    const char *p = PyBytes_AS_STRING(line), *end = p + PyBytes_GET_SIZE(line);
    if (end - p < 64 || memcmp(p, "{\"recv\":", 8) != 0)
        return;
    p += 8;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (end - p < 12 || memcmp(p, ",\"stream\":\"", 11) != 0)
        return;
    p += 11;
    const char *q = memchr(p, '"', (size_t)(end - p < 128 ? end - p : 128));
    if (q == NULL)
        return;
    a->hash = hash_bytes(p, q - p);
    a->hashed = 1;
    __builtin_prefetch(&self->table[a->hash & (self->tablecap - 1)]);
}

/* Stage 2: find the route in the (prefetched) table and ask for it. */
static inline void
ahead_route(FeederObject *self, Ahead *a)
{
    if (!a->hashed || self->tablecap == 0)
        return;
    Py_ssize_t i = a->hash & (self->tablecap - 1);
    const TableSlot *slot;
    while ((slot = &self->table[i])->route >= 0) {
        if (slot->hash == a->hash) {
            a->route = slot->route;
            const char *r = (const char *)&self->routes[slot->route];
            for (size_t off = 0; off < sizeof(Route); off += 64)
                __builtin_prefetch(r + off);
            return;
        }
        i = (i + 1) & (self->tablecap - 1);
    }
}

/* Stage 3: ask for the objects the line will touch. */
static inline void
ahead_objects(FeederObject *self, const Ahead *a)
{
    if (a->route < 0 || a->route >= self->nroutes)
        return;
    const Route *r = &self->routes[a->route];
    switch (r->kind) {
    case KIND_DEPTH:
        prefetch_object(r->book);
        prefetch_object(r->bids);
        prefetch_object(r->asks);
        prefetch_object(r->check);
        break;
    case KIND_TICKER:
        prefetch_object(r->st);
        prefetch_object(r->check);
        break;
    case KIND_AGG:
        prefetch_object(r->st);
        prefetch_object(r->flow);
        prefetch_object(r->vwap);
        break;
    case KIND_KLINE:
        prefetch_object(r->series);
        break;
    default:
        break;
    }
}

/* feed(lines, start) -> the index of the first line from ``start`` not taken (len(lines) when all were). */
static PyObject *
Feeder_feed(FeederObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "feed(lines: list[bytes], start: int)");
        return NULL;
    }
    PyObject *lines = args[0];
    Py_ssize_t i = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0)
        i = 0;
    Clock c;
    if (clock_read(self, &c) < 0)
        return NULL;
    Ahead ahead[AHEAD];
    for (int j = 0; j < AHEAD; j++) {
        ahead[j].hashed = 0;
        ahead[j].route = -1;
    }
    for (Py_ssize_t j = i; j < i + 4 && j < PyList_GET_SIZE(lines); j++) {
        ahead_hash(self, PyList_GET_ITEM(lines, j), &ahead[j & (AHEAD - 1)]);
        if (j < i + 2)
            ahead_route(self, &ahead[j & (AHEAD - 1)]);
    }
    for (; i < PyList_GET_SIZE(lines); i++) {
        Py_ssize_t n = PyList_GET_SIZE(lines);
        if (i + 4 < n)
            ahead_hash(self, PyList_GET_ITEM(lines, i + 4), &ahead[(i + 4) & (AHEAD - 1)]);
        if (i + 2 < n)
            ahead_route(self, &ahead[(i + 2) & (AHEAD - 1)]);
        if (i + 1 < n)
            ahead_objects(self, &ahead[(i + 1) & (AHEAD - 1)]);
        PyObject *line = PyList_GET_ITEM(lines, i);
        Py_INCREF(line);
        int rc = take_line(self, &c, line);
        Py_DECREF(line);
        if (rc == FAILED) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            clock_write(self, &c);
            PyErr_Restore(type, value, tb);
            return NULL;
        }
        if (rc == SLOW)
            break;
        if (rc == TAKEN)
            self->taken++;
    }
    if (clock_write(self, &c) < 0)
        return NULL;
    return PyLong_FromSsize_t(i);
}

static PyObject *
Feeder_counts(FeederObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L}", "taken", self->taken, "callbacks", self->callbacks,
                         "diffs", self->diffs, "buffered", self->buffered, "tickers", self->tickers, "trades",
                         self->trades, "klines", self->klines);
}

static int
Feeder_init(FeederObject *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"market",      "route",       "after_apply", "mismatch",    "after_kline",
                            "drop_oldest", "synced",      "waiting",     "state_type",  "book_type",
                            "check_type",  "window_type", "series_type", "candle_type", "trade_type", NULL};
    PyObject *market, *route, *after, *mismatch, *after_kline, *drop, *synced, *waiting, *st_type, *book_type,
        *check_type, *window_type, *series_type, *candle_type, *trade_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOO!O!O!O!O!O!O!", names, &market, &route, &after,
                                     &mismatch, &after_kline, &drop, &synced, &waiting, &PyType_Type, &st_type,
                                     &PyType_Type,
                                     &book_type, &PyType_Type, &check_type, &PyType_Type, &window_type,
                                     &PyType_Type, &series_type, &PyType_Type, &candle_type, &PyType_Type, &trade_type))
        return -1;
    if (self->market != NULL) {
        PyErr_SetString(PyExc_TypeError, "a LineFeeder is made once");
        return -1;
    }
    self->market = Py_NewRef(market);
    self->route_fn = Py_NewRef(route);
    self->after_apply = Py_NewRef(after);
    self->mismatch = Py_NewRef(mismatch);
    self->after_kline = Py_NewRef(after_kline);
    self->drop_oldest = Py_NewRef(drop);
    self->synced = Py_NewRef(synced);
    self->waiting = Py_NewRef(waiting);
    self->st_type = (PyTypeObject *)Py_NewRef(st_type);
    self->book_type = (PyTypeObject *)Py_NewRef(book_type);
    self->check_type = (PyTypeObject *)Py_NewRef(check_type);
    self->window_type = (PyTypeObject *)Py_NewRef(window_type);
    self->series_type = (PyTypeObject *)Py_NewRef(series_type);
    self->candle_type = (PyTypeObject *)Py_NewRef(candle_type);
    self->trade_type = (PyTypeObject *)Py_NewRef(trade_type);
    PyTypeObject *S = self->st_type, *B = self->book_type, *C = self->check_type, *W = self->window_type;
    if ((self->st_last_event_time = slot_offset(S, "last_event_time")) < 0 ||
        (self->st_last_ticker_id = slot_offset(S, "last_ticker_id")) < 0 ||
        (self->st_last_agg_id = slot_offset(S, "last_agg_id")) < 0 || (self->st_fill = slot_offset(S, "fill")) < 0 ||
        (self->st_snapshot_pending = slot_offset(S, "snapshot_pending")) < 0 ||
        (self->window_last_time = slot_offset(W, "last_time")) < 0 ||
        (self->series_missing = slot_offset(self->series_type, "missing")) < 0 ||
        (self->series_forming = slot_offset(self->series_type, "forming")) < 0 ||
        (self->series_closed = slot_offset(self->series_type, "closed")) < 0 ||
        (self->book_state = slot_offset(B, "state")) < 0 ||
        (self->book_last_update_id = slot_offset(B, "last_update_id")) < 0 ||
        (self->book_last_event_time = slot_offset(B, "last_event_time")) < 0 ||
        (self->book_applied = slot_offset(B, "applied")) < 0 ||
        (self->book_floor = slot_offset(B, "_bid_floor")) < 0 ||
        (self->book_ceiling = slot_offset(B, "_ask_ceiling")) < 0 ||
        (self->book_buffer = slot_offset(B, "_buffer")) < 0 ||
        (self->check_keep = slot_offset(C, "keep")) < 0 || (self->check_checks = slot_offset(C, "checks")) < 0 ||
        (self->check_tops = slot_offset(C, "_tops")) < 0 ||
        (self->check_tickers = slot_offset(C, "_tickers")) < 0)
        return -1;
    static const char *candle_fields[13] = {"open_time", "close_time", "interval",     "open",
                                            "close",     "high",       "low",          "volume",
                                            "trades",    "closed",     "quote_volume", "taker_buy_volume",
                                            "taker_buy_quote_volume"};
    for (int f = 0; f < 13; f++) {
        if ((self->candle[f] = slot_offset(self->candle_type, candle_fields[f])) < 0)
            return -1;
    }
    PyTypeObject *F = self->trade_type;
    if ((self->window_trades = slot_offset(W, "_trades")) < 0 || (self->window_ms = slot_offset(W, "window_ms")) < 0 ||
        (self->window_large_size = slot_offset(W, "large_trade_size")) < 0 ||
        (self->window_large_buys = slot_offset(W, "large_buys")) < 0 ||
        (self->window_large_sells = slot_offset(W, "large_sells")) < 0 ||
        (self->window_last_price = slot_offset(W, "last_price")) < 0 ||
        (self->window_qv = slot_offset(W, "quote_volume")) < 0 || (self->window_pq = slot_offset(W, "pq")) < 0 ||
        (self->window_q = slot_offset(W, "q")) < 0 || (self->window_expired = slot_offset(W, "_expired")) < 0 ||
        (self->trade_time = slot_offset(F, "time")) < 0 || (self->trade_qty = slot_offset(F, "qty")) < 0 ||
        (self->trade_quote = slot_offset(F, "quote")) < 0 || (self->trade_is_sell = slot_offset(F, "is_sell")) < 0 ||
        (self->trade_large = slot_offset(F, "large")) < 0)
        return -1;
    return 0;
}

static int
Feeder_traverse(FeederObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->market);
    Py_VISIT(self->route_fn);
    Py_VISIT(self->after_apply);
    Py_VISIT(self->mismatch);
    Py_VISIT(self->after_kline);
    Py_VISIT(self->drop_oldest);
    Py_VISIT(self->synced);
    Py_VISIT(self->waiting);
    Py_VISIT(self->st_type);
    Py_VISIT(self->book_type);
    Py_VISIT(self->check_type);
    Py_VISIT(self->window_type);
    Py_VISIT(self->series_type);
    Py_VISIT(self->candle_type);
    Py_VISIT(self->trade_type);
    for (Py_ssize_t r = 0; r < self->nroutes; r++) {
        Py_VISIT(self->routes[r].symbol);
        Py_VISIT(self->routes[r].st);
        Py_VISIT(self->routes[r].book);
        Py_VISIT(self->routes[r].check);
        Py_VISIT(self->routes[r].flow);
        Py_VISIT(self->routes[r].vwap);
        Py_VISIT(self->routes[r].series);
    }
    return 0;
}

static int
Feeder_clear(FeederObject *self)
{
    Py_CLEAR(self->market);
    Py_CLEAR(self->route_fn);
    Py_CLEAR(self->after_apply);
    Py_CLEAR(self->mismatch);
    Py_CLEAR(self->after_kline);
    Py_CLEAR(self->drop_oldest);
    Py_CLEAR(self->synced);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->st_type);
    Py_CLEAR(self->book_type);
    Py_CLEAR(self->check_type);
    Py_CLEAR(self->window_type);
    Py_CLEAR(self->series_type);
    Py_CLEAR(self->candle_type);
    Py_CLEAR(self->trade_type);
    for (Py_ssize_t r = 0; r < self->nroutes; r++)
        route_clear(&self->routes[r]);
    PyMem_Free(self->table); /* no slot may name a route cleared here */
    self->table = NULL;
    self->tablecap = 0;
    self->nroutes = 0;
    return 0;
}

static void
Feeder_dealloc(FeederObject *self)
{
    PyObject_GC_UnTrack(self);
    Feeder_clear(self);
    PyMem_Free(self->routes);
    PyMem_Free(self->table);
    PyMem_Free(self->levels);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Feeder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Feeder_feed, METH_FASTCALL,
     "feed(lines, start) -> index of the first line not taken (the Python path takes it)."},
    {"counts", (PyCFunction)Feeder_counts, METH_NOARGS, "Lines taken so far, by how."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeederType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapewatch._sides.LineFeeder",
    .tp_doc = PyDoc_STR("Depth diffs, bookTickers, aggTrades and klines of capture lines applied to a Market in C."),
    .tp_basicsize = sizeof(FeederObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Feeder_init,
    .tp_dealloc = (destructor)Feeder_dealloc,
    .tp_traverse = (traverseproc)Feeder_traverse,
    .tp_clear = (inquiry)Feeder_clear,
    .tp_methods = Feeder_methods,
};

static int
lines_init_strings(void)
{
    s_now_ms = PyUnicode_InternFromString("now_ms");
    s_ahead_ms = PyUnicode_InternFromString("ahead_ms");
    s_tolerance = PyUnicode_InternFromString("clock_tolerance_ms");
    s_add = PyUnicode_InternFromString("add");
    s_update = PyUnicode_InternFromString("update");
    s_append = PyUnicode_InternFromString("append");
    s_copy = PyUnicode_InternFromString("__copy__");
    s_popleft = PyUnicode_InternFromString("popleft");
    s_resum = PyUnicode_InternFromString("_resum");
    return (s_now_ms && s_ahead_ms && s_tolerance && s_add && s_update && s_append && s_copy && s_popleft &&
            s_resum)
               ? 0
               : -1;
}
