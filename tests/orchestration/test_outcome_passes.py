"""``signal_outcomes`` on a day's first and final pass, against real PostgreSQL and a scripted klines server.

A hole (a minute missing from a signal's 1-minute klines) leaves the outcome unsettled on the day's first
pass (the run ``daily_report_schedule`` tags ``tapewatch/pass=first``) and is settled from the candles that
exist on the final pass and on a run by hand (no tag). The pass tags are those of the schedule's own run
requests, so the asset and the schedule must agree on them.

Two BTCUSDT / ETHUSDT HIGH LONG signals of 2024-03-05 created on a minute boundary (no aggTrades are
asked for: 2024 is older than the year Binance keeps them), entry 100, stop 99, R = 1; their klines: 99.5 in minute 1, the stop (99.0) in minute 3 only,
then 99.2 to the hold bound (99.3 in minute 46, after it):

- ``holed`` (BTCUSDT): minute 3 is missing. Unsettled on the first pass; settled EXPIRED on the final one
  (without minute 3 the stop is never reached; the exit is the 99.2 close at the hold bound).
- ``whole`` (ETHUSDT): every minute is there: STOPPED (-1.0995 R) on the first pass already.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import msgspec
import pytest

from assets.outcomes import signal_outcomes
from orchestration import performance
from orchestration.resources import BinanceRestResource, DatabaseResource, TapewatchSettings
from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.events import Candle
from tapewatch.outcome import OutcomeState
from tapewatch.signal import Signal, iso_timestamp, signal_id_for
from tests.adapters.rest_test_server import Reply, RestTestServer
from tests.adapters.signal_builders import entry
from tests.tapewatch.outcome_helpers import M1, binance_candles

D = "2024-03-05"
D_MS = int(datetime(2024, 3, 5, tzinfo=UTC).timestamp() * 1000)
HOLED_AT = D_MS + 10 * 60 * M1  # 10:00:00
WHOLE_AT = D_MS + 12 * 60 * M1  # 12:00:00
#: (ms after creation, price): the stop hit in minute 3 only (as in tests/tapewatch/test_outcome_holes.py).
LOSS_IN_MINUTE_3 = [(0, 100.0), (M1, 99.5), (3 * M1 + 10_000, 99.0), (4 * M1, 99.2), (46 * M1, 99.3)]
FEE = 0.0005
STOP_R = -1.0995
EXPIRED_R = (99.2 - 100.0) - FEE * (100.0 + 99.2)  # -0.8996: the 99.2 close at the 45-minute hold bound
LOG = "tapewatch.outcome_batch"


def long_signal(symbol: str, created: int) -> Signal:
    return msgspec.structs.replace(
        entry(symbol),
        signal_id=signal_id_for(symbol, "LONG", created),
        symbol=symbol,
        priority="HIGH",
        event_time=created,
        timestamp=iso_timestamp(created),
        entry_price=100.0,
        stop_loss=99.0,
        take_profit_1=101.0,
        take_profit_2=102.0,
    )


def history(created: int, *, without_minute: int | None = None) -> list[Candle]:
    candles = binance_candles([(created + t, p) for t, p in LOSS_IN_MINUTE_3])
    assert len(candles) == 47  # minutes 0 .. 46: the whole outcome window
    return [c for c in candles if without_minute is None or c.open_time != created + without_minute * M1]


def kline_row(c: Candle) -> list[object]:
    return [
        c.open_time, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume),
        c.close_time, str(c.quote_volume), c.trades, "0", "0", "0",
    ]  # fmt: skip


class KlinesServer:
    """``/fapi/v1/klines`` of two symbols, answered by symbol and ``startTime`` .. ``endTime`` as Binance does."""

    def __init__(self, candles: dict[str, list[Candle]]) -> None:
        self.candles = candles

    def __call__(self, path_and_query: str) -> Reply:
        query = {k: v[0] for k, v in parse_qs(urlsplit(path_and_query).query).items()}
        start, end = int(query["startTime"]), int(query["endTime"])
        inside = [c for c in self.candles.get(query["symbol"], []) if start <= c.open_time <= end]
        rows = [kline_row(c) for c in inside[: int(query["limit"])]]
        return Reply(body=msgspec.json.encode(rows))


@pytest.fixture
def klines_url() -> Iterator[str]:
    candles = {
        "BTCUSDT": history(HOLED_AT, without_minute=3),  # the hole where the stop was hit
        "ETHUSDT": history(WHOLE_AT),
    }
    with RestTestServer() as server:
        server.route("/fapi/v1/klines", KlinesServer(candles))
        yield server.url
        assert all(p.startswith("/fapi/v1/klines?") for p in server.paths())  # no aggTrades: too old


@contextlib.contextmanager
def stored(database_url: str, *signals: Signal) -> Iterator[SignalStore]:
    """A store on ``database_url`` holding ``signals``; its connections are closed after the block."""
    db = Database(database_url)
    try:
        store = SignalStore(db)
        store.save_signals(list(signals))
        yield store
    finally:
        db.dispose()


def resources(rest_url: str, database_url: str, var_dir: Path) -> dict[str, Any]:
    return {
        "settings": TapewatchSettings(overrides={"var_dir": str(var_dir)}),
        "database": DatabaseResource(url=database_url),
        "binance": BinanceRestResource(base_url=rest_url, max_retries=0, timeout=5),
    }


def scheduled(clock: str, res: dict[str, Any]) -> dg.RunRequest:
    """The run request ``daily_report_schedule`` makes for ``D`` at ``clock`` the next day (00:10 first,
    03:25 final with the default settings)."""
    repo = dg.Definitions.merge(performance.defs, dg.Definitions(resources=res)).get_repository_def()
    tick = datetime.fromisoformat(f"2024-03-06T{clock}+00:00")
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    [request] = performance.daily_report_schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == D
    return request


def materialize(res: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """Run ``signal_outcomes`` for ``D`` with the run ``tags``; its metadata values."""
    result = dg.materialize([signal_outcomes], partition_key=D, resources=res, tags=tags)
    assert result.success
    meta = result.asset_materializations_for_node("signal_outcomes")[0].metadata
    return {k: v.value for k, v in meta.items()}


@pytest.mark.parametrize("settling_run", ["final", "by hand"])
def test_a_hole_is_left_by_the_first_pass_and_settled_by_the_final_pass_or_a_run_by_hand(
    settling_run: str,
    klines_url: str,
    migrated_database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    holed, whole = long_signal("BTCUSDT", HOLED_AT), long_signal("ETHUSDT", WHOLE_AT)
    with stored(migrated_database_url, holed, whole) as store:
        res = resources(klines_url, migrated_database_url, tmp_path)

        first = scheduled("00:10", res)
        assert first.tags.get("tapewatch/pass") == "first"
        with caplog.at_level(logging.WARNING, logger=LOG):
            meta = materialize(res, dict(first.tags))
        # the first pass settles the whole signal and leaves the holed one to a later pass
        assert (meta["due"], meta["written"], meta["incomplete_klines"], meta["fetch_failed"]) == (2, 1, 1, 0)
        assert store.get_outcome(holed.signal_id) is None
        stopped = store.get_outcome(whole.signal_id)
        assert stopped is not None and stopped[1] == "batch"
        assert stopped[0].state is OutcomeState.STOPPED and stopped[0].pnl_r == pytest.approx(STOP_R)
        warnings = [r.getMessage() for r in caplog.records if r.name == LOG]
        assert len(warnings) == 1 and "retried by the next pass" in warnings[0]
        assert "BTCUSDT" in warnings[0] and "2024-03-05 10:03 UTC" in warnings[0]

        caplog.clear()
        tags = dict(scheduled("03:25", res).tags) if settling_run == "final" else {}
        assert tags.get("tapewatch/pass") == ("final" if settling_run == "final" else None)
        with caplog.at_level(logging.WARNING, logger=LOG):
            meta = materialize(res, tags)
        # only the holed signal is left; this pass settles it from the candles that exist
        assert meta["signals_pending"] == meta["due"] == meta["written"] == 1
        assert meta["incomplete_klines"] == 0
        settled = store.get_outcome(holed.signal_id)
        assert settled is not None and settled[1] == "batch"
        assert settled[0].state is OutcomeState.EXPIRED and settled[0].triggered
        assert settled[0].pnl_r == pytest.approx(EXPIRED_R)
        warnings = [r.getMessage() for r in caplog.records if r.name == LOG]
        assert len(warnings) == 1 and "settled from the candles that exist" in warnings[0]
        assert "2024-03-05 10:03 UTC" in warnings[0]
        assert store.get_outcome(whole.signal_id) == stopped  # the first pass's batch value stands
