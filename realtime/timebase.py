"""Time and randomness as one injectable value, so transport tests run fast and deterministically.

Live code uses :data:`REAL_TIME`. A test passes its own :class:`Timebase` (a fake clock, a sleep that
advances it, a fixed random) to any component that waits, times out or jitters.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Timebase:
    """Where a component reads time and randomness.

    ``monotonic`` (seconds) measures intervals: pacing, staleness, connection age. ``wall_ms`` stamps
    received frames (the capture's ``recv``). ``sleep`` waits. ``random`` returns a float in [0, 1).
    """

    monotonic: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = _wall_ms
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = random.random


REAL_TIME = Timebase()
