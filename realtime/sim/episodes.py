"""Planted order-flow episodes: the ground truth the signal engine is measured against.

An episode on one symbol lasts a few minutes. During it the book leans one way (top-10 quantity
imbalance well beyond 0.3), takers trade that way harder (a volume burst of several times the usual
5-minute quote volume) and at least three single-price aggressive trades of $50k or more hit the
book. That taker pressure pushes the fair price its way while the episode lasts: a steady drift of
:data:`PUSH_MIN` to :data:`PUSH_MAX` times the typical 15-minute move (``daily_vol / sqrt(96)``) spread
over the episode, on top of the random walk, for every episode alike, so the price's side of its VWAP
tells nothing about ``moved``. When it ends the fair price either moves on in that direction
(``moved``: 2-4 typical 15-minute moves in 5-10 minutes) or the pressure fails (not ``moved``): the
price gives back :data:`GIVE_BACK` of the push over those minutes, as a push that found no follow-through
is partly absorbed, and then stalls.

The push size is drawn from a stream of its own (see :class:`realtime.sim.model.Market`), so the episodes'
times, directions and outcomes for a seed are the ones drawn before pushes existed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from realtime.sim.draws import Draws

Direction = Literal["LONG", "SHORT"]

LARGE_TRADE_QUOTE = 50_000.0
MIN_DURATION_MS = 180_000
MAX_DURATION_MS = 360_000
#: How much harder takers trade during an episode (volume burst well above 2x).
RATE_BOOST = 3.5
SIZE_BOOST = 1.3
#: Quantity factors for makers on the favoured and the opposite side (imbalance about 0.5).
FAVOURED_QTY = 2.6
OPPOSITE_QTY = 0.45
#: The push during an episode, in typical 15-minute moves (``daily_vol / sqrt(96)``), drawn uniformly.
PUSH_MIN = 0.5
PUSH_MAX = 1.0
#: The share of the push a not-moved episode gives back after its end.
GIVE_BACK = 0.5


@dataclass(frozen=True, slots=True)
class Episode:
    """One planted episode; ``sign`` is +1 for LONG, -1 for SHORT."""

    symbol: str
    direction: Direction
    start_ms: int
    end_ms: int
    moved: bool
    move_fraction: float  # signed move of the fair price after ``end_ms`` (0 when not moved)
    move_end_ms: int
    large_trade_times: tuple[int, ...]
    push_fraction: float  # signed move of the fair price from ``start_ms`` to ``end_ms`` (taker pressure)

    @property
    def sign(self) -> int:
        return 1 if self.direction == "LONG" else -1

    def ground_truth(self) -> dict[str, Any]:
        """The public record: ``{symbol, direction, start_ms, end_ms, moved}``."""
        return {
            "symbol": self.symbol,
            "direction": self.direction,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "moved": self.moved,
        }


def plan_episode(draws: Draws, symbol: str, start_ms: int, daily_vol: float, push_draws: Draws) -> Episode:
    """Draw one episode starting at ``start_ms``: direction, length, large-trade times and the move after
    from ``draws``, the push during it from ``push_draws``."""
    direction: Direction = "LONG" if draws.u() < 0.5 else "SHORT"
    duration = MIN_DURATION_MS + int(draws.u() * (MAX_DURATION_MS - MIN_DURATION_MS))
    end_ms = start_ms + duration
    moved = draws.u() < 0.65
    # A move of 2-4 times the typical 15-minute range, done in 5-10 minutes.
    typical_15m = daily_vol / (96**0.5)
    move = (2.0 + 2.0 * draws.u()) * typical_15m if moved else 0.0
    move_end = end_ms + 300_000 + int(draws.u() * 300_000)
    n_large = 4 + draws.below(4)
    # Spread over the episode, the first one early enough to matter for a 5-minute window.
    times = sorted(start_ms + 5_000 + int(draws.u() * (duration - 10_000)) for _ in range(n_large))
    sign = 1 if direction == "LONG" else -1
    push = (PUSH_MIN + (PUSH_MAX - PUSH_MIN) * push_draws.u()) * typical_15m
    return Episode(
        symbol, direction, start_ms, end_ms, moved, sign * move, move_end, tuple(times), sign * push
    )


def ground_truth_json(episodes: Iterable[Episode]) -> str:
    """The ``episodes.json`` text: episodes ordered by start time then symbol, one per line."""
    rows = sorted((e.ground_truth() for e in episodes), key=lambda r: (r["start_ms"], r["symbol"]))
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join("  " + json.dumps(r, separators=(", ", ": ")) for r in rows) + "\n]\n"
