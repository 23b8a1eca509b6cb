"""Signal and Candidate: deterministic ids, every spec 8.2 field, JSON round trips, refused bad values."""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec
import pytest

from tapewatch.features import Features
from tapewatch.quality import Tier, priority_levels, score_features, score_quality
from tapewatch.rules import check, evaluate
from tapewatch.settings import load_settings
from tapewatch.signal import (
    FATE_LOW_QUALITY,
    FATE_NO_PLAN,
    FATE_SIGNAL,
    NAMESPACE,
    Candidate,
    Signal,
    TierHistory,
    decode_candidate,
    decode_signal,
    encode,
    exit_signal_id,
    iso_timestamp,
    make_candidate,
    make_entry_signal,
    make_exit_signal,
    propose,
    signal_id_for,
)
from tapewatch.trade_plan import confidence, expected_hold_time, plan_trade
from tests.tapewatch.feature_builders import T0, long_setup, short_setup

S = load_settings()
SPEC_8_2_FIELDS = {
    "signal_id", "symbol", "direction", "signal_type", "priority", "timestamp",
    "entry_price", "stop_loss", "take_profit_1", "take_profit_2",
    "quality_score", "orderbook_imbalance", "large_trades_count", "volume_intensity", "confidence",
    "suggested_position_size", "risk_reward_ratio", "expected_hold_time",
}  # fmt: skip


def entry_signal(features: Features) -> Signal:
    """The whole pure pipeline, as the engine runs it: rules -> quality -> plan -> signal."""
    [evaluation] = evaluate(features, S)
    quality = score_features(features)
    assert quality.tier is not None
    level = features.support if evaluation.direction == "LONG" else features.resistance
    assert features.atr_15m is not None
    plan = plan_trade(evaluation.direction, features.best_bid, features.best_ask, features.atr_15m, level, S)
    return make_entry_signal(
        features,
        evaluation,
        quality,
        plan,
        confidence=confidence(0, 0, quality.score),
        expected_hold_time=expected_hold_time(priority_levels(S)[quality.tier]),
    )


def test_ids_are_uuid5_of_symbol_direction_and_trigger_time() -> None:
    sid = signal_id_for("BTCUSDT", "LONG", T0)
    assert sid == str(uuid.uuid5(NAMESPACE, f"BTCUSDT|LONG|{T0}"))
    assert uuid.UUID(sid).version == 5
    # pinned: a change of namespace or name layout would re-key every stored signal
    assert signal_id_for("BTCUSDT", "LONG", 0) == "90cd2e14-9bd5-5d08-a486-2ee339c66ced"
    assert signal_id_for("BTCUSDT", "LONG", T0) == sid
    assert len({sid, signal_id_for("BTCUSDT", "SHORT", T0), signal_id_for("BTCUSDT", "LONG", T0 + 1)}) == 3
    assert signal_id_for("ETHUSDT", "LONG", T0) != sid
    with pytest.raises(ValueError, match="trigger event time must be epoch ms >= 0"):
        signal_id_for("BTCUSDT", "LONG", -1)


def test_exit_ids_derive_from_the_parent() -> None:
    parent = signal_id_for("BTCUSDT", "LONG", T0)
    assert exit_signal_id(parent, "TP1") == str(uuid.uuid5(uuid.UUID(parent), "TP1"))
    assert len({exit_signal_id(parent, r) for r in ("TP1", "TP2", "STOP", "EXPIRED")}) == 4
    with pytest.raises(ValueError):
        exit_signal_id("not-a-uuid", "TP1")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T0, "2024-01-01T00:00:00.123Z"),
        (1_704_067_259_999, "2024-01-01T00:00:59.999Z"),
    ],
)
def test_iso_timestamp_is_utc_with_milliseconds(ms: int, text: str) -> None:
    assert iso_timestamp(ms) == text


def test_a_long_entry_signal_has_every_spec_field_and_its_evidence() -> None:
    sig = entry_signal(long_setup())
    raw = msgspec.json.decode(encode(sig))
    assert set(raw) >= SPEC_8_2_FIELDS
    assert (raw["symbol"], raw["direction"], raw["signal_type"], raw["priority"]) == (
        "BTCUSDT",
        "LONG",
        "ENTRY",
        "HIGH",
    )
    assert raw["signal_id"] == signal_id_for("BTCUSDT", "LONG", T0)
    assert raw["timestamp"] == "2024-01-01T00:00:00.123Z" and raw["event_time"] == T0
    # imbalance 0.41 -> 35, volume 2.1 -> 30, 4 large buys -> 32
    assert (raw["quality_score"], raw["large_trades_count"], raw["orderbook_imbalance"]) == (97, 4, 0.41)
    assert raw["entry_price"] == 100.01  # the ask
    # support 99.6 is 0.41 below the ask; + 0.1 ATR buffer = 0.49: tighter than 1.5 ATR (1.2), above 0.5 ATR (0.4)
    assert raw["stop_loss"] == pytest.approx(100.01 - 0.49)
    assert raw["take_profit_1"] == pytest.approx(100.01 + 0.49)
    assert raw["take_profit_2"] == pytest.approx(100.01 + 0.98)
    assert raw["confidence"] == pytest.approx(0.97) and raw["risk_reward_ratio"] == 1.5
    # 0.5 % of capital / (0.49 + the taker fee on both sides, 0.05 % of 100.01 + 99.52) per 100.01: 0.85
    assert raw["suggested_position_size"] == pytest.approx(
        0.005 / ((0.49 + 0.0005 * (100.01 + 99.52)) / 100.01)
    )
    assert raw["expected_hold_time"] == "30min"
    assert raw["reasons"][:2] == ["imbalance 0.41 > 0.28", "large buys 4 >= 3"]
    assert raw["data_quality"]["book_sync_age_ms"] == 42_000 and raw["data_quality"]["resyncs_in_window"] == 1
    assert raw["exit_reason"] is None and raw["parent_signal_id"] is None
    assert decode_signal(encode(sig)) == sig


def test_a_short_entry_signal_counts_large_sells() -> None:
    f = short_setup(large_sells=3, imbalance_top10=-0.35, volume_intensity=1.9, resistance=None, atr_15m=2.0)
    sig = entry_signal(f)
    assert (sig.direction, sig.entry_price, sig.large_trades_count) == ("SHORT", 99.99, 3)
    assert (sig.quality_score, sig.priority) == (25 + 20 + 24, "MEDIUM")
    assert (sig.stop_loss, sig.take_profit_1, sig.take_profit_2) == pytest.approx((102.99, 96.99, 93.99))
    # 3 = 1.5 ATR, plus the taker fee on both sides; not capped
    assert sig.suggested_position_size == pytest.approx(0.005 / ((3.0 + 0.0005 * (99.99 + 102.99)) / 99.99))
    assert "resistance test: no data" not in sig.reasons  # reasons hold the conditions met only
    assert sig.expected_hold_time == "60min"
    assert decode_signal(encode(sig)) == sig


@pytest.mark.parametrize("reason", ["TP1", "TP2", "STOP", "EXPIRED"])
def test_exit_signals(reason: Any) -> None:
    parent = entry_signal(long_setup())
    done = make_exit_signal(parent, reason, 100.5, T0 + 600_000)
    assert (done.signal_type, done.exit_reason, done.parent_signal_id) == ("EXIT", reason, parent.signal_id)
    assert done.signal_id == exit_signal_id(parent.signal_id, reason) != parent.signal_id
    assert (done.timestamp, done.event_time, done.exit_price) == (
        "2024-01-01T00:10:00.123Z",
        T0 + 600_000,
        100.5,
    )
    assert (done.entry_price, done.stop_loss, done.priority) == (
        parent.entry_price,
        parent.stop_loss,
        parent.priority,
    )
    assert done.reasons == [f"{reason} at 100.5"]
    assert decode_signal(encode(done)) == done


def test_bad_exits_raise() -> None:
    parent = entry_signal(long_setup())
    with pytest.raises(
        ValueError, match="exit reason must be one of TP1, TP2, STOP, EXPIRED; got 'LIQUIDATED'"
    ):
        make_exit_signal(parent, "LIQUIDATED", 100.0, T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exit_price must be a finite price > 0; got nan"):
        make_exit_signal(parent, "STOP", math.nan, T0)
    with pytest.raises(ValueError, match="precedes the entry signal"):
        make_exit_signal(parent, "STOP", 99.0, T0 - 1)
    done = make_exit_signal(parent, "STOP", 99.0, T0)
    with pytest.raises(ValueError, match="only an ENTRY can be exited"):
        make_exit_signal(done, "TP1", 101.0, T0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stop_loss": 100.5}, "LONG stop_loss 100.5 must be below entry_price 100.01"),
        ({"stop_loss": 100.01}, "LONG stop_loss 100.01 must be below entry_price"),
        ({"take_profit_1": 99.0}, "LONG targets must satisfy entry < TP1 <= TP2"),
        ({"take_profit_2": 100.2}, "entry < TP1 <= TP2"),
        ({"entry_price": math.nan}, "signal BTCUSDT LONG entry_price must be a finite price > 0; got nan"),
        ({"stop_loss": 0.0}, "stop_loss must be a finite price > 0; got 0.0"),
        ({"take_profit_2": -1.0}, "take_profit_2 must be a finite price > 0"),
        ({"quality_score": 101}, "quality_score must be within [0, 100]"),
        ({"confidence": 1.2}, "confidence must be within [0, 1]; got 1.2"),
        ({"confidence": math.nan}, "confidence must be within [0, 1]; got nan"),
        ({"orderbook_imbalance": math.inf}, "orderbook_imbalance must be within [-1, 1]"),
        ({"volume_intensity": math.nan}, "volume_intensity must be finite and >= 0"),
        ({"suggested_position_size": 0.0}, "suggested_position_size must be > 0"),
        ({"large_trades_count": -1}, "large_trades_count must be >= 0"),
        ({"timestamp": "2024-01-01T00:00:00Z"}, "does not match event_time"),
        ({"signal_id": "nope"}, "badly formed hexadecimal UUID string"),
        ({"exit_reason": "TP1"}, "an ENTRY signal has no exit_reason"),
        ({"signal_type": "EXIT"}, "an EXIT signal needs exit_reason, parent_signal_id and exit_price"),
    ],
)
def test_a_bad_long_signal_is_refused(changes: dict[str, Any], message: str) -> None:
    sig = entry_signal(long_setup())
    with pytest.raises(ValueError) as err:
        msgspec.structs.replace(sig, **changes)
    assert message in str(err.value)


def test_a_short_stop_below_the_entry_is_refused_and_so_is_a_forged_exit_id() -> None:
    sig = entry_signal(short_setup())
    with pytest.raises(ValueError, match=r"SHORT stop_loss 99\.0 must be above entry_price 99\.99"):
        msgspec.structs.replace(sig, stop_loss=99.0)
    with pytest.raises(ValueError, match="SHORT targets must satisfy entry > TP1 >= TP2"):
        msgspec.structs.replace(sig, take_profit_1=100.5)
    done = make_exit_signal(sig, "TP1", sig.take_profit_1, T0 + 1)
    with pytest.raises(ValueError, match=r"EXIT signal_id must be UUIDv5\(parent id, TP1\)"):
        msgspec.structs.replace(done, signal_id=str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"stop_loss": 101.0}, "LONG stop_loss 101.0 must be below entry_price"),
        ({"priority": "URGENT"}, "Invalid enum value 'URGENT' - at `$.priority`"),
        ({"entry_price": "100.01"}, "Expected `float`, got `str`"),
        ({"signal_type": None}, "Expected `str`, got `null`"),
    ],
)
def test_decoding_bad_signal_json_raises_value_error(edit: dict[str, Any], message: str) -> None:
    raw = msgspec.json.decode(encode(entry_signal(long_setup())))
    raw.update(edit)
    with pytest.raises(ValueError) as err:
        decode_signal(msgspec.json.encode(raw))
    assert message in str(err.value)


def test_decoding_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Input data was truncated"):
        decode_signal(b'{"signal_id": ')
    raw = msgspec.json.decode(encode(entry_signal(long_setup())))
    del raw["stop_loss"]
    with pytest.raises(ValueError, match="missing required field `stop_loss`"):
        decode_signal(msgspec.json.encode(raw))


def test_make_entry_signal_refuses_inconsistent_parts() -> None:
    f = long_setup()
    [evaluation] = evaluate(f, S)
    quality = score_features(f)
    plan = plan_trade("LONG", f.best_bid, f.best_ask, 0.8, None, S)
    kwargs: dict[str, Any] = {"confidence": 0.5, "expected_hold_time": "30min"}
    with pytest.raises(ValueError, match="required conditions are not all met"):
        make_entry_signal(f, check(f, S, "SHORT"), quality, plan, **kwargs)
    with pytest.raises(ValueError, match="quality 49 is below 50, not a signal"):
        make_entry_signal(f, evaluation, score_quality(0.1, 1.0, 3, 0), plan, **kwargs)
    short_plan = plan_trade("SHORT", f.best_bid, f.best_ask, 0.8, None, S)
    with pytest.raises(ValueError, match="plan is SHORT but the evaluation is LONG"):
        make_entry_signal(f, evaluation, quality, short_plan, **kwargs)
    with pytest.raises(ValueError, match="different symbols or event times"):
        make_entry_signal(long_setup(event_time=T0 + 1), evaluation, quality, plan, **kwargs)


def test_candidates_record_features_conditions_quality_and_fate() -> None:
    f = long_setup(rsi9=None, bullish_divergence=False)
    [evaluation] = evaluate(f, S)
    quality = score_features(f)
    chosen = make_candidate(f, evaluation, quality, FATE_SIGNAL)
    assert chosen.is_signal and chosen.signal_id == chosen.candidate_id == signal_id_for(
        "BTCUSDT", "LONG", T0
    )
    assert chosen.conditions_unmet == ["rsi_oversold", "bullish_divergence"]
    assert chosen.conditions_met[:4] == [
        "orderbook_imbalance",
        "large_buy_trades",
        "volume_intensity",
        "price_above_vwap",
    ]
    assert decode_candidate(encode(chosen)) == chosen

    rejected = make_candidate(f, evaluation, quality, "correlation", "correlation with ETHUSDT r=0.72")
    assert not rejected.is_signal and rejected.signal_id is None
    back = decode_candidate(encode(rejected))
    assert back == rejected and back.features == f and back.fate_detail == "correlation with ETHUSDT r=0.72"

    low = make_candidate(f, evaluation, score_quality(0.1, 1.0, 3, 0), FATE_LOW_QUALITY, "score 49 < 50")
    assert (low.quality.score, low.quality.tier, low.fate) == (49, None, "low_quality")


def test_bad_candidates_are_refused() -> None:
    f = long_setup()
    [evaluation] = evaluate(f, S)
    quality = score_features(f)
    with pytest.raises(ValueError, match="required conditions are not all met"):
        make_candidate(f, check(f, S, "SHORT"), quality, "low_quality")
    with pytest.raises(ValueError, match="fate is 'signal' or a rejection reason"):
        make_candidate(f, evaluation, quality, "")
    chosen = make_candidate(f, evaluation, quality, FATE_SIGNAL)
    with pytest.raises(ValueError, match="signal_id is set exactly when the fate is 'signal'"):
        msgspec.structs.replace(chosen, signal_id=None)
    with pytest.raises(ValueError, match="features are of another symbol or event time"):
        msgspec.structs.replace(chosen, features=long_setup(symbol="ETHUSDT"))
    raw = msgspec.json.decode(encode(chosen))
    raw["features"]["best_bid"] = 200.0  # crossed
    with pytest.raises(ValueError, match="crossed book"):
        decode_candidate(msgspec.json.encode(raw))
    assert isinstance(decode_candidate(encode(chosen)), Candidate)


def test_propose_builds_the_same_signal_as_the_parts() -> None:
    f = long_setup()
    [evaluation] = evaluate(f, S)
    proposal = propose(f, evaluation, S)
    assert (proposal.fate, proposal.fate_detail, proposal.quality.score) == (FATE_SIGNAL, "", 97)
    assert proposal.signal == entry_signal(f)


def test_propose_uses_the_history_of_the_signal_tier() -> None:
    f = long_setup()
    [evaluation] = evaluate(f, S)
    history: dict[Tier, TierHistory] = {
        "HIGH": TierHistory(tp1_hits=10, signals=20, hold_ms=[20 * 60_000, 30 * 60_000]),
        "LOW": TierHistory(tp1_hits=0, signals=500, hold_ms=[170 * 60_000]),
    }
    sig = propose(f, evaluation, S, history).signal
    assert sig is not None and sig.priority == "HIGH"
    assert sig.confidence == pytest.approx((10 + 20 * 0.97) / 40)
    assert sig.expected_hold_time == "25min"


def test_propose_without_a_signal_says_why() -> None:
    loose = load_settings(
        orderbook_imbalance_threshold=0.1, min_large_trades=1, volume_confirmation_multiplier=0.5
    )
    weak = long_setup(imbalance_top10=0.2, volume_intensity=1.0, large_buys=2)
    [evaluation] = evaluate(weak, loose)
    low = propose(weak, evaluation, loose)
    assert (low.signal, low.fate, low.fate_detail, low.quality.score) == (
        None,
        "low_quality",
        "score 41 < 50",
        41,
    )

    for atr in (None, 0.0):
        f = long_setup(atr_15m=atr)
        [evaluation] = evaluate(f, S)
        result = propose(f, evaluation, S)
        assert (result.signal, result.fate, result.fate_detail) == (None, FATE_NO_PLAN, "ATR(15m) unknown")

    wild = short_setup(best_bid=1.0, best_ask=1.01, price=1.0, vwap_1h=1.1, resistance=None, atr_15m=5.0)
    [evaluation] = evaluate(wild, S)
    no_plan = propose(wild, evaluation, S)
    assert no_plan.signal is None and no_plan.fate == FATE_NO_PLAN
    assert (
        no_plan.fate_detail == "SHORT take_profit_1 -6.5 at entry 1.0 with risk 7.5 is not a positive price"
    )

    with pytest.raises(ValueError, match="required conditions are not all met"):
        propose(weak, check(weak, S, "LONG"), S)
