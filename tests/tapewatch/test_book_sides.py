"""The native book sides (tapewatch/_sides.c) against the pure-Python ones: the same levels and the same
figures, bit for bit, through random updates, snapshot loads and every reader (the sides' own contract; the
book tests run the whole procedure over both implementations through the ``both_sides`` fixture)."""

from __future__ import annotations

import random

import pytest

from tapewatch import book_sides
from tapewatch.book_sides import Side, py_sides
from tests.helpers import require_native_sides


@pytest.fixture
def native() -> None:
    require_native_sides()


def _read(side: Side, rng: random.Random, prices: list[float]) -> tuple[object, ...]:
    limit = rng.choice(prices)
    n = rng.choice([0, 1, 3, 10, 500, 5000])
    return (
        len(side),
        side.best(),
        side.best_price(),
        side.worst_price(),
        side.top(n),
        side.volume(n),
        side.notional_within(limit),
    )


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_native_sides_match_the_python_sides_over_random_books(seed: int) -> None:
    rng = random.Random(seed)
    # a 1,000-level book of awkward doubles (prices read from text, like the decoder's), touched near the
    # best level mostly and deep now and then
    ticks = [float(f"{0.0001 * i + 0.0137:.4f}") for i in range(1, 2_001)]
    pairs = [py_sides(), book_sides.native_sides()]
    for _ in range(300):
        roll = rng.random()
        for is_ask in (False, True):
            if roll < 0.05:  # a snapshot: unsorted now and then, a price listed twice, zero quantities
                levels = [(p, float(rng.choice([0, 1, 2.5, 7]))) for p in rng.sample(ticks, 1_000)]
                levels += [(levels[0][0], 3.0), (levels[1][0], 0.0)]
                if rng.random() < 0.7:
                    levels.sort(reverse=not is_ask)  # best first, as Binance lists them
            else:
                near = ticks[:60] if is_ask else ticks[-60:]
                pool = near if rng.random() < 0.8 else ticks
                levels = [(p, float(rng.choice([0, 0, 1, 2.5, 0.125]))) for p in rng.sample(pool, 7)]
            for pair in pairs:
                side = pair[1] if is_ask else pair[0]
                if roll < 0.05:
                    side.load(levels)
                else:
                    side.update(levels)
        state = rng.getstate()
        readings = []
        for pair in pairs:
            rng.setstate(state)  # the same random limits and counts for both
            readings.append([_read(pair[0], rng, ticks), _read(pair[1], rng, ticks)])
        assert readings[0] == readings[1]
    assert len(pairs[1][0]) > 100 and len(pairs[1][1]) > 100  # the books stayed deep


@pytest.mark.usefixtures("native")
def test_native_sides_read_best_first_and_clear() -> None:
    bids, asks = book_sides.native_sides()
    bids.load([(100.0, 5.0), (99.0, 2.0), (98.0, 0.0)])
    asks.load([[101.0, 1.0], [102.0, 3]])  # type: ignore[list-item]  # lists and ints are levels too
    assert bids.top(5) == [(100.0, 5.0), (99.0, 2.0)] and asks.top(5) == [(101.0, 1.0), (102.0, 3.0)]
    assert bids.best() == (100.0, 5.0) and asks.best() == (101.0, 1.0)
    assert bids.worst_price() == 99.0 and asks.worst_price() == 102.0
    asks.update([(101.0, 0.0), (100.5, 4)])  # remove the best, insert a better one
    assert asks.top(2) == [(100.5, 4.0), (102.0, 3.0)]
    bids.update([(97.0, 0.0)])  # removing a level that is not there is no error
    assert len(bids) == 2
    bids.clear()
    assert len(bids) == 0 and bids.best() is None and bids.best_price() is None and bids.top(3) == []
    assert bids.volume(10) == 0.0 and bids.notional_within(1.0) == 0.0


@pytest.mark.usefixtures("native")
def test_native_sides_refuse_what_is_not_a_level() -> None:
    bids, _ = book_sides.native_sides()
    with pytest.raises(ValueError, match=r"\(price, qty\) pair"):
        bids.update([(100.0, 1.0, 2.0)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        bids.update([("100.0", 1.0)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        bids.load(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bids.top("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no arguments"):
        type(bids)(1)  # type: ignore[call-arg]
    bids.load([(100.0, 1.0)])
    with pytest.raises(TypeError):
        bids.load([(99.0, 1.0), (98.0, "x")])  # type: ignore[list-item]
    assert len(bids) == 0  # a failed load leaves an empty side, never half a snapshot


class _ClearsOnRead:
    """A number whose conversion empties the list of levels being applied."""

    def __init__(self, value: float, levels: list[tuple[object, float]]) -> None:
        self.value, self.levels = value, levels

    def __float__(self) -> float:
        self.levels.clear()
        return self.value


@pytest.mark.usefixtures("native")
def test_native_sides_survive_levels_that_change_while_read() -> None:
    """Converting a number may run Python code: the native side reads the list's length and items afresh for
    each level and holds the level it reads, so a list emptied midway ends the update instead of being read
    after it was freed."""
    levels: list[tuple[object, float]] = []
    levels += [(1.0, 1.0), (_ClearsOnRead(2.0, levels), 1.0)] + [(i + 0.5, 1.0) for i in range(3, 40)]
    bids, _ = book_sides.native_sides()
    bids.update(levels)  # type: ignore[arg-type]
    assert bids.top(5) == [(2.0, 1.0), (1.0, 1.0)]
