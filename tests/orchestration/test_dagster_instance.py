"""The Dagster instance ``tapewatch dagster`` generates: run monitoring, retries, retention, one rescan at a
time, and the runs a previous instance left in progress.

The generated ``dagster.yaml`` is loaded by Dagster itself, with only its storage swapped for SQLite in a
temporary directory (the queue, retry and monitoring decisions read the instance's settings, not the
storage), so each test has an instance of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from orchestration.definitions import RESOURCES, defs
from orchestration.resources import BinanceRestResource, RedisResource
from tapewatch.adapters.dagster_home import (
    RUN_MAX_RUNTIME_S,
    RUN_START_TIMEOUT_S,
    SKIPPED_TICK_RETENTION_DAYS,
    TICK_RETENTION_DAYS,
    dagster_yaml,
    fail_orphaned_runs,
)
from tapewatch.adapters.dagster_runs import MAX_RETRIES, RESCAN_JOB
from tapewatch.adapters.supervisor import ChildFailed
from tapewatch.settings import Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the generated dagster.yaml, storage in SQLite (and the two URLs the code
    location's resources need, as ``tapewatch dagster`` exports them; no run connects to them here)."""
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", "postgresql://unused/x")
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", "redis://unused:6379/0")
    text = dagster_yaml("postgresql+psycopg2://unused/x", 4, tmp_path)
    config = json.loads(text.split("\n", 1)[1])
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "sqlite")}}
    (tmp_path / "dagster.yaml").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _run(instance: dg.DagsterInstance, job: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """A run of the code location's ``job`` (with the job's own tags) in ``status``."""
    job_def = defs.resolve_job_def(job)
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name="orchestration.definitions", attribute="defs")
            ),
            repository_name=SINGLETON_REPOSITORY_NAME,
        ),
        job_name=job,
    )
    config = {"ops": {"universe_exclusion": {"config": {"symbol": "XUSDT", "reason": "r", "detail": "d"}}}}
    return instance.create_run_for_job(
        job_def,
        status=status,
        tags=dict(job_def.tags),
        remote_job_origin=origin,
        run_config=config if job == "universe_exclusion_job" else None,
    )


def test_the_instance_monitors_runs_and_purges_old_ticks(instance: dg.DagsterInstance) -> None:
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == RUN_START_TIMEOUT_S
    assert instance.run_monitoring_max_runtime_seconds == RUN_MAX_RUNTIME_S > 0
    for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
        kept = instance.get_tick_retention_settings(kind)
        assert kept[TickStatus.SKIPPED] == SKIPPED_TICK_RETENTION_DAYS
        assert kept[TickStatus.SUCCESS] == kept[TickStatus.FAILURE] == TICK_RETENTION_DAYS


def test_a_second_rescan_waits_while_one_runs(instance: dg.DagsterInstance) -> None:
    _run(instance, RESCAN_JOB, dg.DagsterRunStatus.STARTED)
    waiting = _run(instance, RESCAN_JOB, dg.DagsterRunStatus.QUEUED)
    other = _run(instance, "universe_quick_check_job", dg.DagsterRunStatus.QUEUED)
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    daemon._logger = logging.getLogger("queue")
    dequeued = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    ids = {run.run_id for run in dequeued}
    assert other.run_id in ids and waiting.run_id not in ids


@pytest.mark.parametrize(
    "job", ["universe_exclusion_job", RESCAN_JOB, "daily_performance_job", "monthly_report_job"]
)
def test_failed_runs_of_the_important_jobs_are_retried(instance: dg.DagsterInstance, job: str) -> None:
    """An emergency exclusion's run key is never requested again: the daemon's retry must repeat it."""
    failed = _run(instance, job, dg.DagsterRunStatus.FAILURE)
    assert failed.tags["dagster/max_retries"] == str(MAX_RETRIES)
    assert auto_reexecution_should_retry_run(instance, failed, None)


def test_runs_left_in_progress_by_a_previous_instance_are_failed(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        started = _run(instance, RESCAN_JOB, dg.DagsterRunStatus.STARTED)
        starting = _run(instance, "universe_quick_check_job", dg.DagsterRunStatus.STARTING)
        queued = _run(instance, "universe_quick_check_job", dg.DagsterRunStatus.QUEUED)
        done = _run(instance, "universe_quick_check_job", dg.DagsterRunStatus.SUCCESS)

    # the one-shot process `tapewatch dagster` runs before its webserver and daemon
    assert sorted(fail_orphaned_runs(home, dict(os.environ))) == sorted([started.run_id, starting.run_id])

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {r.run_id: instance.get_run_by_id(r.run_id) for r in (started, starting, queued, done)}
    status = {run_id: run.status for run_id, run in runs.items() if run is not None}
    assert status[started.run_id] is status[starting.run_id] is dg.DagsterRunStatus.FAILURE
    assert status[queued.run_id] is dg.DagsterRunStatus.QUEUED
    assert status[done.run_id] is dg.DagsterRunStatus.SUCCESS


@pytest.mark.parametrize(("prefix", "rest_url"), [(None, None), ("h9test:", "http://127.0.0.1:9/")])
def test_resources_fall_back_to_the_settings_when_their_variables_are_unset(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str | None, rest_url: str | None
) -> None:
    """The README's ``dagster dev`` route exports only the database and Redis URLs."""
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", "postgresql://unused/x")
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", redis_url)
    for name, value in (("TAPEWATCH_REDIS_PREFIX", prefix), ("TAPEWATCH_BINANCE_REST_URL", rest_url)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    seen: dict[str, str] = {}

    @dg.op
    def uses(redis: RedisResource, binance: BinanceRestResource) -> None:
        with redis.open() as state:
            seen["prefix"] = state.keys.prefix
        seen["rest"] = binance.run(lambda client: _base_url(client))

    @dg.job(resource_defs={"redis": RESOURCES["redis"], "binance": RESOURCES["binance"]})
    def job() -> None:
        uses()

    assert job.execute_in_process().success
    defaults = Settings.model_fields
    assert seen["prefix"] == (prefix or defaults["redis_prefix"].default)
    assert seen["rest"].rstrip("/") == (rest_url or defaults["binance_rest_url"].default).rstrip("/")


async def _base_url(client: object) -> str:
    """The base URL the client sends its requests to (no request is made)."""
    return str(client._http.base_url)  # type: ignore[attr-defined]


def test_a_failure_to_fail_orphaned_runs_is_reported_with_the_process_s_last_lines(tmp_path: Path) -> None:
    with pytest.raises(ChildFailed, match="previous Dagster instance left failed"):
        fail_orphaned_runs(tmp_path / "no-such-home", dict(os.environ))


def test_our_module_loggers_reach_the_run_log(instance: dg.DagsterInstance) -> None:
    """A warning logged by tapewatch code inside an asset is in the run's event log (the UI's run page),
    not only on the process's stderr; INFO too, DEBUG not."""
    assert instance.managed_python_loggers == ["tapewatch", "assets", "orchestration"]
    assert instance.python_log_level == "INFO"
    module_log = logging.getLogger("tapewatch.outcome_batch")

    @dg.asset
    def logs_from_a_module() -> int:
        module_log.warning("MODULE-WARNING holes in the candles", extra={"symbol": "BTCUSDT"})
        module_log.info("MODULE-INFO capped outcome")
        module_log.debug("MODULE-DEBUG detail")
        return 1

    result = dg.materialize([logs_from_a_module], instance=instance)
    found = {
        (entry.level, entry.user_message)
        for entry in instance.all_logs(result.run_id)
        if "MODULE-" in (entry.user_message or "")
    }
    assert found == {
        (logging.WARNING, "MODULE-WARNING holes in the candles"),
        (logging.INFO, "MODULE-INFO capped outcome"),
    }
