"""Failed Dagster runs raise a health incident (kind ``dagster_run``), so they show in ``tapewatch status`` and
on the dashboard instead of only in the Dagster UI.

- ``run_failure_alert_sensor`` (a run failure sensor, every 30 s): for each failed run of this code location,
  opens the ``dagster_run`` incident naming the job (and the partition of a partitioned run), the run id and
  its error, or, when one is open already, adds it to it (``values.failing``: :func:`failing_key` → last
  failed run). Whether the daemon retries the run (jobs tagged ``dagster/max_retries``, see
  ``tapewatch.adapters.dagster_home``) is noted in the values.
- ``run_success_alert_sensor``: a later successful run of a failing job removes it from the incident — of a
  partitioned job, only its own partition's entry (a catch-up run of another day runs the same job at the
  same tick); the incident closes when no entry is left.

PostgreSQL down: the tick fails (raises StorageUnavailable) and Dagster evaluates the run again on the
next tick, so no failure is lost.
"""

import logging
from typing import Any

import dagster as dg

from orchestration.resources import DatabaseResource
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import (
    HealthIncident,
    close_incident,
    open_health_incidents,
    open_incident,
)

log = logging.getLogger(__name__)

KIND = "dagster_run"
SENSOR_INTERVAL = 30
#: Longest error text kept in the incident (the run's page has the whole of it).
MAX_ERROR_CHARS = 500
#: The tag Dagster sets on a partitioned run: its partition key.
PARTITION_TAG = "dagster/partition"


def failing_key(job: str, partition: str | None) -> str:
    """A failing run's entry in the incident's ``values.failing``: the job, and a partitioned run's partition
    (``daily_performance_job [2024-03-05]``), so that a success of another partition leaves it open."""
    return job if partition is None else f"{job} [{partition}]"


def _open(db: Database) -> HealthIncident | None:
    return next((i for i in open_health_incidents(db) if i.kind == KIND), None)


def record_failure(
    db: Database, job: str, run_id: str, error: str, *, retried: bool, partition: str | None = None
) -> HealthIncident:
    """Open the ``dagster_run`` incident for the failed ``run_id`` of ``job`` (of ``partition``, None: not
    partitioned), or add it to the open one.

    ``retried``: the daemon re-launches the run (its ``dagster/max_retries`` tag); said in the action."""
    current = _open(db)
    failing: dict[str, Any] = dict(current.values.get("failing", {})) if current else {}
    failed: dict[str, Any] = {"run_id": run_id, "error": error[:MAX_ERROR_CHARS], "retried": retried}
    failing[failing_key(job, partition)] = failed if partition is None else {**failed, "partition": partition}
    action = (
        "the Dagster daemon retries the run (dagster/max_retries); check the run's page if the retry fails too"
        if retried
        else "no automatic retry: read the run's page in the Dagster UI, fix the cause and re-run the job"
    )
    incident = open_incident(
        db,
        KIND,
        reason=f"Dagster run {run_id} of {failing_key(job, partition)} failed: "
        f"{error[:MAX_ERROR_CHARS] or 'no error recorded'}",
        action=action,
        values={"failing": failing},
    )
    log.warning("dagster run %s of %s failed (incident %d): %s", run_id, job, incident.id, error[:200])
    return incident


def record_success(
    db: Database, job: str, run_id: str, partition: str | None = None
) -> HealthIncident | None:
    """A run of ``job`` (of ``partition``, None: not partitioned) succeeded: take its entry off the open
    incident, closing the incident when no entry is left. A partitioned run also takes off the job's entry
    without a partition, one recorded before the partitions were told apart (then any success closed it).
    Returns the incident it changed (None: no open incident with such an entry)."""
    current = _open(db)
    done = {failing_key(job, partition), job}
    if current is None or not done & set(current.values.get("failing", {})):
        return None
    failing = {k: v for k, v in current.values["failing"].items() if k not in done}
    if failing:
        return open_incident(
            db, KIND, reason=current.reason, action=current.action, values={"failing": failing}
        )
    recovery = f"run {run_id} of {failing_key(job, partition)} succeeded"
    return close_incident(db, KIND, recovery=recovery, values={"failing": {}})


#: The tag the instance sets on a failed run when run retries are on: its own decision to re-launch it.
WILL_RETRY_TAG = "dagster/will_retry"


def _will_retry(run: dg.DagsterRun) -> bool:
    """Whether Dagster re-launches the failed run (its decision, not a copy of it: absent when run retries are
    off in dagster.yaml)."""
    return run.tags.get(WILL_RETRY_TAG) == "true"


def failure_text(context: dg.RunFailureSensorContext) -> str:
    """Why the run failed, on one line: each failed step with the exception its op raised (Dagster's step
    wrapper left out), else the run's own failure message."""
    parts = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        if error is not None and error.cause is not None and "StepExecutionError" in (error.cls_name or ""):
            error = error.cause
        what = f"{error.cls_name}: {error.message}" if error is not None else event.message or "failed"
        parts.append(f"step {event.step_key}: {what}")
    text = "; ".join(parts) or context.failure_event.message or ""
    return " ".join(text.split())


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Opens a dagster_run health incident naming the job and run id of every failed run.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    run = context.dagster_run
    with database.open() as db:
        record_failure(
            db,
            run.job_name,
            run.run_id,
            failure_text(context),
            retried=_will_retry(run),
            partition=run.tags.get(PARTITION_TAG),
        )


@dg.run_status_sensor(
    name="run_success_alert_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Closes the dagster_run health incident once every failing job has succeeded again.",
)
def run_success_alert_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource) -> None:
    run = context.dagster_run
    with database.open() as db:
        changed = record_success(db, run.job_name, run.run_id, run.tags.get(PARTITION_TAG))
    if changed is not None:
        key = failing_key(run.job_name, run.tags.get(PARTITION_TAG))
        context.log.info(f"{key} succeeded (run {run.run_id}): taken off the dagster_run incident")


defs = dg.Definitions(sensors=[run_failure_alert_sensor, run_success_alert_sensor])

__all__ = ["KIND", "defs", "failing_key", "record_failure", "record_success", "run_failure_alert_sensor"]
