"""Dashboard benchmark: with 100,000 signals stored, how long does each page's first render take on the server?

Creates a database of its own on the configured PostgreSQL (TAPEWATCH_DATABASE_URL, else the embedded server
under the var dir), migrates it, seeds N ENTRY signals with finished outcomes and N candidates, then times
what each page computes for its first render (the callbacks that fire when the page opens: for Live the
open signals, the symbol panel and the first 100-row block of the server-paged history, plus a sorted and a
filtered block). Everything it created is dropped at the end, also on Ctrl-C.

    .venv/bin/python bench/dashboard.py [--signals 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard import backend as be
from dashboard.app import create_app
from tapewatch.adapters.dagster_runs import DagsterRuns
from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import ensure_database, ensure_redis
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.settings import load_settings

DAY_MS = 86_400_000
SYMBOLS = [f"SYM{i:03d}USDT" for i in range(200)]

# One statement each: the rows are generated inside PostgreSQL (fast), with realistic spreads of symbols,
# tiers, directions, quality, confidence, states and R.
SEED_SIGNALS = """
INSERT INTO signals (signal_id, symbol, direction, signal_type, priority, "timestamp", entry_price, stop_loss,
    take_profit_1, take_profit_2, quality_score, orderbook_imbalance, large_trades_count, volume_intensity,
    confidence, suggested_position_size, risk_reward_ratio, expected_hold_time, event_time, payload)
SELECT md5('bench' || i)::uuid, 'SYM' || lpad((i %% 200)::text, 3, '0') || 'USDT',
    CASE WHEN i %% 2 = 0 THEN 'LONG' ELSE 'SHORT' END, 'ENTRY',
    CASE WHEN i %% 5 = 0 THEN 'HIGH' WHEN i %% 5 < 3 THEN 'MEDIUM' ELSE 'LOW' END,
    to_timestamp((%(start)s + i * %(step)s) / 1000.0),
    100, CASE WHEN i %% 2 = 0 THEN 99 ELSE 101 END, CASE WHEN i %% 2 = 0 THEN 101 ELSE 99 END,
    CASE WHEN i %% 2 = 0 THEN 102 ELSE 98 END,
    50 + (i * 7) %% 51, 0.3 + (i %% 10) / 50.0, 3 + i %% 5, 1.8 + (i %% 7) / 10.0,
    0.3 + (i %% 60) / 100.0, 0.5, 1.5, '30min', %(start)s + i * %(step)s, '{}'::jsonb
FROM generate_series(0::bigint, %(n)s - 1) AS i
"""
SEED_OUTCOMES = """
INSERT INTO signal_outcomes (signal_id, state, finished, as_of, trigger_time, tp1_time, exit_time, exit_price,
    pnl_r, pnl_pct, mfe_r, mae_r, source, outcome)
SELECT md5('bench' || i)::uuid, s.state, s.state IN ('TP2', 'STOPPED', 'EXPIRED'), t + 3600000,
    CASE WHEN s.state = 'WAITING' THEN NULL ELSE t + 5000 END,
    CASE WHEN s.state IN ('TP1', 'TP2') THEN t + 60000 END,
    CASE WHEN s.state IN ('TP2', 'STOPPED', 'EXPIRED') THEN t + 600000 + (i %% 50) * 60000 END,
    100, s.r, s.r * 0.5, abs(s.r) + 0.3, 0.4, 'batch', '{}'::jsonb
FROM generate_series(0::bigint, %(n)s - 1) AS i,
LATERAL (SELECT %(start)s + i * %(step)s AS t) AS tt,
LATERAL (SELECT
    CASE WHEN i > %(n)s - 20 THEN 'TRIGGERED' WHEN i %% 3 = 0 THEN 'TP2' WHEN i %% 3 = 1 THEN 'STOPPED' ELSE 'EXPIRED' END AS state,
    CASE WHEN i %% 3 = 0 THEN 1.45 WHEN i %% 3 = 1 THEN -1.05 ELSE ((i %% 11) - 5) / 10.0 END AS r) AS s
"""
SEED_CANDIDATES = """
INSERT INTO candidates (candidate_id, symbol, direction, event_time, features, conditions, quality,
    quality_score, tier, fate, signal_id)
SELECT md5('cand' || i)::uuid, 'SYM' || lpad((i %% 200)::text, 3, '0') || 'USDT',
    CASE WHEN i %% 2 = 0 THEN 'LONG' ELSE 'SHORT' END, %(start)s + i * %(step)s + 1, '{}', '[]', '{}',
    40 + i %% 60, NULL, (ARRAY['low_quality', 'cooldown', 'correlation', 'concurrency', 'daily_cap'])[1 + i %% 5], NULL
FROM generate_series(0::bigint, %(n)s - 1) AS i
"""


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    )


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(first call, median of the next ``repeat``) in ms."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(runs) if runs else first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = load_settings()
    server_url = ensure_database(settings)
    name = f"tw_bench_dashboard_{os.getpid()}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    keys = Keyspace(f"twbench:{os.getpid()}:")
    redis_url = ensure_redis(settings)
    db = Database(url)
    state = RedisState.from_url(redis_url, keys=keys)
    try:
        db.upgrade()
        now = int(time.time() * 1000)
        step = max(1, 90 * DAY_MS // args.signals)  # spread over 90 days
        params = {"n": args.signals, "start": now - args.signals * step, "step": step}
        started = time.perf_counter()
        with db.begin() as c:
            raw = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            for sql in (SEED_SIGNALS, SEED_OUTCOMES, SEED_CANDIDATES):
                raw.execute(sql, params)
            raw.execute("ANALYZE")
        print(
            f"seeded {args.signals:,} signals + outcomes + candidates in {time.perf_counter() - started:.1f} s"
        )
        state.beat("realtime")
        backend = be.Backend(
            settings=settings,
            db=db,
            redis=state,
            dagster=DagsterRuns(settings.dagster_host, settings.dagster_port),
        )
        create_app(backend)
        from dashboard.pages import health, live, performance, quality, reports, system, universe

        sort = {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "pnl_r", "sort": "desc"}]}
        flt = {
            "startRow": 0,
            "endRow": 100,
            "filterModel": {"symbol": {"filterType": "text", "type": "contains", "filter": "SYM01"}},
        }
        cases: dict[str, Callable[[], Any]] = {
            "Live: open signals + KPIs": lambda: live.live_state(backend),
            "Live: symbol panel": lambda: live.symbol_panel(backend, SYMBOLS[1], {}),
            "Live: history, first 100 rows": lambda: live.history_rows(
                backend, {"startRow": 0, "endRow": 100}
            ),
            "Live: history, rows 50,000-50,100": lambda: live.history_rows(
                backend, {"startRow": 50_000, "endRow": 50_100}
            ),
            "Live: history sorted by P&L R": lambda: live.history_rows(backend, sort),
            "Live: history filtered by symbol": lambda: live.history_rows(backend, flt),
            "Performance: 7 days": lambda: performance.performance_view(backend, "7 days", "all"),
            "Performance: all (100k)": lambda: performance.performance_view(backend, "all", "all"),
            "Quality: 30 days": lambda: quality.quality_view(backend, "30 days"),
            "Quality: all (100k)": lambda: quality.quality_view(backend, "all"),
            "System": lambda: system.system_view(backend, []),
            "Universe": lambda: universe.universe_view(backend),
            "Health": lambda: health.health_view(backend),
            "Reports": lambda: reports.report_options(backend, "all"),
        }
        print(f"{'page (first render)':<38} {'first ms':>9} {'median ms':>10}")
        worst = 0.0
        for label, fn in cases.items():
            first, median = timed(fn, args.repeat)
            worst = max(worst, first)
            print(f"{label:<38} {first:>9.0f} {median:>10.0f}")
        print(f"slowest first render: {worst:.0f} ms ({'under' if worst < 1000 else 'OVER'} 1 s)")
        return 0 if worst < 1000 else 1
    finally:
        state.close()
        client = redis.Redis.from_url(redis_url)
        found = list(client.scan_iter(match=keys.pattern))
        if found:
            client.delete(*found)
        client.close()
        db.dispose()
        with _admin(server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
