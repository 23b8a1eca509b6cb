"""How the signal engine is rebuilt after a restart: :class:`EngineState` (the tier history, the open signals
with their outcomes, the daily counts and the cooldowns), as the realtime service reads it from PostgreSQL and
captures it in its ``control:engine_start`` line, so a replay rebuilds the same engine.

A mixin of :class:`tapewatch.engine.SignalEngine` (kept apart to keep that module small); pure like it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from tapewatch.outcome import Outcome
from tapewatch.quality import Tier
from tapewatch.risk import DAY_MS, RiskState
from tapewatch.risk import Candidate as RiskCandidate
from tapewatch.sharding import Shard
from tapewatch.signal import Signal, TierHistory
from tapewatch.signal_follow import HeldSignal, OpenSignals


class OpenEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A signal still open when the engine was rebuilt, with its outcome so far."""

    signal: Signal
    outcome: Outcome | None = None


class EngineState(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine is rebuilt with after a restart (:meth:`SignalEngine.restore`): the tier history, the
    signals still open, the signals counted per UTC day of event time (the daily caps) and the cooldowns left
    per symbol. Read from PostgreSQL by the realtime service and captured in its ``control:engine_start``
    line, so a replay rebuilds the same engine."""

    history: dict[Tier, TierHistory] = {}
    open: list[OpenEntry] = []
    day_counts: dict[int, dict[Tier, int]] = {}
    cooldowns: dict[str, int] = {}


class EngineRestore:
    """The restart methods of :class:`~tapewatch.engine.SignalEngine`."""

    history: dict[Tier, TierHistory]
    open: dict[str, HeldSignal]
    shard: Shard
    risk: RiskState
    _following: OpenSignals

    def restore(self, state: EngineState) -> None:
        """Rebuild after a restart from ``state`` (the live service reads it from PostgreSQL, a replay from
        the capture): the tier history is laid over, then :meth:`resume`."""
        self.history.update(state.history)
        self.resume(
            ((e.signal, e.outcome) for e in state.open),
            day_counts=state.day_counts,
            cooldowns=state.cooldowns,
        )

    def resume(
        self,
        open_signals: Iterable[tuple[Signal, Outcome | None]],
        *,
        day_counts: Mapping[int, Mapping[Tier, int]] = {},
        cooldowns: Mapping[str, int] = {},
    ) -> None:
        """Rebuild after a restart from what was stored: the signals still open (with their outcome so far),
        the signals already counted per UTC day (the daily caps) and the cooldowns left per symbol.

        Open signals of symbols another shard owns are left to it (their reservations in the shared gate stay
        as they are; this engine's own are already reserved, and reserving is idempotent)."""
        for signal, outcome in open_signals:
            if signal.signal_type != "ENTRY" or signal.signal_id in self.open:
                continue
            if not self.shard.owns(signal.symbol):
                continue
            self._following.add(signal, outcome)
            self.risk.open(_risk_candidate(signal))
        for day, counts in day_counts.items():
            for tier, n in counts.items():
                for i in range(n):
                    self.risk.count(
                        RiskCandidate(
                            signal_id=f"restored-{day}-{tier}-{i}",
                            symbol="RESTORED",
                            direction="LONG",
                            tier=tier,
                            event_time=day * DAY_MS,
                        )
                    )
        for symbol, left in cooldowns.items():
            if left > 0:
                self.risk.start_cooldown(symbol, left)


def _risk_candidate(signal: Signal) -> RiskCandidate:
    return RiskCandidate(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        direction=signal.direction,
        tier=signal.priority,
        event_time=signal.event_time,
    )
