"""What a trader sees must be true: charts that render, last data kept through an outage, stale realtime
figures said to be stale, frozen open signals said to be frozen. Callbacks called as plain functions on real
PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dash
import pytest
import redis
from dash import html

from dashboard import backend as be
from dashboard.pages import health, live, performance, quality, reports, system, universe
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.errors import StorageUnavailable
from tests.adapters.signal_builders import T0
from tests.dashboard.support import NOW_MS, publish_open, seed_signals
from tests.dashboard.test_pages import text_of

MINUTE = 60_000
NO = dash.no_update


def test_the_reports_page_shows_the_report_with_its_charts_inline(
    backend: be.Backend, tmp_path: Path
) -> None:
    from assets.reports import publish_report

    seed_signals(backend.db)
    cfg = backend.settings.model_copy(update={"var_dir": tmp_path})
    day = datetime.fromtimestamp(T0 / 1000, tz=UTC).date().isoformat()
    stored, rendered = publish_report(backend.db, cfg, "daily", day, datetime.now(UTC))
    assert f"]({day}/equity_r.svg)" in stored.markdown  # the Markdown only links its charts
    body = reports.show_report(f"daily|{day}")
    assert isinstance(body, html.Iframe)
    props = vars(body)  # the component's props
    assert props["srcDoc"] == stored.html and props["sandbox"] == ""  # no script may run in it
    assert '<figure id="chart-equity_r"><svg' in props["srcDoc"]  # the chart itself, not a link to a file
    assert rendered.charts and all(f'id="chart-{name}"' in props["srcDoc"] for name in rendered.charts)


def test_an_outage_keeps_every_page_s_last_data(down_backend: be.Backend) -> None:
    # every data output is no_update (the page keeps what it shows); only the banner changes
    rows, message, kpis, banner, symbols = live.refresh_live(0)
    assert (rows, message, kpis, symbols) == (NO, NO, NO, NO) and "TAPEWATCH_REDIS_URL" in text_of(banner)
    *data, banner, empty = performance.refresh_performance("7 days", "all", 0)
    assert [*data, empty] == [NO] * 5 and "TAPEWATCH_DATABASE_URL" in text_of(banner)
    *figures, banner, empty = quality.refresh_quality("7 days", 0)
    assert [*figures, empty] == [NO] * 5 and "TAPEWATCH_DATABASE_URL" in text_of(banner)
    options, value, banner = reports.refresh_reports("all", 0, "daily|2024-01-01")
    assert (options, value) == (NO, NO) and "TAPEWATCH_DATABASE_URL" in text_of(banner)
    kpis, members, rescans, exclusions, banner, empty, _status, _run = universe.refresh_universe(
        0, None, None
    )
    assert [kpis, members, rescans, exclusions, empty] == [NO] * 5 and "TAPEWATCH_DATABASE_URL" in text_of(
        banner
    )
    control, health_rows, feed_rows, action_rows, banner = health.refresh_health(0, None)
    assert [health_rows, feed_rows, action_rows] == [NO] * 3 and "unknown" in text_of(control)
    kpis, streams, _trend, components, metric_rows, banner, notice, history = system.refresh_system(0, [])
    assert [streams, components, metric_rows, notice] == [NO] * 4 and "TAPEWATCH_REDIS_URL" in text_of(banner)
    assert "host CPU" in text_of(kpis) and len(history) == 1  # this host's figures are still live


def _metrics(client: redis.Redis, keys: Keyspace, updated_ms: int) -> None:
    client.hset(
        keys.metrics("realtime"),
        mapping={
            "msgs_per_s_depth": "120.0",
            "signal_latency_ms_p50": "12.0",
            "signal_latency_ms_p99": "48.0",
            "updated_ms": str(updated_ms),
        },
    )


def _stale_kpis(kpis: list[html.Div]) -> list[str]:
    return [text_of(k.children[1]) for k in kpis if "stale" in k.children[0].className]


def test_system_page_says_when_the_realtime_figures_are_stale(
    backend: be.Backend, redis_client: redis.Redis, redis_keys: Keyspace
) -> None:
    # the service published once, 5 minutes ago, and died: its heartbeat expired, its metrics hash did not
    _metrics(redis_client, redis_keys, NOW_MS - 5 * MINUTE)
    kpis, streams, trend, _, metric_rows, _, notice, _ = system.refresh_system(0, [])
    assert "event→signal p99 (stale)" in _stale_kpis(kpis) and "48 ms" in text_of(kpis)
    assert "not running" in text_of(notice) and "5 min ago" in text_of(notice)
    assert "stale" in streams.layout.title.text
    assert list(trend.data[2].y) == [None]  # stale latency is not plotted as measured now
    assert "updated_ms" not in {r["name"] for r in metric_rows}  # a timestamp, not a metric
    # running, but silent for a minute: still stale
    backend.redis.beat("realtime")
    _metrics(redis_client, redis_keys, NOW_MS - MINUTE)
    kpis, *_, notice, _ = system.refresh_system(1, [])
    assert _stale_kpis(kpis) and "stopped publishing" in text_of(notice)
    # running and fresh: live figures, nothing to say
    _metrics(redis_client, redis_keys, NOW_MS - 1000)
    kpis, streams, trend, _, _, _, notice, _ = system.refresh_system(2, [])
    assert _stale_kpis(kpis) == [] and text_of(notice) == "" and list(trend.data[2].y) == [48.0]


def test_live_page_says_open_signals_are_frozen_when_the_service_is_down(
    backend: be.Backend, redis_client: redis.Redis, redis_keys: Keyspace
) -> None:
    made = seed_signals(backend.db)
    publish_open(redis_client, redis_keys, made["open"])
    _metrics(redis_client, redis_keys, NOW_MS - 10 * MINUTE)
    rows, message, kpis, _, _ = live.refresh_live(0)  # no realtime heartbeat
    assert [r["signal_id"] for r in rows] == [made["open"].signal_id]  # kept
    said = text_of(message)
    assert "not running since" in said and "10 min ago" in said and "not being followed" in said
    assert "unrealised R (frozen)" in text_of(kpis) and "not running" in text_of(kpis)
    backend.redis.beat("realtime")
    rows, message, kpis, _, _ = live.refresh_live(1)
    assert len(rows) == 1 and text_of(message) == "" and "frozen" not in text_of(kpis)


def test_a_sharded_realtime_service_counts_as_running(backend: be.Backend) -> None:
    backend.redis.beat("realtime-0of2")
    _, message, kpis, _, _ = live.refresh_live(0)
    assert text_of(message) != live.NOT_RUNNING and "live" in text_of(kpis)


def test_live_page_banner_says_so_when_redis_goes_away_between_its_reads(
    backend: be.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.redis.beat("realtime")

    def gone() -> None:
        raise StorageUnavailable("Redis at redis://127.0.0.1:6379 is unavailable (connection reset)")

    # the open signals were read; Redis went away before the last signal was (a fault injected between reads)
    monkeypatch.setattr(backend.redis, "last_signal", gone)
    rows, _, _, banner, _ = live.refresh_live(0)
    assert rows == []  # what was read is shown
    assert "unavailable" in text_of(banner)  # and the banner says a read failed (it was empty)
