"""Seeded data and a backend on this test's real PostgreSQL and Redis, for the dashboard tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO

import msgspec
import pytest

from dashboard import backend as be
from tapewatch.adapters.dagster_runs import DagsterRuns
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.live_view import open_signal_view
from tapewatch.outcome import Outcome, OutcomeState
from tapewatch.settings import load_settings
from tapewatch.signal import Signal
from tapewatch.signal_follow import open_signal
from tests.adapters.signal_builders import MINUTE, T0, candidate, entry, loss, triggered, win
from tests.local_http import LocalHttpServer, QuietHandler

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
        dagster=DagsterRuns("127.0.0.1", free_port(), timeout=2),
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


def finished(
    symbol: str,
    t: int,
    pnl_r: float,
    *,
    tier: str = "HIGH",
    quality: int = 80,
    confidence: float = 0.6,
    triggered: bool = True,
    tp1: bool = False,
    hold_ms: int = 10 * MINUTE,
) -> tuple[Signal, Outcome]:
    """A real ENTRY signal on ``symbol`` created at ``t`` with the tier, quality and confidence a test needs,
    and its finished outcome (untriggered: expired with 0 R)."""
    signal = msgspec.structs.replace(
        entry(symbol, t), priority=tier, quality_score=quality, confidence=confidence
    )
    if not triggered:
        outcome = Outcome(
            signal=open_signal(signal), state=OutcomeState.EXPIRED, as_of=t + hold_ms, exit_time=t + hold_ms
        )
        return signal, outcome
    return signal, Outcome(
        signal=open_signal(signal),
        state=OutcomeState.TP2 if pnl_r > 0 else OutcomeState.STOPPED,
        as_of=t + 1000 + hold_ms,
        trigger_time=t + 1000,
        tp1_time=t + 2 * MINUTE if tp1 else None,
        exit_time=t + 1000 + hold_ms,
        pnl_r=pnl_r,
        pnl_pct=pnl_r * 0.5,
    )


def store_finished(db: Database, made: list[tuple[Signal, Outcome]]) -> list[Outcome]:
    """Store the signals and outcomes made by :func:`finished`; the outcomes."""
    store = SignalStore(db)
    store.save_signals([signal for signal, _ in made])
    for _, outcome in made:
        store.save_outcome(outcome)
    return [outcome for _, outcome in made]


def seed_rescan(db: Database) -> None:
    """A universe rescan of two symbols: BTCUSDT selected, DOGEUSDT refused for its volume (run ``run-1``)."""
    from tapewatch.adapters import universe_store
    from tapewatch.universe import Minimums, SymbolStats, select_universe

    stats = [
        SymbolStats(
            "BTCUSDT",
            quote_volume_24h=9e9,
            open_interest_usd=5e9,
            spread=0.00001,
            depth_1pct_usd=5e7,
            atr_ratio=0.01,
            trades_per_second=50,
            last_price=60000,
        ),
        SymbolStats(
            "DOGEUSDT",
            quote_volume_24h=1e6,
            open_interest_usd=1e6,
            spread=0.00001,
            depth_1pct_usd=1e5,
            atr_ratio=0.01,
            trades_per_second=5,
            last_price=0.1,
        ),
    ]
    selection = select_universe(
        stats, 30, Minimums(min_24h_volume=5e7, min_open_interest=1e7, max_spread=0.0002)
    )
    universe_store.save_rescan(db, selection.decisions, run_id="run-1")


def seed_daily_report(db: Database, *, markdown: str, html: str) -> None:
    """The daily report of 2024-01-01 (3 signals) with this ``markdown`` and ``html``."""
    from datetime import date

    from tapewatch.adapters.performance_store import StoredReport, save_report

    save_report(
        db,
        StoredReport(
            kind="daily",
            period="2024-01-01",
            period_start=date(2024, 1, 1),
            period_end=date(2024, 1, 2),
            markdown_path="reports/daily/2024-01-01.md",
            html_path="reports/daily/2024-01-01.html",
            markdown=markdown,
            html=html,
            signals=3,
        ),
    )


def publish_open(redis_client: object, keys: object, signal: Signal) -> None:
    """Write ``signal`` into the open-signals hash as the realtime service does (its live outcome view)."""
    outcome = triggered(signal)
    view = open_signal_view(signal, outcome, (signal.entry_price + signal.take_profit_1) / 2, 0.0005, NOW_MS)
    redis_client.hset(keys.open_signals, signal.signal_id, msgspec.json.encode(view).decode())  # type: ignore[attr-defined]


def many_entries(n: int) -> Iterator[Signal]:
    for i in range(n):
        yield entry(["BTCUSDT", "ETHUSDT", "SOLUSDT"][i % 3], T0 + i * 1000, short=bool(i % 2))


class DagsterStatusServer(LocalHttpServer):
    """A real HTTP server on 127.0.0.1 answering Dagster's GraphQL run-status query with scripted statuses
    (the last repeats; ``None`` answers 503, a webserver that is down), counting the requests it got."""

    def __init__(self, statuses: list[str | None]) -> None:
        self.statuses = statuses
        self.requests = 0
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = server.statuses[min(server.requests, len(server.statuses) - 1)]
                server.requests += 1
                if status is None:
                    server.reply(self, 503, b'{"error": "down"}', {})
                    return
                answer = {"data": {"pipelineRunOrError": {"__typename": "Run", "status": status}}}
                server.reply(self, 200, json.dumps(answer).encode(), {})

        super().__init__(Handler, name="dagster-status")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


ROOT = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    """Whether the server at ``url`` answers HTTP below 500 (401 included: up behind its login)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


@contextmanager
def dashboard_process(
    database_url: str, redis_url: str, keys: Keyspace, **env: str
) -> Iterator[tuple[str, IO[bytes]]]:
    """`tapewatch dashboard` as a real process on this test's PostgreSQL and Redis (plus ``env``, e.g. a
    password), on a free port: its URL once it answers, and its log (stdout and stderr); stopped at the end."""
    port = free_port()
    environ = {
        **os.environ,
        "TAPEWATCH_DATABASE_URL": database_url,
        "TAPEWATCH_REDIS_URL": redis_url,
        "TAPEWATCH_REDIS_PREFIX": keys.prefix,
        "TAPEWATCH_DAGSTER_PORT": str(free_port()),
        **env,
    }
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapewatch.cli", "dashboard", "--port", str(port)],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if _answers(url + "/_dash-layout"):
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"the dashboard did not start: {log.read().decode()[-3000:]}")
                time.sleep(0.3)
            yield url, log
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
