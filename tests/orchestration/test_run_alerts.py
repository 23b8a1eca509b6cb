"""A failed Dagster run opens a ``dagster_run`` health incident naming the job and the run id; the incident
closes once every failing job has succeeded again (real runs in an ephemeral instance, real PostgreSQL)."""

import dagster as dg

from orchestration.definitions import defs
from orchestration.resources import DatabaseResource
from orchestration.run_alerts import (
    KIND,
    record_failure,
    run_failure_alert_sensor,
    run_success_alert_sensor,
)
from tapewatch.adapters.dagster_runs import RETRY_TAGS
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import list_health_incidents, open_health_incidents


@dg.op
def flaky(context: dg.OpExecutionContext) -> None:
    if context.run.tags.get("fail") == "yes":
        raise RuntimeError("klines endpoint answered 503")


@dg.job(tags=RETRY_TAGS)
def retried_job() -> None:
    flaky()


@dg.job
def plain_job() -> None:
    flaky()


@dg.job(partitions_def=dg.StaticPartitionsDefinition(["2024-03-05", "2024-03-06"]))
def daily_job() -> None:
    flaky()


def _react(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    *,
    fail: bool,
    url: str,
    partition: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Run ``job`` (failing or not; of ``partition``) and evaluate the matching alert sensor on its outcome."""
    result = job.execute_in_process(
        instance=instance,
        tags={"fail": "yes" if fail else "no"},
        raise_on_error=False,
        partition_key=partition,
    )
    kind = dg.DagsterEventType.RUN_FAILURE if fail else dg.DagsterEventType.RUN_SUCCESS
    event = next(e for e in result.all_events if e.event_type is kind)
    context = dg.build_run_status_sensor_context(
        sensor_name="alerts",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),  # with the tags the instance added
        dagster_event=event,
        resources={"database": DatabaseResource(url=url)},
    )
    if fail:
        run_failure_alert_sensor(context.for_run_failure())
    else:
        run_success_alert_sensor(context)
    return result


def test_failed_runs_open_an_incident_that_closes_when_they_succeed(
    db: Database, migrated_database_url: str
) -> None:
    instance = dg.DagsterInstance.ephemeral(settings={"run_retries": {"enabled": True}})  # as dagster.yaml
    first = _react(instance, retried_job, fail=True, url=migrated_database_url)
    (incident,) = open_health_incidents(db)
    assert incident.kind == KIND
    assert first.run_id in incident.reason and "retried_job" in incident.reason and "503" in incident.reason
    assert "retries" in incident.action
    assert incident.values["failing"]["retried_job"]["run_id"] == first.run_id

    second = _react(instance, plain_job, fail=True, url=migrated_database_url)
    (incident,) = open_health_incidents(db)  # the same incident, now naming both jobs
    assert incident.values["failing"]["plain_job"] == {
        "run_id": second.run_id,
        "error": incident.values["failing"]["plain_job"]["error"],
        "retried": False,
    }
    assert "503" in incident.values["failing"]["plain_job"]["error"]

    _react(instance, retried_job, fail=False, url=migrated_database_url)
    (incident,) = open_health_incidents(db)
    assert set(incident.values["failing"]) == {"plain_job"}

    recovered = _react(instance, plain_job, fail=False, url=migrated_database_url)
    assert open_health_incidents(db) == []
    (closed,) = list_health_incidents(db, kind=KIND)
    assert closed.recovery == f"run {recovered.run_id} of plain_job succeeded"


def test_a_partitioned_run_closes_only_its_own_partitions_failure(
    db: Database, migrated_database_url: str
) -> None:
    """The review's case: the catch-up runs daily_performance_job for other days at the final pass's tick,
    and the success of any of them closed the incident of the failed final pass of another day."""
    instance = dg.DagsterInstance.ephemeral()
    url = migrated_database_url
    failed = _react(instance, daily_job, fail=True, url=url, partition="2024-03-06")
    (incident,) = open_health_incidents(db)
    assert f"run {failed.run_id} of daily_job [2024-03-06] failed" in incident.reason
    assert incident.values["failing"]["daily_job [2024-03-06]"]["partition"] == "2024-03-06"
    _react(instance, daily_job, fail=False, url=url, partition="2024-03-05")  # another day: still failing
    (incident,) = open_health_incidents(db)
    assert set(incident.values["failing"]) == {"daily_job [2024-03-06]"}
    again = _react(instance, daily_job, fail=False, url=url, partition="2024-03-06")
    assert open_health_incidents(db) == []
    (closed,) = list_health_incidents(db, kind=KIND)
    assert closed.recovery == f"run {again.run_id} of daily_job [2024-03-06] succeeded"
    # an entry recorded before the partitions were told apart: any success of its job takes it off, as then
    record_failure(db, "daily_job", "r-old", "boom", retried=False)
    _react(instance, daily_job, fail=False, url=url, partition="2024-03-05")
    assert open_health_incidents(db) == []


def test_the_code_location_runs_the_alert_sensors() -> None:
    for name in ("run_failure_alert_sensor", "run_success_alert_sensor"):
        sensor = defs.get_sensor_def(name)
        assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
