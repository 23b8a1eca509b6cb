"""Features: a valid vector is accepted as is; NaN, non-positive prices and crossed books are refused."""

from __future__ import annotations

import math

import msgspec
import pytest

from tapewatch.features import DataQuality, Features, check_price
from tests.tapewatch.feature_builders import T0, long_setup


def test_a_full_vector_and_a_sparse_one_are_accepted() -> None:
    f = long_setup()
    assert (f.symbol, f.event_time, f.large_trades) == ("BTCUSDT", T0, 4)
    sparse = long_setup(
        volume_intensity=None,
        vwap_1h=None,
        rsi9=None,
        bullish_divergence=None,
        bearish_divergence=None,
        support=None,
        resistance=None,
        atr_15m=None,
        data_quality=DataQuality(),
    )
    assert sparse.rsi9 is None and sparse.data_quality.book_sync_age_ms is None
    assert long_setup(large_buys=2, large_sells=7).large_trades == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"price": math.nan}, "BTCUSDT price must be a finite price > 0; got nan"),
        ({"price": 0.0}, "BTCUSDT price must be a finite price > 0; got 0.0"),
        ({"best_bid": -1.0}, "best_bid must be a finite price > 0"),
        ({"best_ask": math.inf}, "best_ask must be a finite price > 0; got inf"),
        ({"best_bid": 100.01}, "best_bid 100.01 must be below best_ask 100.01 (crossed book)"),
        ({"best_bid": 100.5}, "crossed book"),
        ({"imbalance_top10": math.nan}, "imbalance_top10 must be within [-1, 1]; got nan"),
        ({"imbalance_top10": 1.01}, "imbalance_top10 must be within [-1, 1]"),
        ({"large_buys": -1}, "large_buys must be >= 0; got -1"),
        ({"large_sells": -3}, "large_sells must be >= 0"),
        ({"volume_intensity": math.nan}, "volume_intensity must be finite and >= 0; got nan"),
        ({"volume_intensity": -0.1}, "volume_intensity must be finite and >= 0"),
        ({"vwap_1h": 0.0}, "vwap_1h must be finite and > 0; got 0.0"),
        ({"support": -5.0}, "support must be finite and > 0"),
        ({"resistance": math.inf}, "resistance must be finite and > 0; got inf"),
        ({"atr_15m": math.nan}, "atr_15m must be finite and >= 0; got nan"),
        ({"rsi9": 100.5}, "rsi9 must be within [0, 100]; got 100.5"),
        ({"rsi9": math.nan}, "rsi9 must be within [0, 100]; got nan"),
        ({"event_time": -1}, "event_time must be epoch ms >= 0"),
        ({"symbol": "btc-usdt"}, "symbol must be upper-case letters and digits"),
        ({"symbol": ""}, "symbol must be upper-case letters and digits"),
    ],
)
def test_bad_values_raise_a_clear_error(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        long_setup(**changes)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gaps_in_window": -1}, "gaps_in_window must be >= 0; got -1"),
        ({"book_sync_age_ms": -5}, "book_sync_age_ms must be >= 0"),
        ({"depth_bid_usd": math.nan}, "depth_bid_usd must be finite and >= 0; got nan"),
        ({"depth_ask_usd": -1.0}, "depth_ask_usd must be finite and >= 0"),
    ],
)
def test_bad_data_quality_raises(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        DataQuality(**changes)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_json_round_trip_and_bad_json() -> None:
    f = long_setup()
    assert msgspec.json.decode(msgspec.json.encode(f), type=Features) == f
    raw = msgspec.json.decode(msgspec.json.encode(f))
    raw["best_ask"] = 0
    with pytest.raises(ValueError, match="best_ask must be a finite price > 0"):
        msgspec.json.decode(msgspec.json.encode(raw), type=Features)
    raw["best_ask"] = "100.01"  # a string price never gets past decoding
    with pytest.raises(ValueError, match="Expected `float`, got `str`"):
        msgspec.json.decode(msgspec.json.encode(raw), type=Features)


def test_check_price_returns_good_prices() -> None:
    assert check_price("entry", 0.00001234) == 0.00001234
    with pytest.raises(ValueError, match=r"entry must be a finite price > 0; got -0\.0"):
        check_price("entry", -0.0)
