"""Outcome, metrics and report assets materialised against real PostgreSQL and the simulator's REST klines.

The simulator (manual clock, fixed seed) starts at 2024-03-06 00:00 UTC with 25 hours of deterministic
1-minute history behind it, so the whole of 2024-03-05 (partition ``D``) has klines. Signals are planted on
``D`` with levels read from the klines the simulator serves, so their outcomes are known by hand:

- ``expiry``  BTCUSDT HIGH LONG 10:00:00, entry = the 10:00 close (a price traded after the signal existed),
  stop and targets beyond the window's range: triggers in its first minute. 2024 is older than the year
  Binance keeps aggTrades, so its deciding minutes count capped: the trigger at the 10:00 candle's open, the
  hold's end known to the minute only, so the 10:45 candle that holds it counts its adverse extreme as the
  last price by the end: it expires after 45 min at the 10:45 low. No live outcome (the live tracker
  missed it).
- ``never``   BTCUSDT HIGH LONG 11:00:01, entry 5 % above the response window's high: never triggers,
  EXPIRED untriggered, 0 R. Its live outcome is WAITING (unfinished): filled by the batch.
- ``planted`` ETHUSDT HIGH LONG 12:00:00, built like ``expiry``; a live outcome says TP2: the batch
  disagrees (EXPIRED), its value is stored and the asset check warns with the signal listed.
"""

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import msgspec
import pytest
from dagster._utils.schedules import (  # dagster's own cron reading (lists too): the real tick times
    schedule_execution_time_iterator,
)

from assets.metrics import daily_metrics, weekly_metrics
from assets.outcomes import AGREEMENT_CHECK, FETCH_CHECK, signal_outcomes
from assets.reports import daily_report, monthly_report, weekly_report
from orchestration import performance
from orchestration.performance import (
    daily_keys,
    daily_report_schedule,
    monthly_key,
    monthly_report_schedule,
    weekly_key,
    weekly_report_schedule,
)
from orchestration.resources import BinanceRestResource, DatabaseResource, TapewatchSettings
from realtime.sim import SimExchange
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import get_report, list_reports, load_daily, load_weekly
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import ConfigError
from tapewatch.outcome import Outcome, OutcomeParams, OutcomeState, OutcomeTracker
from tapewatch.outcome_batch import is_due
from tapewatch.quality import Tier
from tapewatch.settings import Settings, load_settings
from tapewatch.signal import Signal, iso_timestamp, signal_id_for
from tapewatch.signal_follow import open_signal
from tests.adapters.signal_builders import entry

START = int(datetime(2024, 3, 6, tzinfo=UTC).timestamp() * 1000)
D = "2024-03-05"
D_MS = int(datetime(2024, 3, 5, tzinfo=UTC).timestamp() * 1000)
M = 60_000
FEE = 0.0005


@pytest.fixture(scope="module")
def sim() -> Iterator[SimExchange]:
    """The simulator on a free port, its event loop in a thread of its own (Dagster runs in this one)."""
    with serve_sim(START) as exchange:
        yield exchange


@contextlib.contextmanager
def serve_sim(start_ms: int) -> Iterator[SimExchange]:
    loop = asyncio.new_event_loop()
    exchange = SimExchange(port=0, seed=11, symbols=5, manual=True, start_ms=start_ms)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(exchange.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(exchange.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="sim", daemon=True)
    thread.start()
    assert started.wait(30), "the simulator did not start"
    yield exchange
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def klines(sim: SimExchange, symbol: str, start: int, end: int) -> list[list[Any]]:
    resp = httpx.get(
        f"{sim.rest_url}/fapi/v1/klines",
        params={"symbol": symbol, "interval": "1m", "startTime": start, "endTime": end, "limit": 1500},
        timeout=10,
    )
    resp.raise_for_status()
    rows: list[list[Any]] = resp.json()
    return rows


def make_signal(symbol: str, created: int, entry_price: float, stop: float, tp1: float, tp2: float) -> Signal:
    base = entry(symbol)
    return msgspec.structs.replace(
        base,
        signal_id=signal_id_for(symbol, "LONG", created),
        symbol=symbol,
        priority="HIGH",
        event_time=created,
        timestamp=iso_timestamp(created),
        entry_price=entry_price,
        stop_loss=stop,
        take_profit_1=tp1,
        take_profit_2=tp2,
    )


def around(sim: SimExchange, symbol: str, created: int) -> tuple[Signal, float]:
    """A signal created at the start of a minute, entering at its close with levels outside the next 47
    minutes' range, and the P&L in R it must end with (expiry at the low of the candle 45 minutes later:
    without aggTrades, the candle holding the hold's end counts capped)."""
    assert created % M == 0
    minute = created - created % M
    rows = klines(sim, symbol, minute, minute + 46 * M)
    assert len(rows) == 47 and rows[0][0] == minute
    low, high = min(float(r[3]) for r in rows), max(float(r[2]) for r in rows)
    price = float(rows[0][4])  # the creation minute's close: traded after the signal existed
    sig = make_signal(symbol, created, price, low - price * 0.01, high + price * 0.01, high + price * 0.02)
    exit_price = float(rows[45][3])  # the hold ends in the 10:45 candle: its adverse extreme, capped
    pnl_r = ((exit_price - price) - FEE * (price + exit_price)) / (price - sig.stop_loss)
    return sig, pnl_r


@pytest.fixture
def planted(sim: SimExchange, migrated_database_url: str) -> Iterator[dict[str, Any]]:
    expiry, expiry_r = around(sim, "BTCUSDT", D_MS + 10 * 60 * M)
    planted, planted_r = around(sim, "ETHUSDT", D_MS + 12 * 60 * M)
    created = D_MS + 11 * 60 * M + 1000
    window = klines(sim, "BTCUSDT", created - created % M, created - created % M + M)
    top = max(float(r[2]) for r in window) * 1.05
    never = make_signal("BTCUSDT", created, top, top * 0.99, top * 1.01, top * 1.02)

    db = Database(migrated_database_url)
    store = SignalStore(db)
    store.save_signals([expiry, never, planted])
    params = OutcomeParams()
    waiting = OutcomeTracker(open_signal(never), params)
    waiting.on_trade(created + 10, top * 0.9)
    store.save_outcome(waiting.outcome())
    wrong = OutcomeTracker(open_signal(planted), params)
    for dt, price in ((10, planted.entry_price), (M, planted.take_profit_1), (2 * M, planted.take_profit_2)):
        wrong.on_trade(planted.event_time + dt, price)
    assert wrong.outcome().state is OutcomeState.TP2
    store.save_outcome(wrong.outcome())
    yield {
        "db": db,
        "expiry": (expiry, expiry_r),
        "never": never,
        "planted": (planted, planted_r, wrong.outcome().pnl_r),
    }
    db.dispose()


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message of the first step failure's error chain (Dagster wraps the asset's exception)."""
    error = result.get_step_failure_events()[0].step_failure_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause or error.context
    return "\n".join(parts)


def resources(sim_url: str, database_url: str, var_dir: Path) -> dict[str, Any]:
    return {
        "settings": TapewatchSettings(overrides={"var_dir": str(var_dir)}),
        "database": DatabaseResource(url=database_url),
        "binance": BinanceRestResource(base_url=sim_url, max_retries=0, timeout=5),
    }


def test_outcomes_metrics_and_report_of_a_day(
    sim: SimExchange, planted: dict[str, Any], migrated_database_url: str, tmp_path: Path
) -> None:
    res = resources(sim.rest_url, migrated_database_url, tmp_path)
    result = dg.materialize([signal_outcomes, daily_metrics, daily_report], partition_key=D, resources=res)
    assert result.success

    # outcomes: every signal settled by the batch, the planted live value replaced
    store = SignalStore(planted["db"])
    expiry, expiry_r = planted["expiry"]
    planted_sig, planted_r, wrong_r = planted["planted"]
    got = {name: store.get_outcome(s.signal_id) for name, s in
           (("expiry", expiry), ("never", planted["never"]), ("planted", planted_sig))}  # fmt: skip
    assert all(g is not None and g[1] == "batch" for g in got.values())
    assert got["expiry"][0].state is OutcomeState.EXPIRED  # type: ignore[index]
    assert got["expiry"][0].pnl_r == pytest.approx(expiry_r)  # type: ignore[index]
    assert got["never"][0].state is OutcomeState.EXPIRED and not got["never"][0].triggered  # type: ignore[index]
    assert got["planted"][0].state is OutcomeState.EXPIRED  # type: ignore[index]
    assert got["planted"][0].pnl_r == pytest.approx(planted_r)  # type: ignore[index]

    meta = result.asset_materializations_for_node("signal_outcomes")[0].metadata
    values = {k: v.value for k, v in meta.items()}
    assert values["due"] == 3 and values["written"] == 3
    assert values["filled_missed_by_live"] == 2 and values["disagreed_with_live"] == 1
    assert values["fetch_failed"] == 0 and values["incomplete_klines"] == 0

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks[FETCH_CHECK].passed  # every due signal's klines were fetched
    check = checks[AGREEMENT_CHECK]
    assert not check.passed
    assert check.severity is dg.AssetCheckSeverity.WARN
    listing = check.metadata["list"].value
    assert planted_sig.signal_id in listing and "TP2" in listing and "EXPIRED" in listing
    assert f"{wrong_r:+.4f}" in listing

    # metrics: 3 signals, 2 triggered (the untriggered one counts as sent, not in the win rate)
    rows = load_daily(planted["db"], date(2024, 3, 5))
    overall = rows["ALL"]
    assert (overall["signals_generated"], overall["signals_triggered"], overall["signals_open"]) == (3, 2, 0)
    assert overall["total_pnl_r"] == pytest.approx(expiry_r + planted_r)
    assert overall["wins"] == (expiry_r > 0) + (planted_r > 0)
    assert overall["average_hold_minutes"] == pytest.approx(45.0)
    assert rows["HIGH"]["signals_generated"] == 3 and rows["LOW"]["signals_generated"] == 0
    day_meta = result.asset_materializations_for_node("daily_metrics")[0].metadata
    assert day_meta["total_pnl"].value == pytest.approx(expiry_r + planted_r)
    assert "| ALL | 3 | 2 |" in day_meta["by_tier"].value

    # the report: files, database row, metadata preview
    md, html = tmp_path / "reports/daily" / f"{D}.md", tmp_path / "reports/daily" / f"{D}.html"
    text = md.read_text()
    assert "# Daily report — 2024-03-05 (UTC)" in text and "| ALL | 3 | 2 |" in text
    assert f"![Equity curve]({D}/equity_r.svg)" in text
    assert (tmp_path / "reports/daily" / D / "equity_r.svg").read_text().startswith("<svg")
    page = html.read_text()
    assert "<svg" in page and "<script" not in page
    assert "1 signal(s) of this period had a live outcome that the 1-minute candles contradict" in page
    stored = get_report(planted["db"], "daily", D)
    assert stored is not None and stored.signals == 3 and stored.html == page
    assert [r.period for r in list_reports(planted["db"], "daily")] == [D]
    preview = result.asset_materializations_for_node("daily_report")[0].metadata["preview"].value
    assert "Daily report — 2024-03-05" in preview and "![" not in preview

    # a second run has nothing left to settle: batch outcomes are final
    again = dg.materialize([signal_outcomes], partition_key=D, resources=res)
    meta2 = {
        k: v.value for k, v in again.asset_materializations_for_node("signal_outcomes")[0].metadata.items()
    }
    assert meta2["signals_pending"] == 0 and meta2["due"] == 0
    # ... but the day's check still fails: it judges every disagreement stored for the day
    final = next(c for c in again.get_asset_check_evaluations() if c.check_name == AGREEMENT_CHECK)
    assert not final.passed and final.partition == D
    assert final.metadata["disagreements"].value == 1 and final.metadata["found_by_this_run"].value == 0


def test_the_agreement_check_keeps_one_result_per_day(
    sim: SimExchange, planted: dict[str, Any], migrated_database_url: str, tmp_path: Path
) -> None:
    """A failing day stays failing when a later run checks another day (the check is partitioned)."""
    res = resources(sim.rest_url, migrated_database_url, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    for key in (D, "2024-03-04"):  # the day with a disagreement, then a clean day
        assert dg.materialize([signal_outcomes], partition_key=key, resources=res, instance=instance).success
    check = dg.AssetCheckKey(dg.AssetKey("signal_outcomes"), AGREEMENT_CHECK)
    by_day = {
        info.partition_key: info.latest_execution_status.value
        for info in instance.event_log_storage.get_asset_check_partition_info([check])
    }
    assert by_day == {D: "FAILED", "2024-03-04": "SUCCEEDED"}


def test_backfill_of_past_daily_partitions_and_the_weekly_and_monthly_assets(
    sim: SimExchange, planted: dict[str, Any], migrated_database_url: str, tmp_path: Path
) -> None:
    res = resources(sim.rest_url, migrated_database_url, tmp_path)
    for key in ("2024-03-04", D):  # a backfill of two past days: one empty, one with signals
        assert dg.materialize(
            [signal_outcomes, daily_metrics, daily_report], partition_key=key, resources=res
        ).success
    empty = load_daily(planted["db"], date(2024, 3, 4))["ALL"]
    assert empty["signals_generated"] == 0 and empty["win_rate"] is None
    assert "No signals in this period yet" in (tmp_path / "reports/daily/2024-03-04.md").read_text()
    assert load_daily(planted["db"], date(2024, 3, 5))["ALL"]["signals_generated"] == 3

    week = dg.materialize([weekly_metrics, weekly_report], partition_key="2024-03-04", resources=res)
    assert week.success
    row = load_weekly(planted["db"], date(2024, 3, 4))
    assert row is not None and row["signals_generated"] == 3
    expiry_r, planted_r = planted["expiry"][1], planted["planted"][1]
    assert row["strategy_efficiency"] == pytest.approx((expiry_r + planted_r) / 3)
    # best: total R above 0 only, worst: below 0 only (ETHUSDT's week is not a winner): never both
    assert {s["symbol"] for s in row["best_symbols"]} == {"BTCUSDT"}
    assert all(s["total_r"] > 0 for s in row["best_symbols"])
    assert all(s["total_r"] < 0 for s in row["worst_symbols"])
    assert "Weekly report — 2024-W10" in (tmp_path / "reports/weekly/2024-03-04.html").read_text()

    month = dg.materialize([monthly_report], partition_key="2024-03-01", resources=res)
    assert month.success
    report = get_report(planted["db"], "monthly", "2024-03-01")
    assert report is not None and report.signals == 3 and "Monthly report — 2024-03" in report.markdown
    assert [r.kind for r in list_reports(planted["db"])][:2] == ["daily", "daily"]


def test_unknown_symbol_is_counted_and_an_unreachable_exchange_fails_clearly(
    sim: SimExchange, migrated_database_url: str, tmp_path: Path
) -> None:
    db = Database(migrated_database_url)
    try:
        store = SignalStore(db)
        store.save_signal(make_signal("NOSUCHUSDT", D_MS + 60 * M, 100.0, 99.0, 101.0, 102.0))
        res = resources(sim.rest_url, migrated_database_url, tmp_path)
        result = dg.materialize([signal_outcomes], partition_key=D, resources=res, raise_on_error=False)
        assert not result.success  # the only due signal could not be fetched
        assert "no klines could be fetched" in failure_text(result)

        store.save_signal(make_signal("BTCUSDT", D_MS + 70 * M, 1.0, 0.5, 1.5, 2.0))
        mixed = dg.materialize([signal_outcomes], partition_key=D, resources=res)
        meta = {
            k: v.value
            for k, v in mixed.asset_materializations_for_node("signal_outcomes")[0].metadata.items()
        }
        assert meta["due"] == 2 and meta["fetch_failed"] == 1 and meta["written"] == 1
        # ... and the day's check fails, naming it: the signal has no batch outcome, the day's numbers miss it
        fetched = next(c for c in mixed.get_asset_check_evaluations() if c.check_name == FETCH_CHECK)
        assert not fetched.passed and fetched.partition == D
        assert fetched.severity is dg.AssetCheckSeverity.ERROR  # not the first pass: no scheduled retry today
        listing = str(fetched.metadata["list"].value)
        assert signal_id_for("NOSUCHUSDT", "LONG", D_MS + 60 * M) in listing and "NOSUCHUSDT" in listing
        assert "-1121" in listing or "Invalid symbol" in listing
        assert fetched.metadata["fetch_failed"].value == 1

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        down = resources(f"http://127.0.0.1:{port}", migrated_database_url, tmp_path)
        result = dg.materialize([signal_outcomes], partition_key=D, resources=down, raise_on_error=False)
        assert not result.success
        assert "TAPEWATCH_BINANCE_REST_URL" in failure_text(result)
    finally:
        db.dispose()


def agg_trades(sim: SimExchange, symbol: str, start: int, end: int) -> list[tuple[int, float]]:
    resp = httpx.get(
        f"{sim.rest_url}/fapi/v1/aggTrades",
        params={"symbol": symbol, "startTime": start, "endTime": end, "limit": 1000},
        timeout=10,
    )
    resp.raise_for_status()
    return [(int(r["T"]), float(r["p"])) for r in resp.json()]


def settle_yesterday(
    exchange: SimExchange, sig: Signal, day: int, database_url: str, tmp_path: Path
) -> tuple[Outcome, dict[str, Any]]:
    """Store ``sig``, run ``signal_outcomes`` for ``day``: the batch outcome and the metadata values."""
    db = Database(database_url)
    try:
        SignalStore(db).save_signal(sig)
        res = resources(exchange.rest_url, database_url, tmp_path)
        key = datetime.fromtimestamp(day / 1000, UTC).date().isoformat()
        result = dg.materialize([signal_outcomes], partition_key=key, resources=res)
        meta = {
            k: v.value
            for k, v in result.asset_materializations_for_node("signal_outcomes")[0].metadata.items()
        }
        got = SignalStore(db).get_outcome(sig.signal_id)
        assert got is not None and got[1] == "batch"
        return got[0], meta
    finally:
        db.dispose()


def minute_counts(meta: dict[str, Any]) -> dict[str, int]:
    """The deciding minutes' metadata that are not 0."""
    return {k: v for k, v in meta.items() if k.endswith(("_minute_exact", "_minute_capped")) and v}


# The simulator's history trades four times a minute: the open at 0 s, the extremes at 15 and 30 s (the low
# first when the candle closes up, the high first when it closes down), the close at 59 s. Binance serves
# aggTrades for a year, so these days are yesterday's.
def test_the_creation_minute_counts_only_trades_after_the_signal(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A signal created 20 s into a minute whose low (at 15 s, before it) lies under its stop, and nothing after
    reaches the stop or a target: the aggTrades of [created, minute end] make it trigger at 30 s (the high)
    and expire 45 min later, at the trade at exactly that ms (the capped candle would have stopped it)."""
    today = int(time.time() * 1000) // 86_400_000 * 86_400_000
    day = today - 86_400_000
    with serve_sim(today) as exchange:
        rows = klines(exchange, "BTCUSDT", day, day + 1439 * M)
        ohlc = [tuple(float(x) for x in r[1:5]) for r in rows]
        for i in range(60, 1380):  # the minute's low comes first when it closes up (the simulator's order)
            o, _, low, c = ohlc[i]
            later = ohlc[i + 1 : i + 47]
            floor = min(c, *(r[2] for r in later))
            if c >= o and low < floor - c * 0.0005:
                break
        else:
            pytest.fail("no suitable minute in the simulated history")
        top = max(r[1] for r in ohlc[i : i + 47])
        stop = (low + floor) / 2
        sig = make_signal("BTCUSDT", day + i * M + 20_000, c, stop, top * 1.01, top * 1.02)
        trigger = day + i * M + 30_000  # the high, the first trade after the signal
        end = trigger + 45 * M
        (exit_time, exit_price), *_ = [t for t in agg_trades(exchange, "BTCUSDT", end, end) if t[0] == end]
        expected_r = ((exit_price - c) - FEE * (c + exit_price)) / (c - stop)
        got, meta = settle_yesterday(exchange, sig, day, migrated_database_url, tmp_path)
    assert got.state is OutcomeState.EXPIRED and got.trigger_time == trigger
    assert got.exit_time == exit_time == end and got.exit_price == exit_price
    assert got.pnl_r == pytest.approx(expected_r)
    assert meta["written"] == 1
    assert minute_counts(meta) == {"creation_minute_exact": 1, "hold_deadline_minute_exact": 1}


def test_the_hold_ends_at_the_millisecond_its_trigger_trade_sets(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A signal created 10 s into a minute that closes up, entering at its low: the 15 s trade triggers it, so
    its 45-min hold ends 15 s into the minute 45 min later. That minute closes down: its high trades at
    exactly the end (the expiry's price: a trade at the deadline counts, as live), its low 15 s after it,
    under the stop, does not. Before, the hold ran from ``created`` and that candle counted whole: STOPPED."""
    today = int(time.time() * 1000) // 86_400_000 * 86_400_000
    day = today - 86_400_000
    with serve_sim(today) as exchange:
        rows = klines(exchange, "BTCUSDT", day, day + 1439 * M)
        ohlc = [tuple(float(x) for x in r[1:5]) for r in rows]
        for i in range(60, 1380):
            o, _, low, c = ohlc[i]
            end_open, end_high, end_low, end_close = ohlc[i + 45]
            floor = min(
                low, end_open, *(r[2] for r in ohlc[i + 1 : i + 45])
            )  # all the hold trades by its end
            if c >= o and end_close < end_open and end_low < floor - low * 0.0005:
                break
        else:
            pytest.fail("no suitable minute in the simulated history")
        top = max(r[1] for r in ohlc[i : i + 47])
        stop = (end_low + floor) / 2
        created = day + i * M + 10_000
        sig = make_signal("BTCUSDT", created, low, stop, top * 1.01, top * 1.02)
        end = created + 5_000 + 45 * M
        tape = agg_trades(exchange, "BTCUSDT", end - 15_000, end - 15_000 + M - 1)
        assert [(t - end, p) for t, p in tape][1:3] == [(0, end_high), (15_000, end_low)]  # as described
        expected_r = ((end_high - low) - FEE * (low + end_high)) / (low - stop)
        got, meta = settle_yesterday(exchange, sig, day, migrated_database_url, tmp_path)
    assert got.state is OutcomeState.EXPIRED and got.trigger_time == created + 5_000
    assert (got.exit_time, got.exit_price) == (end, end_high)
    assert got.pnl_r == pytest.approx(expected_r)
    assert minute_counts(meta) == {"creation_minute_exact": 1, "hold_deadline_minute_exact": 1}


def test_an_unreachable_database_fails_the_report_with_advice(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = resources("http://127.0.0.1:1", f"postgresql://tw@127.0.0.1:{port}/tapewatch", tmp_path)
    result = dg.materialize([daily_report], partition_key=D, resources=res, raise_on_error=False)
    assert not result.success
    assert "TAPEWATCH_DATABASE_URL" in failure_text(result)


# --- schedules -----------------------------------------------------------------------------------------------
#: Settings of the schedule cases: the defaults; the LOW hold bound at 2 days (a day's last signal can stay
#: open until 00:15 three days later); a LOW hold that puts the final pass at 00:10 the day after (one tick
#: runs both passes); the largest bounds the settings allow (LOW response window 1 day, hold 7 days).
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "two_day_hold": {"hold_time_low_max": 2 * 1440},
    "same_tick": {"hold_time_low_max": 1440 - 15},
    "longest": {"response_window_low": 86_400, "hold_time_low_max": 10_080},
}


def params_of(case: str) -> OutcomeParams:
    return OutcomeParams.from_settings(load_settings(**CASES[case]))


def times_of(case: str) -> performance.ReportTimes:
    return performance.ReportTimes.from_params(params_of(case))


DEFAULT = times_of("default")


def at(day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}+00:00")


def test_schedule_partitions_with_the_default_settings() -> None:
    assert performance.REPORT_TIMES == DEFAULT
    # 00:10 the first pass of yesterday; 03:25 (LOW: 15 min window + 180 min hold + 10 min) its final pass
    assert daily_keys(at("2024-03-12", "00:10")) == [("2024-03-11", "first")]
    assert daily_keys(at("2024-03-12", "03:25")) == [("2024-03-11", "final")]
    assert daily_keys(at("2024-03-12", "02:00")) == []
    assert daily_keys(at("2024-01-02", "00:10")) == [("2024-01-01", "first")]
    assert daily_keys(at("2024-01-01", "03:25")) == []  # 2023-12-31 is before the first partition
    assert weekly_key(at("2024-03-11", "03:55")) == "2024-03-04"  # a Monday: the week that ended on Sunday
    assert weekly_key(at("2024-01-01", "03:55")) is None
    assert monthly_key(at("2024-03-01", "04:15")) == "2024-02-01"
    assert monthly_key(at("2025-01-01", "04:15")) == "2024-12-01"
    assert monthly_key(at("2024-01-01", "04:15")) is None


def _context(at: datetime) -> dg.ScheduleEvaluationContext:
    # partition keys of run requests are checked against the jobs, which the repository holds
    repo = dg.Definitions.merge(
        performance.defs,
        dg.Definitions(
            resources=resources("http://127.0.0.1:1", "postgresql://tw@127.0.0.1:1/x", Path("var"))
        ),
    ).get_repository_def()
    return dg.build_schedule_context(scheduled_execution_time=at, repository_def=repo)


def _requests(schedule: dg.ScheduleDefinition, when: datetime) -> list[tuple[str | None, str | None, str]]:
    """(partition, run key, pass tag) of the runs ``schedule`` asks for at tick ``when``."""
    tick = schedule.evaluate_tick(_context(when))
    return [(r.partition_key, r.run_key, r.tags.get("tapewatch/pass", "")) for r in tick.run_requests or []]


def test_schedules_request_the_right_partitions() -> None:
    assert daily_report_schedule.cron_schedule == ["10 0 * * *", "25 3 * * *"]
    assert daily_report_schedule.execution_timezone == "UTC"
    assert _requests(daily_report_schedule, at("2024-03-06", "00:10")) == [
        ("2024-03-05", "2024-03-05:first", "first")
    ]
    assert _requests(daily_report_schedule, at("2024-03-06", "03:25")) == [
        ("2024-03-05", "2024-03-05:final", "final")
    ]
    assert weekly_report_schedule.cron_schedule == "55 3 * * 1"  # Mondays
    assert _requests(weekly_report_schedule, at("2024-03-11", "03:55")) == [("2024-03-04", "2024-03-04", "")]
    assert monthly_report_schedule.cron_schedule == "15 4 1 * *"  # the 1st
    assert _requests(monthly_report_schedule, at("2024-03-01", "04:15")) == [("2024-02-01", "2024-02-01", "")]
    tick = monthly_report_schedule.evaluate_tick(_context(at("2024-01-01", "04:15")))
    assert not tick.run_requests and tick.skip_message and "no full month" in tick.skip_message


def test_a_longer_hold_shifts_the_final_pass_and_the_reports_by_whole_days() -> None:
    daily, weekly, monthly = performance.report_schedules(times_of("two_day_hold"))
    assert daily.cron_schedule == ["10 0 * * *", "25 0 * * *"]
    assert weekly.cron_schedule == "55 0 * * 3"  # Monday + 2 days
    assert monthly.cron_schedule == "15 1 3 * *"  # the 1st + 2 days
    assert _requests(daily, at("2024-03-13", "00:10")) == [("2024-03-12", "2024-03-12:first", "first")]
    assert _requests(daily, at("2024-03-13", "00:25")) == [("2024-03-10", "2024-03-10:final", "final")]
    assert _requests(weekly, at("2024-03-13", "00:55")) == [("2024-03-04", "2024-03-04", "")]
    assert _requests(monthly, at("2024-03-03", "01:15")) == [("2024-02-01", "2024-02-01", "")]
    skipped = daily.evaluate_tick(_context(at("2024-03-13", "02:00")))
    assert not skipped.run_requests and skipped.skip_message and "00:25 UTC (final)" in skipped.skip_message


def test_a_final_pass_at_00_10_runs_in_the_first_pass_tick() -> None:
    daily, _, _ = performance.report_schedules(times_of("same_tick"))
    assert daily.cron_schedule == ["10 0 * * *"]
    assert _requests(daily, at("2024-03-13", "00:10")) == [
        ("2024-03-12", "2024-03-12:first", "first"),
        ("2024-03-11", "2024-03-11:final", "final"),
    ]


def test_unreadable_settings_give_the_default_times_and_say_so() -> None:
    def broken() -> Settings:
        raise ConfigError("invalid settings:\n  hold_time_low_max (TAPEWATCH_HOLD_TIME_LOW_MAX) = 'x'")

    times, note = performance.report_times(broken)
    assert times == DEFAULT
    assert "could not be read" in note and "TAPEWATCH_HOLD_TIME_LOW_MAX" in note
    two_days = performance.report_times(lambda: load_settings(**CASES["two_day_hold"]))
    assert two_days == (times_of("two_day_hold"), "")


def _ticks(schedule: dg.ScheduleDefinition, after: datetime) -> Iterator[datetime]:
    """The schedule's next ticks after ``after`` (a year's worth at most, so a missing one fails the test)."""
    ticks = schedule_execution_time_iterator(after.timestamp(), schedule.cron_schedule, "UTC")
    return itertools.islice(ticks, 800)


def _final_pass(daily: dg.ScheduleDefinition, times: performance.ReportTimes, day: date) -> datetime:
    """When ``daily`` runs the pass that makes ``day``'s outcomes final (read from its ticks and keys)."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    return next(t for t in _ticks(daily, end) if (day.isoformat(), "final") in daily_keys(t, times))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tier", ["HIGH", "MEDIUM", "LOW"])
def test_every_signal_of_a_sunday_is_settled_by_its_final_pass(case: str, tier: Tier) -> None:
    """A signal created in a Sunday's last millisecond is due (the outcome module's own last-possible-end
    test) at the final pass; for the slowest tier, not much earlier (the pass does not wait needlessly)."""
    params, times = params_of(case), times_of(case)
    sunday = date(2024, 3, 10)
    created = (
        int(datetime.combine(sunday + timedelta(days=1), datetime.min.time(), UTC).timestamp() * 1000) - 1
    )
    late = open_signal(msgspec.structs.replace(entry("BTCUSDT", created), priority=tier))
    assert late.tier == tier and late.created == created
    daily, _, _ = performance.report_schedules(times)
    final_ms = int(_final_pass(daily, times, sunday).timestamp() * 1000)
    assert is_due(late, params, final_ms)
    if tier == "LOW":  # the slowest tier in every case
        too_early = final_ms - int((performance.FINAL_MARGIN + timedelta(minutes=1)).total_seconds() * 1000)
        assert not is_due(late, params, too_early)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "last_day",
    [date(2024, 3, 10), date(2024, 12, 29), date(2025, 2, 28), date(2024, 12, 31), date(2024, 2, 29)],
)
def test_weekly_and_monthly_reports_run_after_the_final_daily_pass_of_their_last_day(
    case: str, last_day: date
) -> None:
    times = times_of(case)
    daily, weekly_schedule, monthly_schedule = performance.report_schedules(times)
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    margin = timedelta(minutes=30)  # the daily runs' time to finish
    final = _final_pass(daily, times, last_day)
    if last_day.weekday() == 6:  # a Sunday: a week ends
        week = (last_day - timedelta(days=6)).isoformat()
        weekly = next(t for t in _ticks(weekly_schedule, end) if weekly_key(t, times) == week)
        assert final + margin <= weekly < final + timedelta(hours=1)  # the first tick for it, soon after
        if case == "default":
            assert weekly.weekday() == 0 and weekly.date() == end.date()  # that Monday
    if (last_day + timedelta(days=1)).day == 1:  # a month ends
        month = last_day.replace(day=1).isoformat()
        monthly = next(t for t in _ticks(monthly_schedule, end) if monthly_key(t, times) == month)
        assert final + margin <= monthly < final + timedelta(hours=1)
        if case == "default":
            assert monthly.date() == end.date()  # that 1st


def test_monthly_tuning_runs_on_the_1st_after_the_month_s_final_outcomes_and_its_report() -> None:
    """The tuning proposal re-scores the month's candidates against their outcomes: it ticks on the 1st, after
    the final daily pass of the month's last day and after the monthly report, with the default settings."""
    from orchestration.tuning import tuning_schedule

    daily, _, monthly_schedule = performance.report_schedules(performance.REPORT_TIMES)
    last_day = date(2026, 2, 28)
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    tuning = next(_ticks(tuning_schedule, end))
    assert tuning.date() == end.date()  # the 1st
    assert tuning > _final_pass(daily, performance.REPORT_TIMES, last_day)
    assert tuning > next(_ticks(monthly_schedule, end))
