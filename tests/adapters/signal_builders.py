"""Real signals, candidates and outcomes for the storage, outbox and notifier tests, made by the pure pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tapewatch.outcome import Outcome, OutcomeParams, OutcomeTracker
from tapewatch.rules import check
from tapewatch.settings import load_settings
from tapewatch.signal import Candidate, ExitReason, Signal, make_candidate, make_exit_signal, propose
from tapewatch.signal_follow import open_signal
from tests.tapewatch.feature_builders import T0, long_setup, short_setup

S = load_settings()
MINUTE = 60_000


def entry(symbol: str = "BTCUSDT", t: int = T0, *, short: bool = False, **changes: Any) -> Signal:
    """The ENTRY signal the engine makes of a clean setup on ``symbol`` at event time ``t``."""
    features = (short_setup if short else long_setup)(symbol=symbol, event_time=t, **changes)
    proposal = propose(features, check(features, S, "SHORT" if short else "LONG"), S)
    assert proposal.signal is not None
    return proposal.signal


def entries(n: int, *, symbol: str = "BTCUSDT", start: int = T0, step: int = 1000) -> list[Signal]:
    """``n`` ENTRY signals on ``symbol``, ``step`` ms apart."""
    return [entry(symbol, start + i * step) for i in range(n)]


def candidate(
    symbol: str = "BTCUSDT", t: int = T0, fate: str = "signal", *, short: bool = False, **changes: Any
) -> Candidate:
    """The candidate record of a clean setup, with ``fate`` ("signal" or a rejection code) and the trade plan
    its signal has or would have had, as the engine stores it."""
    features = (short_setup if short else long_setup)(symbol=symbol, event_time=t, **changes)
    proposal = propose(features, check(features, S, "SHORT" if short else "LONG"), S)
    detail = "" if fate == "signal" else f"rejected: {fate}"
    return make_candidate(
        features,
        check(features, S, "SHORT" if short else "LONG"),
        proposal.quality,
        fate,
        detail,
        plan=proposal.plan,
    )


def exit_of(signal: Signal, reason: ExitReason, *, after: int = 5 * MINUTE) -> Signal:
    """The EXIT signal of ``signal`` for ``reason``, ``after`` ms later, at its target or stop price."""
    price = {
        "TP1": signal.take_profit_1,
        "TP2": signal.take_profit_2,
        "STOP": signal.stop_loss,
        "EXPIRED": signal.entry_price,
    }[reason]
    return make_exit_signal(signal, reason, price, signal.event_time + after)


def outcome_of(signal: Signal, path: Sequence[tuple[int, float]]) -> Outcome:
    """The live outcome of ``signal`` after trades ``path`` of (ms after the signal, price)."""
    tracker = OutcomeTracker(open_signal(signal), OutcomeParams.from_settings(S))
    for dt, price in path:
        tracker.on_trade(signal.event_time + dt, price)
    return tracker.outcome()


def win(signal: Signal) -> Outcome:
    """Triggered at once, TP1 after 2 min, TP2 after 10 min."""
    return outcome_of(
        signal,
        [(0, signal.entry_price), (2 * MINUTE, signal.take_profit_1), (10 * MINUTE, signal.take_profit_2)],
    )


def loss(signal: Signal, *, after: int = 3 * MINUTE) -> Outcome:
    """Triggered at once, stopped ``after`` ms later."""
    return outcome_of(signal, [(0, signal.entry_price), (after, signal.stop_loss)])


def triggered(signal: Signal) -> Outcome:
    """Triggered at once and still open."""
    return outcome_of(signal, [(0, signal.entry_price), (1000, signal.entry_price)])


__all__ = [
    "MINUTE",
    "T0",
    "candidate",
    "entries",
    "entry",
    "exit_of",
    "loss",
    "outcome_of",
    "triggered",
    "win",
]
