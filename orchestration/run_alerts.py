"""Failed Dagster runs raise a health incident (kind ``dagster_run``), so they show in ``tapewatch status`` and
on the dashboard instead of only in the Dagster UI.

- ``run_failure_alert_sensor`` (a run failure sensor, every 30 s): for each failed run of this code location,
  opens the ``dagster_run`` incident naming the job, the run id and its error, or, when one is open already,
  adds the job to it (``values.failing``: job → last failed run). Whether the daemon retries the run (jobs
  tagged ``dagster/max_retries``, see ``tapewatch.adapters.dagster_home``) is noted in the values.
- ``run_success_alert_sensor``: a later successful run of a failing job removes it from the incident; the
  incident closes when no failing job is left.

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


def _open(db: Database) -> HealthIncident | None:
    return next((i for i in open_health_incidents(db) if i.kind == KIND), None)


def record_failure(db: Database, job: str, run_id: str, error: str, *, retried: bool) -> HealthIncident:
    """Open the ``dagster_run`` incident for the failed ``run_id`` of ``job`` (or add it to the open one).

    ``retried``: the daemon re-launches the run (its ``dagster/max_retries`` tag); said in the action."""
    current = _open(db)
    failing: dict[str, Any] = dict(current.values.get("failing", {})) if current else {}
    failing[job] = {"run_id": run_id, "error": error[:MAX_ERROR_CHARS], "retried": retried}
    action = (
        "the Dagster daemon retries the run (dagster/max_retries); check the run's page if the retry fails too"
        if retried
        else "no automatic retry: read the run's page in the Dagster UI, fix the cause and re-run the job"
    )
    incident = open_incident(
        db,
        KIND,
        reason=f"Dagster run {run_id} of {job} failed: {error[:MAX_ERROR_CHARS] or 'no error recorded'}",
        action=action,
        values={"failing": failing},
    )
    log.warning("dagster run %s of %s failed (incident %d): %s", run_id, job, incident.id, error[:200])
    return incident


def record_success(db: Database, job: str, run_id: str) -> HealthIncident | None:
    """A run of ``job`` succeeded: take it off the open incident, closing the incident when no job is left
    failing. Returns the incident it changed (None: no open incident named ``job``)."""
    current = _open(db)
    if current is None or job not in current.values.get("failing", {}):
        return None
    failing = {k: v for k, v in current.values["failing"].items() if k != job}
    if failing:
        return open_incident(
            db, KIND, reason=current.reason, action=current.action, values={"failing": failing}
        )
    return close_incident(db, KIND, recovery=f"run {run_id} of {job} succeeded", values={"failing": {}})


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
        record_failure(db, run.job_name, run.run_id, failure_text(context), retried=_will_retry(run))


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
        changed = record_success(db, run.job_name, run.run_id)
    if changed is not None:
        context.log.info(f"{run.job_name} succeeded (run {run.run_id}): taken off the dagster_run incident")


defs = dg.Definitions(sensors=[run_failure_alert_sensor, run_success_alert_sensor])

__all__ = ["KIND", "defs", "record_failure", "record_success", "run_failure_alert_sensor"]
