"""The simulated exchange as ``tapewatch demo`` runs it: more planted episodes, and a market that resumes.

``tapewatch demo`` restarts the simulator on every start while PostgreSQL and Redis keep their data. An
accelerated clock started at "now" again would go back in event time behind the signals already stored
(daily caps, open signals and cooldowns are all in event time). So the simulator writes its clock to a small
JSON file once a second and, on the next start, continues from there: event time only moves forward, and
the new signals (ids are UUIDv5 of symbol, direction and trigger time) never collide with the old ones.

The market resumes too: the same file holds every symbol's mid price and next trade ids
(:mod:`realtime.sim.resume`), and the next run starts each symbol's price where it stopped (a market restarted
at its listing prices would stop out or fill the stored open signals on prices never traded), with random
draws from a seed derived from ``--seed`` and the resume time (the same seed would plant the first run's
episodes again, counted twice in the results). A file with only the clock (an older demo) resumes the clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.sim.faults import FaultConfig
from realtime.sim.resume import MarketResume, capture, resume_seed
from realtime.sim.server import SimExchange

log = logging.getLogger(__name__)

#: How often the simulator's clock is saved (wall seconds).
CLOCK_SAVE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class DemoStart:
    """How a demo simulator starts: its simulated start time, its random seed, the market to go on with."""

    start_ms: int
    seed: int
    market: MarketResume | None = None
    resumed: bool = False


def load_start(clock_file: Path | None, now_ms: int, seed: int) -> DemoStart:
    """A fresh start (``now_ms``, ``seed``) or, with a readable saved clock, a resumed one: at the saved clock
    when it is ahead of ``now_ms``, with a seed derived from ``seed`` and that time and the saved market, if any.

    A missing or unreadable file (first start, or a torn write) starts fresh; a saved market that cannot be
    read resumes the clock only. Both are logged, not fatal."""
    if clock_file is None or not clock_file.exists():
        return DemoStart(now_ms, seed)
    try:
        data = json.loads(clock_file.read_text())
        saved = int(data["now_ms"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable simulator clock file %s (%s)", clock_file, exc)
        return DemoStart(now_ms, seed)
    start = max(now_ms, saved)
    market: MarketResume | None = None
    if "market" in data:
        try:
            market = MarketResume.from_json(data["market"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "the simulator clock file %s has an unreadable market (%s): prices start afresh",
                clock_file,
                exc,
            )
    return DemoStart(start, resume_seed(seed, start), market, resumed=True)


def save_clock(clock_file: Path, now_ms: int, market: MarketResume | None = None) -> None:
    """Write the simulator's clock, and the market to go on with, atomically (a reader never sees half a file)."""
    clock_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = clock_file.with_name(clock_file.name + ".tmp")
    state: dict[str, Any] = {"now_ms": now_ms, "saved_at": int(time.time() * 1000)}
    if market is not None:
        state["market"] = market.to_json()
    tmp.write_text(json.dumps(state))
    os.replace(tmp, clock_file)


async def serve_sim(
    host: str,
    port: int,
    *,
    seed: int,
    symbols: int,
    speed: float,
    episode_rate: float = 1.0,
    clock_file: Path | None = None,
    faults: FaultConfig | None = None,
) -> None:
    """Run the simulated exchange until cancelled; with ``clock_file``, resume its clock and market and keep
    them saved."""
    start = load_start(clock_file, int(time.time() * 1000), seed)
    if start.resumed:
        log.info(
            "resuming the simulated market at %d (seed %d), %d symbols at their saved prices",
            start.start_ms,
            start.seed,
            len(start.market.symbols) if start.market is not None else 0,
        )
    async with SimExchange(
        host,
        port,
        start.seed,
        symbols,
        speed,
        start.start_ms,
        faults,
        episode_rate_scale=episode_rate,
        resume=start.market,
    ) as sim:
        log.info(
            "simulated Binance USD-M: REST %s, websockets %s and %s (speed x%g, episodes x%g)",
            sim.rest_url,
            sim.ws_public_url,
            sim.ws_market_url,
            speed,
            episode_rate,
        )
        try:
            while True:
                if clock_file is not None:
                    save_clock(clock_file, sim.venue.now_ms, capture(sim.venue))
                await asyncio.sleep(CLOCK_SAVE_INTERVAL)
        finally:
            if clock_file is not None:
                save_clock(clock_file, sim.venue.now_ms, capture(sim.venue))
