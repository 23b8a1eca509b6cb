"""``orderbook_depth`` (spec DATA_CONFIG, "book levels kept in views and Redis"): each symbol's live features in
Redis carry the top ``orderbook_depth`` levels a side of its book and the walls among them; none while the book
is not usable. Against real Redis."""

from __future__ import annotations

import asyncio

import pytest

from realtime.live_state import LiveState
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tests.tapewatch.engine_rig import SYM, T0, Rig

# best first. Over the top 3 levels a side (mean 235 / 6) the 200 bid is a wall (5.1x); over the top 6 (mean
# 1665 / 12 = 138.75) it is not, the 500 bid is not either (3.6x), and the 900 ask is (6.5x).
BIDS = [(99.9, 10.0), (99.8, 10.0), (99.7, 200.0), (99.6, 10.0), (99.5, 10.0), (99.4, 500.0)]
ASKS = [(100.1, 5.0), (100.2, 5.0), (100.3, 5.0), (100.4, 5.0), (100.5, 5.0), (100.6, 900.0)]
WALLS = {
    3: ([[99.7, 200.0, pytest.approx(200 / (235 / 6))]], []),
    6: ([], [[100.6, 900.0, pytest.approx(900 / 138.75)]]),
}


def _published(redis_url: str, redis_state: RedisState, rig: Rig) -> dict[str, object]:
    """The features LiveState writes for SYM, read back from Redis."""

    async def write() -> None:
        redis = AsyncRedisState.from_url(redis_url, keys=redis_state.keys)
        try:
            await LiveState(redis, rig.engine, wall_ms=lambda: 42).flush(refresh=True)
        finally:
            await redis.aclose()

    asyncio.run(write())
    published = redis_state.symbol_features(SYM)
    assert published is not None
    features = published["features"]
    assert isinstance(features, dict)
    return features


@pytest.mark.parametrize("depth", [3, 6])
def test_the_live_features_carry_orderbook_depth_levels_a_side_and_their_walls(
    redis_url: str, redis_state: RedisState, depth: int
) -> None:
    rig = Rig(orderbook_depth=depth)
    rig.context()
    rig.snapshot(BIDS, ASKS, T0 + 1_000)
    rig.depth(T0 + 1_000)
    rig.trade(T0 + 1_010, 100.0, 7000.0)  # the symbol is evaluated
    features = _published(redis_url, redis_state, rig)
    assert features["book"] == "synced"
    assert features["bids"] == [list(level) for level in BIDS[:depth]]
    assert features["asks"] == [list(level) for level in ASKS[:depth]]
    assert (features["bid_walls"], features["ask_walls"]) == WALLS[depth]


def test_no_book_levels_while_the_book_is_not_usable(redis_url: str, redis_state: RedisState) -> None:
    rig = Rig(orderbook_depth=3)
    rig.context()
    rig.snapshot(BIDS, ASKS, T0 + 1_000)
    rig.depth(T0 + 1_000)
    rig.depth(T0 + 2_000, skip=5)  # a sequence gap: the book is out of sync
    rig.trade(T0 + 2_010, 100.0, 7000.0)
    features = _published(redis_url, redis_state, rig)
    assert features["book"] == "resyncing"
    assert [features[k] for k in ("bids", "asks", "bid_walls", "ask_walls")] == [None] * 4
