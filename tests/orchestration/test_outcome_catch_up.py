"""Signals whose klines a pass cannot fetch: the day's ``klines_fetched`` check fails naming them, and
``outcomes_catch_up_schedule`` runs the day again on the next final-pass ticks, for ``CATCH_UP_DAYS`` days.

Before, such a signal was only counted (``fetch_failed``) and logged: the run succeeded, no check failed, and
after the day's final pass nothing asked for it again, so the day's numbers missed it for good. Real
PostgreSQL and a scripted klines server (the one of ``test_outcome_passes``): two HIGH LONG signals of
2024-03-05 whose klines stop them out; BTCUSDT's klines are refused (``-1121 Invalid symbol``) until the
server is repaired.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from assets.outcomes import FETCH_CHECK, signal_outcomes
from orchestration import performance
from orchestration.performance import CATCH_UP_DAYS, ReportTimes, catch_up_window
from orchestration.resources import DatabaseResource
from tapewatch.outcome import OutcomeParams, OutcomeState
from tapewatch.settings import load_settings
from tests.adapters.rest_test_server import Reply, RestTestServer
from tests.orchestration.test_outcome_passes import (
    HOLED_AT,
    STOP_R,
    WHOLE_AT,
    D,
    KlinesServer,
    history,
    long_signal,
    resources,
    scheduled,
    stored,
)

REFUSED = Reply(status=400, body=b'{"code":-1121,"msg":"Invalid symbol."}')


class FlakyKlines:
    """The klines of both symbols, except those of the symbols in ``down`` (refused as Binance does)."""

    def __init__(self) -> None:
        self.serve = KlinesServer({"BTCUSDT": history(HOLED_AT), "ETHUSDT": history(WHOLE_AT)})
        self.down = {"BTCUSDT"}

    def __call__(self, path_and_query: str) -> Reply:
        symbol = parse_qs(urlsplit(path_and_query).query)["symbol"][0]
        return REFUSED if symbol in self.down else self.serve(path_and_query)


@pytest.fixture
def flaky() -> Iterator[tuple[str, FlakyKlines]]:
    klines = FlakyKlines()
    with RestTestServer() as server:
        server.route("/fapi/v1/klines", klines)
        yield server.url, klines


def run(res: dict[str, Any], tags: dict[str, str]) -> tuple[dict[str, Any] | None, dg.AssetCheckEvaluation]:
    """``signal_outcomes`` for ``D`` with the run ``tags``: its metadata values (None when the run failed:
    no klines for any due signal) and its ``klines_fetched`` result (recorded either way)."""
    result = dg.materialize(
        [signal_outcomes], partition_key=D, resources=res, tags=tags, raise_on_error=False
    )
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == FETCH_CHECK)
    assert check.partition == D
    if not result.success:
        return None, check
    meta = result.asset_materializations_for_node("signal_outcomes")[0].metadata
    return {k: v.value for k, v in meta.items()}, check


def catch_up(day: str, res: dict[str, Any]) -> tuple[list[dg.RunRequest], str | None]:
    """The catch-up schedule's tick at 03:25 (the final passes' time with the default settings) of ``day``."""
    repo = dg.Definitions.merge(performance.defs, dg.Definitions(resources=res)).get_repository_def()
    tick = datetime.fromisoformat(f"{day}T03:25+00:00")
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=repo, resources={"database": res["database"]}
    ) as context:
        data = performance.outcomes_catch_up_schedule.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message


def test_a_signal_whose_klines_fail_fails_the_check_and_is_fetched_again_by_the_catch_up(
    flaky: tuple[str, FlakyKlines], migrated_database_url: str, tmp_path: Path
) -> None:
    url, klines = flaky
    refused, fine = long_signal("BTCUSDT", HOLED_AT), long_signal("ETHUSDT", WHOLE_AT)
    with stored(migrated_database_url, refused, fine) as store:
        res = resources(url, migrated_database_url, tmp_path)

        # the first pass: ETHUSDT settled, the run succeeds, the check fails (WARN: the final pass asks again)
        meta, check = run(res, dict(scheduled("00:10", res).tags))
        assert meta is not None and (meta["due"], meta["written"], meta["fetch_failed"]) == (2, 1, 1)
        assert not check.passed and check.severity is dg.AssetCheckSeverity.WARN
        assert refused.signal_id in str(check.metadata["list"].value)
        # the final pass: BTCUSDT alone is due and refused again: the run fails (no klines for any due
        # signal) and the day's check fails with ERROR, naming the signal and the error
        meta, check = run(res, dict(scheduled("03:25", res).tags))
        assert meta is None
        assert not check.passed and check.severity is dg.AssetCheckSeverity.ERROR
        listing = str(check.metadata["list"].value)
        assert refused.signal_id in listing and "BTCUSDT" in listing and "-1121" in listing
        assert fine.signal_id not in listing
        assert store.get_outcome(refused.signal_id) is None

        # the catch-up ticks with the final passes: not for the day whose own final pass runs at that tick ...
        requests, skipped = catch_up("2024-03-06", res)
        assert not requests and skipped and "has its batch outcome" in skipped
        # ... then each following day, for CATCH_UP_DAYS days
        assert CATCH_UP_DAYS == 7
        for day in ("2024-03-07", "2024-03-13"):
            requests, _ = catch_up(day, res)
            assert [(r.partition_key, r.tags.get("tapewatch/pass")) for r in requests] == [(D, "catch-up")]
        assert requests[0].run_key == f"{D}:catch-up:2024-03-12"  # a key a tick: each one runs
        requests, skipped = catch_up("2024-03-14", res)  # past the bound: the check stays failed
        assert not requests and skipped and "2024-03-06 .. 2024-03-12" in skipped

        klines.down.clear()  # the exchange answers again
        requests, _ = catch_up("2024-03-07", res)
        meta, check = run(res, dict(requests[0].tags))
        assert meta is not None and (meta["due"], meta["written"], meta["fetch_failed"]) == (1, 1, 0)
        assert check.passed and check.metadata["fetch_failed"].value == 0
        settled = store.get_outcome(refused.signal_id)
        assert settled is not None and settled[1] == "batch"
        assert settled[0].state is OutcomeState.STOPPED and settled[0].pnl_r == pytest.approx(STOP_R)
        requests, skipped = catch_up("2024-03-08", res)
        assert not requests and skipped and "has its batch outcome" in skipped


def test_a_catch_up_run_is_not_retried_and_does_not_fail_while_the_symbol_is_refused(
    flaky: tuple[str, FlakyKlines], migrated_database_url: str, tmp_path: Path
) -> None:
    """The review's case: a day whose only unsettled signal is on a symbol Binance refuses (delisted). Each
    catch-up run failed (no klines for any due signal) and was retried twice (the job's retry tags): three
    failed runs and a ``dagster_run`` incident each morning for 7 days. The run is not retried, and it does
    not fail: the day's ``klines_fetched`` check says ERROR, naming the signal."""
    url, _ = flaky
    refused = long_signal("BTCUSDT", HOLED_AT)
    with stored(migrated_database_url, refused):
        res = resources(url, migrated_database_url, tmp_path)
        (request,), _ = catch_up("2024-03-07", res)
        # the run's tags: the job's (dagster/max_retries=2) under the request's
        assert (request.tags["tapewatch/pass"], request.tags["dagster/max_retries"]) == ("catch-up", "0")
        meta, check = run(res, dict(request.tags))
        assert meta is not None and (meta["due"], meta["written"], meta["fetch_failed"]) == (1, 0, 1)
        assert not check.passed and check.severity is dg.AssetCheckSeverity.ERROR
        assert refused.signal_id in str(check.metadata["list"].value)
        # the day's own passes still fail the run when nothing can be fetched (an outage, a wrong URL)
        meta, check = run(res, dict(scheduled("03:25", res).tags))
        assert meta is None and not check.passed


def test_the_catch_up_says_so_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    res = resources("http://127.0.0.1:1", "postgresql://tw@127.0.0.1:1/x", tmp_path)
    res["database"] = DatabaseResource(url="postgresql://tw@127.0.0.1:1/x")
    requests, skipped = catch_up("2024-03-07", res)
    assert not requests and skipped and "not checked" in skipped and "TAPEWATCH_DATABASE_URL" in skipped


def at(day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}+00:00")


def test_the_catch_up_window_follows_the_final_pass() -> None:
    default = ReportTimes.from_params(OutcomeParams.from_settings(load_settings()))
    assert performance.outcomes_catch_up_schedule.cron_schedule == "25 3 * * *"  # with the final passes
    # at 03:25 on 03-12 the final pass of 03-11 runs: the catch-up covers the 7 days before it
    assert catch_up_window(at("2024-03-12", "03:25"), default) == (date(2024, 3, 4), date(2024, 3, 11))
    assert catch_up_window(at("2024-03-12", "00:10"), default) is None  # no final pass at that time
    assert catch_up_window(at("2024-01-02", "03:25"), default) is None  # nothing before the first day
    assert catch_up_window(at("2024-01-04", "03:25"), default) == (date(2024, 1, 1), date(2024, 1, 3))
    # a 2-day LOW hold: the final pass of 03-10 runs at 00:25 on 03-13
    two_days = ReportTimes.from_params(OutcomeParams.from_settings(load_settings(hold_time_low_max=2 * 1440)))
    assert catch_up_window(at("2024-03-13", "00:25"), two_days) == (date(2024, 3, 3), date(2024, 3, 10))
    assert performance.catch_up_schedule(two_days).cron_schedule == "25 0 * * *"


def test_a_day_whose_turned_away_candidate_has_no_would_be_outcome_is_caught_up(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A day with no signal but a candidate the gate turned away (cooldown) whose would-be outcome its passes
    could not settle: the catch-up runs the day again (its job settles candidates too), until the outcome is
    stored."""
    from tapewatch.adapters.candidate_outcome_store import candidates_to_settle, save_candidate_outcomes
    from tapewatch.adapters.db import Database
    from tapewatch.adapters.signal_store import SignalStore
    from tapewatch.outcome import Outcome
    from tests.adapters.signal_builders import candidate

    cooled = candidate("SOLUSDT", HOLED_AT, fate="cooldown")
    assert cooled.plan is not None
    db = Database(migrated_database_url)
    try:
        SignalStore(db).save_candidates([cooled])
        res = resources("http://127.0.0.1:1", migrated_database_url, tmp_path)
        requests, _ = catch_up("2024-03-07", res)
        assert [(r.partition_key, r.tags.get("tapewatch/pass")) for r in requests] == [(D, "catch-up")]
        (pending,) = candidates_to_settle(db, HOLED_AT - 1, HOLED_AT + 1)
        settled = Outcome(signal=pending, state=OutcomeState.EXPIRED, as_of=pending.created + 3_600_000)
        save_candidate_outcomes(db, [settled])
        requests, skipped = catch_up("2024-03-08", res)
        assert not requests and skipped and "would-be outcome" in skipped
    finally:
        db.dispose()
