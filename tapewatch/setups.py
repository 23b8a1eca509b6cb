"""The engine's memory of setups: when a setup that persists deserves another candidate.

A setup (a symbol and a direction) lasts while its required conditions hold, and until they have been unmet
for ``setup_reset_seconds``, so a setup flickering around a threshold stays one setup. Its first evaluation
makes a candidate. While it persists, a new one is made only when it is worth another look:

- its quality tier rises above that of its last candidate (first seen LOW or below the LOW minimum, it grows
  to MEDIUM or HIGH) — at a later millisecond than that candidate: a candidate's id is UUIDv5 of (symbol,
  direction, event time), so a rise within the same millisecond (several large trades of one sweep stamped
  alike) waits for the setup's next event, else two rows would share one id and the second (perhaps the
  signal) would be lost to the first;
- its last candidate was rejected by a transient rule of the risk gate (:data:`TRANSIENT_RULES`: paused, a
  daily cap, concurrency, correlation, locally or in the shared gate, or the shared gate being unreachable)
  and the gate would now pass — a re-check, read-only, so a setup still held back makes no row and uses up
  nothing (a cooldown's count included). When: every :data:`RECHECK_MS` of event time; a daily cap only
  from the next UTC day (the day's counts only grow) — except a tier's own cap when the setup's tier has
  changed since (it fell, say from HIGH to MEDIUM, and MEDIUM's cap may have room): then every
  :data:`RECHECK_MS`; after the shared gate (the ledger in PostgreSQL) held
  it back or could not be reached, not before :data:`RECHECK_SHARED_MS` (each such re-check is a
  transaction under the ledger's lock, on the event loop).

Nothing else makes another row: a setup whose candidate became a signal stays one signal, and one that keeps
failing the same way (a cooldown, no trade plan, the same tier) is stored once. Pure; event time only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tapewatch.quality import Tier
from tapewatch.risk import DAY_MS, FATE_SHARED_GATE_UNAVAILABLE, RULES
from tapewatch.rules import Direction
from tapewatch.signal import FATE_SIGNAL

#: Risk gate fates whose rejection may lift while the setup persists (the cooldown is not one: it is used up
#: by candidates, and a re-check must not use it up).
TRANSIENT_RULES: frozenset[str] = (frozenset(RULES) - {"cooldown"}) | {FATE_SHARED_GATE_UNAVAILABLE}
#: Event time between two re-checks of a setup held back by a transient rule (each costs a gate).
RECHECK_MS = 1_000
#: Event time before the next re-check of a setup the shared gate held back or could not judge.
RECHECK_SHARED_MS = 30_000
_DAILY_CAPS = frozenset({"tier_daily_cap", "daily_cap"})

_RANK: dict[Tier | None, int] = {None: 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}

#: What to do with a setup whose conditions hold now: ``new`` (a candidate), ``rise`` (a candidate: its tier
#: rose), ``recheck`` (ask the gate, read-only; a candidate only if it passes), ``skip`` (nothing).
Verdict = Literal["new", "rise", "recheck", "skip"]


@dataclass(slots=True)
class Setup:
    """One persisting setup: when its conditions last held, its last candidate's tier and whether that one
    was held back by a transient rule (then the event time from which it may be re-checked)."""

    last_held: int
    tier: Tier | None = None
    done: bool = False  # its candidate became a signal
    held_back: bool = False
    next_check: int = 0
    fate: str | None = None  # its last candidate's fate
    made_at: int | None = None  # its last candidate's event time (its id's)
    fall_check: int = 0  # held back by its tier's cap: when its changed tier may be re-checked next


class Setups:
    """Every (symbol, direction) setup the engine has seen, by key."""

    def __init__(self, reset_ms: int) -> None:
        self.reset_ms = reset_ms
        self._setups: dict[tuple[str, Direction], Setup] = {}

    def on_held(self, symbol: str, direction: Direction, now: int, tier: Tier | None) -> Verdict:
        """The setup's conditions hold at event time ``now`` with quality ``tier``: what to do with it."""
        key = (symbol, direction)
        setup = self._setups.get(key)
        if setup is None or now - setup.last_held > self.reset_ms:
            self._setups[key] = Setup(last_held=now)
            return "new"
        setup.last_held = now
        if setup.done or now == setup.made_at:  # one candidate id per millisecond
            return "skip"
        if _RANK[tier] > _RANK[setup.tier]:
            return "rise"
        if setup.held_back and now >= setup.next_check:
            setup.next_check = now + RECHECK_MS
            return "recheck"
        if setup.fate == "tier_daily_cap" and tier != setup.tier and now >= setup.fall_check:
            # its tier fell since its own tier's cap held it back: the lower tier's cap may have room
            setup.fall_check = now + RECHECK_MS
            return "recheck"
        return "skip"

    def held_by_shared_gate(self, symbol: str, direction: Direction, now: int) -> None:
        """A re-check at ``now`` passed the local gate but the shared gate held the setup back (or could not be
        reached): the next re-check waits :data:`RECHECK_SHARED_MS`."""
        setup = self._setups[(symbol, direction)]
        setup.next_check = max(setup.next_check, now + RECHECK_SHARED_MS)

    def judged(
        self, symbol: str, direction: Direction, now: int, tier: Tier | None, fate: str | None
    ) -> None:
        """Record the candidate made for the setup at ``now``: its tier and fate (None when no row was made,
        e.g. the rules disagreed with the cheap test)."""
        setup = self._setups[(symbol, direction)]
        setup.tier = tier
        setup.fate, setup.made_at, setup.fall_check = fate, now, now + RECHECK_MS
        setup.done = fate == FATE_SIGNAL
        setup.held_back = fate in TRANSIENT_RULES
        if fate in _DAILY_CAPS:
            setup.next_check = (now // DAY_MS + 1) * DAY_MS  # the UTC day's counts only grow
        elif fate == FATE_SHARED_GATE_UNAVAILABLE:
            setup.next_check = now + RECHECK_SHARED_MS
        else:
            setup.next_check = now + RECHECK_MS

    def __len__(self) -> int:
        return len(self._setups)
