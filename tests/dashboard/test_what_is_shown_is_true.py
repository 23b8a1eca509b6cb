"""What a trader sees must be true: charts that render, last data kept through an outage, stale realtime
figures said to be stale, frozen open signals said to be frozen, finished signals shown with their outcome,
periods on the signals' clock, no win rate where none is defined, open incidents however old. Callbacks called
as plain functions on real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dash
import pytest
import redis
import sqlalchemy as sa
from dash import html

from dashboard import backend as be
from dashboard.pages import health, live, performance, quality, reports, system, universe
from tapewatch.adapters import health_store
from tapewatch.adapters import incidents as incidents_module
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import StorageUnavailable
from tests.adapters.signal_builders import T0, entry, triggered, win
from tests.dashboard.support import DAY, NOW_MS, finished, publish_open, seed_signals, store_finished
from tests.dashboard.test_pages import text_of

MINUTE = 60_000
HOUR = 60 * MINUTE
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
    control, health_rows, feed_rows, action_rows, banner, *notes = health.refresh_health(0, None)
    assert [health_rows, feed_rows, action_rows, *notes] == [NO] * 6 and "unknown" in text_of(control)
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


def _kpi(kpis: list[html.Div], label: str) -> str:
    [value] = [text_of(k.children[0]) for k in kpis if text_of(k.children[1]) == label]
    return value


def test_a_signal_that_finishes_stays_on_the_live_table_with_its_outcome(
    backend: be.Backend, redis_client: redis.Redis, redis_keys: Keyspace
) -> None:
    made = entry("SOLUSDT", NOW_MS - 30 * MINUTE)
    store = SignalStore(backend.db)
    store.save_signals([made])
    store.save_outcome(triggered(made))
    publish_open(redis_client, redis_keys, made)
    # finished before the last hour: history only, not on the open table
    store_finished(backend.db, [finished("BTCUSDT", NOW_MS - 3 * HOUR, 1.0)])
    backend.redis.beat("realtime")
    rows, _, kpis, _, _ = live.refresh_live(0)
    assert [(r["signal_id"], r["state"]) for r in rows] == [(made.signal_id, "TRIGGERED")]
    # it reaches TP2: the realtime service drops it from Redis as the outcome is stored (live_state, dispatch)
    outcome = win(made)
    store.save_outcome(outcome)
    redis_client.hdel(redis_keys.open_signals, made.signal_id)
    rows, message, kpis, _, symbols = live.refresh_live(1)  # the next tick, no page reload
    [row] = rows
    assert (row["signal_id"], row["state"]) == (made.signal_id, "TP2")
    assert row["realised_r"] == pytest.approx(outcome.pnl_r) and outcome.pnl_r > 0
    assert row["unrealised_r"] is None and row["last_price"] == pytest.approx(made.take_profit_2)
    assert _kpi(kpis, "open signals") == "0" and _kpi(kpis, "unrealised R") == "+0.00 R"
    assert text_of(message) == live.NO_SIGNALS and "SOLUSDT" in symbols


def test_periods_end_at_the_realtime_market_clock_when_the_simulator_runs_ahead(backend: be.Backend) -> None:
    # a demo resumed where it stopped: its event time is three days ahead of the wall clock (NOW_MS), and
    # it has run two event days since (a signal an hour, each finished ten minutes later)
    ahead = NOW_MS + 3 * DAY
    store_finished(
        backend.db, [finished("BTCUSDT", ahead + k * HOUR, 1.0 if k % 2 else -1.0) for k in range(48)]
    )
    # its shards publish their market clock in their heartbeats: periods end at the freshest one
    now = ahead + 47 * HOUR + 12 * MINUTE
    backend.redis.beat("realtime-0of2", ttl_s=60, info={"market_now_ms": now - 2000})
    backend.redis.beat("realtime-1of2", ttl_s=60, info={"market_now_ms": now})
    assert be.signal_now_ms(backend) == now
    kpis, *_ = performance.refresh_performance("24 h", "all", 0)
    assert _kpi(kpis, "finished signals") == "24"  # the last 24 h of the signals' clock: hours 24..47
    bands, *_, empty = quality.refresh_quality("24 h", 0)
    assert sum(int(t.split("/")[1].split(" ")[0]) for t in bands.data[0].text) == 24
    assert text_of(empty) == ""
    rows, _, kpis, _, _ = live.refresh_live(0)
    assert _kpi(kpis, "signals 24 h") == "24"
    # finished within the last hour of that clock (from 46 h 12 min on): on the open table
    assert [r["event_time"] for r in rows] == [ahead + 47 * HOUR]


def test_a_stray_future_dated_signal_does_not_empty_the_periods(backend: be.Backend) -> None:
    """The review's case: "now" was the later of the wall clock and the newest stored signal, so one signal
    stored 30 days ahead (a simulator run pointed at this database, a bad clock) emptied every period until
    the wall clock caught up. The realtime service's market clock is about the wall clock on Binance."""
    store_finished(backend.db, [finished("BTCUSDT", NOW_MS - k * HOUR - 20 * MINUTE, 1.0) for k in range(24)])
    store_finished(backend.db, [finished("ETHUSDT", NOW_MS + 30 * DAY, 1.0)])
    for market_now in (None, NOW_MS - 1500):  # no realtime heartbeat; one with the exchange's clock
        if market_now is not None:
            backend.redis.beat("realtime", ttl_s=60, info={"market_now_ms": market_now})
        assert be.signal_now_ms(backend) == NOW_MS
        kpis, *_ = performance.refresh_performance("24 h", "all", 0)
        assert _kpi(kpis, "finished signals") == "24"
        kpis, *_ = performance.refresh_performance("7 days", "all", 0)
        assert _kpi(kpis, "finished signals") == "24"
        rows, _, kpis, _, _ = live.refresh_live(0)
        # the stray row neither counts nor shows (it lies past the page's clock), nor ends the periods: the last
        # 24 h of signals are there
        assert _kpi(kpis, "signals 24 h") == "24"
        assert NOW_MS - 20 * MINUTE in [r["event_time"] for r in rows]  # finished 10 min ago
        assert NOW_MS + 30 * DAY not in [r["event_time"] for r in rows]


def test_a_quality_band_without_triggered_signals_has_no_win_rate(backend: be.Backend) -> None:
    store_finished(
        backend.db,
        [finished("BTCUSDT", NOW_MS - (i + 2) * HOUR, 0.0, quality=72, triggered=False) for i in range(6)]
        + [finished("ETHUSDT", NOW_MS - (i + 2) * HOUR, -1.0, quality=85) for i in range(6)],
    )
    fig, *_ = quality.refresh_quality("7 days", 0)
    bar = fig.data[0]
    shown = {x[:2]: (y, t) for x, y, t in zip(bar.x, bar.y, bar.text, strict=True)}
    # six expired untriggered: no win rate (no bar, not 0 %), and n says none of the six triggered
    assert shown["70"][0] is None and shown["70"][1].startswith("n=0/6 ")
    # six triggered losers: a real 0 % over 6 triggered
    assert shown["80"][0] == 0 and shown["80"][1].startswith("n=6/6 ")
    assert [a.x for a in fig.layout.annotations if "no win rate" in a.text] == [
        bar.x[list(shown).index("70")]
    ]


def test_health_lists_every_open_incident_and_says_how_many_are_left_out(backend: be.Backend) -> None:
    month_ago = datetime.now(UTC) - timedelta(days=30)
    health_store.open_incident(
        backend.db, "data_quality", reason="z-score 9 on BTCUSDT", action="universe shrunk", at=month_ago
    )
    with backend.db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO health_incidents (kind, reason, action, recovery, started_at, ended_at) "
                "SELECT 'api_connectivity', 'REST ping failed', 'backup feed on', 'primary feed', "
                "now() - i * interval '1 minute', now() - i * interval '1 minute' FROM generate_series(1, 150) i"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO feed_incidents (kind, symbol, recorded_at) VALUES ('stale', 'ETHUSDT', :at)"
            ),
            {"at": month_ago},
        )
        conn.execute(
            sa.text(
                "INSERT INTO feed_incidents (kind, symbol, recorded_at, resolved_at) "
                "SELECT 'resync', 'BTCUSDT', now() - i * interval '1 minute', now() - i * interval '1 minute' "
                "FROM generate_series(1, 250) i"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO operator_actions (action, actor, result) "
                "SELECT 'pause', 'alice', 'ok' FROM generate_series(1, 101)"
            )
        )
    shown = health.refresh_health(0, None)
    incidents, feed, done = shown[1:4]
    # the open incidents a month old are listed (first), whatever came after them
    assert (incidents[0]["kind"], incidents[0]["ended_at"]) == ("data_quality", "open")
    assert (feed[0]["kind"], feed[0]["resolved_at"]) == ("stale", "open")
    # and each table says what it leaves out
    incidents_note, feed_note, done_note = shown[5:]
    assert len(incidents) == 101
    assert incidents_note == "the newest 100 of 151 incidents, plus 1 older open · 1 open"
    assert len(feed) == 201
    assert feed_note == "the newest 200 of 251 incidents, plus 1 older open · 1 open"
    assert len(done) == 100 and done_note == "the newest 100 of 101 actions"
    # all of them fit: no cap to speak of
    with backend.db.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM operator_actions WHERE id IN (SELECT min(id) FROM operator_actions)")
        )
        # a history never pruned is counted up to a bound, not scanned whole every second
        conn.execute(
            sa.text(
                "INSERT INTO feed_incidents (kind, symbol, recorded_at, resolved_at) "
                "SELECT 'gap', 'BTCUSDT', now() - interval '1 day', now() - interval '1 day' "
                "FROM generate_series(1, :n)"
            ),
            {"n": incidents_module.COUNT_LIMIT},
        )
    *_, feed_note, done_note = health.refresh_health(1, None)
    assert done_note == "100 actions"
    assert feed_note == "the newest 200 of 10,000+ incidents, plus 1 older open · 1 open"
