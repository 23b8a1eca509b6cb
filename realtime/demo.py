"""The simulated exchange as ``tapewatch demo`` runs it: more planted episodes, and a clock that resumes.

``tapewatch demo`` restarts the simulator on every start while PostgreSQL and Redis keep their data. An
accelerated clock started at "now" again would go back in event time behind the signals already stored
(daily caps, open signals and cooldowns are all in event time). So the simulator writes its clock to a small
JSON file once a second and, on the next start, continues from there: event time only moves forward, and
the new signals (ids are UUIDv5 of symbol, direction and trigger time) never collide with the old ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from realtime.sim.faults import FaultConfig
from realtime.sim.server import SimExchange

log = logging.getLogger(__name__)

#: How often the simulator's clock is saved (wall seconds).
CLOCK_SAVE_INTERVAL = 1.0


def resume_point(clock_file: Path | None, now_ms: int) -> int:
    """The simulated start time: ``now_ms``, or the saved clock when it is ahead of ``now_ms``.

    A missing or unreadable file (first start, or a torn write) starts at ``now_ms``; it is logged, not fatal."""
    if clock_file is None or not clock_file.exists():
        return now_ms
    try:
        saved = int(json.loads(clock_file.read_text())["now_ms"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable simulator clock file %s (%s)", clock_file, exc)
        return now_ms
    return max(now_ms, saved)


def save_clock(clock_file: Path, now_ms: int) -> None:
    """Write the simulator's clock atomically (a reader never sees half a file)."""
    clock_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = clock_file.with_name(clock_file.name + ".tmp")
    tmp.write_text(json.dumps({"now_ms": now_ms, "saved_at": int(time.time() * 1000)}))
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
    """Run the simulated exchange until cancelled; with ``clock_file``, resume its clock and keep it saved."""
    start_ms = resume_point(clock_file, int(time.time() * 1000))
    async with SimExchange(
        host, port, seed, symbols, speed, start_ms, faults, episode_rate_scale=episode_rate
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
                    save_clock(clock_file, sim.venue.now_ms)
                await asyncio.sleep(CLOCK_SAVE_INTERVAL)
        finally:
            if clock_file is not None:
                save_clock(clock_file, sim.venue.now_ms)
