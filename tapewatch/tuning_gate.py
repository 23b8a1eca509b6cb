"""The risk gate re-run over re-scored candidates, pure: which of the candidates a parameter set keeps would
have become signals under it.

The live gate (:func:`tapewatch.risk.gate`) judges each candidate against the signals open at the time, the
day's counts and the cooldowns, and those depend on which earlier candidates became signals. Under another
parameter set the earlier signals differ, so monthly tuning walks the candidates a set keeps in event time order
through the same gate with a fresh :class:`~tapewatch.risk.RiskState`: each admitted one opens (and is counted on
its UTC day) until its stored outcome's end, when it closes, a stop-out starting the symbol's cooldown; a
candidate that came while signaling was paused is turned away as it was. Ties in event time go in symbol and
direction order.

One rule is approximated: **correlation** between two symbols needs their 1-minute returns at the time, which
tuning does not have, so only an open signal on the same symbol and direction counts (as r = 1, as live); other
pairs are "unknown" and pass (the live gate also passes an unknown correlation). The shared gate of a sharded run
(one ledger over every shard) is the same rules over the same candidates, so it needs no pass of its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from tapewatch.risk import Candidate, RiskParams, RiskState, gate
from tapewatch.tuning_score import Gate, View


def _unknown(a: str, b: str) -> float | None:
    return None


def admitted(views: Sequence[View], params: RiskParams) -> list[View]:
    """The views (kept by a set, tiered by it) the risk gate admits, walked in event time order (see the
    module). A view whose sample has no end time (stored before outcomes had one) is admitted and held open to
    the end of the window: it still counts against the caps, as an open signal did."""
    state = RiskState()
    ends: list[
        tuple[float, int, str, str, bool]
    ] = []  # (end time, order, id, symbol, stopped out) of the open
    out: list[View] = []
    ordered = sorted(views, key=lambda v: (v.sample.event_time, v.sample.symbol, v.sample.direction))
    for order, view in enumerate(ordered):
        s = view.sample
        while ends and ends[0][0] <= s.event_time:
            _, _, ident, symbol, stopped_out = heapq.heappop(ends)
            state.close(ident, symbol, stopped_out, params)
        if view.tier is None:  # a set keeps only tiered views; nothing to admit
            continue
        ident = s.key or f"#{order}"  # hand-made samples may have no id or symbol: each its own
        symbol = s.symbol or ident
        state.paused = s.paused
        candidate = Candidate(
            signal_id=ident, symbol=symbol, direction=s.direction, tier=view.tier, event_time=s.event_time
        )
        decision = gate(candidate, state, params, _unknown)
        state.record(decision)
        if decision.passed:
            out.append(view)
            end = float("inf") if s.end_time is None else s.end_time
            heapq.heappush(ends, (end, order, ident, symbol, s.stopped_out))
    return out


def risk_gate(params: RiskParams) -> Gate:
    """The :data:`~tapewatch.tuning_score.Gate` of ``params`` for :func:`tapewatch.tuning_score.score`."""
    return lambda views: admitted(views, params)
