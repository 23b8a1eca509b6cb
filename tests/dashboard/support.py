"""Seeded data and a backend on this test's real PostgreSQL and Redis, for the dashboard tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing

from dashboard import backend as be
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.live_view import open_signal_view
from tapewatch.settings import load_settings
from tapewatch.signal import Signal
from tests.adapters.signal_builders import MINUTE, T0, candidate, entry, loss, triggered, win

DAY = 86_400_000
#: "Now" of the seeded world: a day after the first seeded signal.
NOW_MS = T0 + DAY


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_url(scheme: str) -> str:
    """A URL of a server that is not there (a port nobody listens on)."""
    port = free_port()
    if scheme == "redis":
        return f"redis://127.0.0.1:{port}/0"
    return f"postgresql://tapewatch@127.0.0.1:{port}/none"


def make_backend(database_url: str, redis: RedisState, *, now_ms: int = NOW_MS) -> be.Backend:
    settings = load_settings()
    return be.Backend(
        settings=settings,
        db=Database(database_url, connect_timeout=2),
        redis=redis,
        dagster=be.DagsterLauncher("127.0.0.1", free_port(), timeout=2),
        clock=lambda: now_ms / 1000,
    )


def seed_signals(db: Database) -> dict[str, Signal]:
    """Three finished signals (two wins on BTCUSDT, a loss on ETHUSDT), one open on SOLUSDT, candidates of
    two fates. Returns them by name."""
    store = SignalStore(db)
    made = {
        "win1": entry("BTCUSDT", T0),
        "win2": entry("BTCUSDT", T0 + 30 * MINUTE),
        "loss": entry("ETHUSDT", T0 + 60 * MINUTE, short=True),
        "open": entry("SOLUSDT", T0 + 90 * MINUTE),
    }
    store.save_signals(list(made.values()))
    store.save_outcome(win(made["win1"]))
    store.save_outcome(win(made["win2"]))
    store.save_outcome(loss(made["loss"]))
    store.save_outcome(triggered(made["open"]))
    store.save_candidates(
        [
            candidate("BTCUSDT", T0, "signal"),
            candidate("ADAUSDT", T0 + 5 * MINUTE, "cooldown"),
            candidate("ADAUSDT", T0 + 6 * MINUTE, "correlation"),
        ]
    )
    return made


def publish_open(redis_client: object, keys: object, signal: Signal) -> None:
    """Write ``signal`` into the open-signals hash as the realtime service does (its live outcome view)."""
    import msgspec

    outcome = triggered(signal)
    view = open_signal_view(signal, outcome, (signal.entry_price + signal.take_profit_1) / 2, 0.0005, NOW_MS)
    redis_client.hset(keys.open_signals, signal.signal_id, msgspec.json.encode(view).decode())  # type: ignore[attr-defined]


def many_entries(n: int) -> Iterator[Signal]:
    for i in range(n):
        yield entry(["BTCUSDT", "ETHUSDT", "SOLUSDT"][i % 3], T0 + i * 1000, short=bool(i % 2))
