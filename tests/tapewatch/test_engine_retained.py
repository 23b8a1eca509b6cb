"""A symbol retained for its open signals (it left the universe: the service let its depth stream go and captured
a ``control:depth_restart`` with reason ``unsubscribed``) is followed but never evaluated, whatever its book
shows (the backup feed may still poll it), until its depth stream starts again (it rejoined the universe)."""

from __future__ import annotations

from tapewatch.engine import DEPTH_UNSUBSCRIBED
from tapewatch.events import CONTROL_DEPTH_RESTART, DepthRestart
from tapewatch.streams import Kind

from .engine_rig import SYM, Rig

T = 1_700_000_100_000


def restart(rig: Rig, reason: str) -> None:
    rig.feed(Kind.CONTROL, CONTROL_DEPTH_RESTART, DepthRestart(SYM, reason))


def test_a_retained_symbol_makes_no_candidate_until_its_depth_stream_starts_again() -> None:
    rig = Rig()
    rig.context()
    restart(rig, DEPTH_UNSUBSCRIBED)
    assert rig.engine.is_retained(SYM)
    rig.long_setup(T)  # a synced book (a polled snapshot) and a setup's tape
    assert rig.candidates() == [] and SYM not in rig.engine.per_symbol
    assert rig.engine.counters["evaluations"] == 0
    restart(rig, "subscribe")  # back in the universe: its depth stream started
    assert not rig.engine.is_retained(SYM)
    rig.long_setup(T + 1_000)
    assert [(c.symbol, c.fate) for c in rig.candidates()] == [(SYM, "signal")]
    assert rig.engine.open_symbols() == {SYM: [rig.signals()[0].signal_id]}
