"""Launch a job in the running Dagster instance and wait for its end, through the webserver's GraphQL API.

Used by ``tapewatch rescan`` and the dashboard's Rescan button (:class:`DagsterRuns`); nothing here imports
the code location (``orchestration``): the job is named, the webserver resolves it. Errors are :class:`DagsterUnavailable` with what to do.
A failed run says why through :meth:`DagsterRuns.failures` (its step failures, read from the run's event log).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tapewatch.errors import TapewatchError

#: The universe rescan job (``orchestration.universe``): ``tapewatch rescan`` and the dashboard launch it by
#: this name, and its presence tells that the code location has loaded.
RESCAN_JOB = "universe_rescan_job"
#: The run tag the run coordinator limits to one run per value (``tag_concurrency_limits`` of the generated
#: ``dagster.yaml``) and its value on the rescan job: never two rescans at once (schedule, CLI, dashboard).
EXCLUSIVE_TAG = "tapewatch/exclusive"
RESCAN_EXCLUSIVE = "universe_rescan"
#: Automatic re-executions of a failed run (``run_retries`` of the generated ``dagster.yaml``): the tags of
#: the jobs that must not stay failed (the rescan, the reports, the emergency exclusions; the daemon launches
#: the retry itself, so a sensor's run key that is never requested again does not prevent it).
MAX_RETRIES = 2
RETRY_TAGS: Mapping[str, str] = {"dagster/max_retries": str(MAX_RETRIES)}
#: Run statuses after which a run never changes again.
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


class DagsterUnavailable(TapewatchError):
    """No Dagster webserver answers at the configured host and port, or it refused the request."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A launched run: its id, its last status (SUCCESS, FAILURE, CANCELED, or the last seen on timeout)
    and how long we waited for it."""

    run_id: str
    status: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"

    @property
    def finished(self) -> bool:
        """False when we stopped waiting before the run ended (it goes on in Dagster)."""
        return self.status in FINISHED


#: Longest error message kept per link of an error chain (a message may embed a whole response body).
MAX_ERROR_CHARS = 1000
#: The wrapper Dagster puts around an exception raised in an op or asset: its own message says only that.
_STEP_WRAPPER = "DagsterExecutionStepExecutionError"


@dataclass(frozen=True, slots=True)
class RunFailure:
    """Why a run failed: the step that failed (None when the run failed outside any step, e.g. its worker
    did not start) and its error chain, outermost first (each ``module.Class: message``)."""

    step: str | None
    errors: tuple[str, ...]

    def lines(self) -> list[str]:
        """Human-readable lines: the step and its error, then each cause."""
        where = f"step {self.step} failed" if self.step else "the run failed"
        first, *causes = self.errors or ("(no error recorded)",)
        return [f"{where}: {first}", *(f"   caused by {cause}" for cause in causes)]


def _error_chain(error: Mapping[str, Any] | None, fallback: str) -> tuple[str, ...]:
    """The messages of a GraphQL ``PythonError`` and its causes; Dagster's step wrapper is left out when
    it has a cause (the cause is the exception the op raised)."""
    if not error:
        return (fallback.strip(),) if fallback.strip() else ()
    links = [error, *(error.get("causes") or [])]
    if len(links) > 1 and links[0].get("className") == _STEP_WRAPPER:
        links = links[1:]
    texts = (" ".join(str(link.get("message") or link.get("className") or "").split()) for link in links)
    return tuple(text[:MAX_ERROR_CHARS] for text in texts if text)


def _lists_steps(run: RunFailure) -> bool:
    """True for Dagster's plain run failure message, 'Execution of run for "job" failed. Steps failed: [...]'."""
    return len(run.errors) == 1 and "Steps failed:" in run.errors[0]


# The run's event log (``logsForRun``), only its failure events. Schema of dagster-graphql 1.13:
# ExecutionStepFailureEvent and RunFailureEvent are MessageEvents (message, stepKey) and ErrorEvents (error:
# PythonError, whose ``causes`` are the explicit ``raise ... from`` chain).
_FAILURES_QUERY = """
query RunFailures($runId: ID!, $cursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey message error { ...errorChain } }
        ... on RunFailureEvent { message error { ...errorChain } }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
fragment errorChain on PythonError { className message causes { className message } }
"""


# The runs of a job that hold its place in the run queue (``tag_concurrency_limits``: one rescan at a time).
_AHEAD_QUERY = """
query RunsAhead($job: String!) {
  runsOrError(filter: {pipelineName: $job, statuses: [STARTING, STARTED, CANCELING]}, limit: 5) {
    __typename
    ... on Runs { results { runId status startTime creationTime } }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True, slots=True)
class RunAhead:
    """A run of the same job that is going on (STARTING, STARTED, CANCELING) while ours waits in the queue;
    ``since``: when it started (epoch seconds; its creation while it has not started yet)."""

    run_id: str
    status: str
    since: float

    def describe(self, now: float) -> str:
        """``run 661aa01e-… (STARTED 40 s ago)``."""
        return f"run {self.run_id} ({self.status} {max(0.0, now - self.since):.0f} s ago)"


def webserver_problem(host: str, port: int, timeout: float = 5.0) -> BaseException | None:
    """None when a Dagster webserver answers ``/server_info`` on ``host:port``; otherwise the error."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/server_info", timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as exc:
        return exc
    if not isinstance(body, dict) or "dagster_webserver_version" not in body:
        return ValueError(f"something else answers at {host}:{port} (not a Dagster webserver)")
    return None


_JOBS_QUERY = (
    b'{"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"}'
)


def job_available(host: str, port: int, job_name: str, timeout: float = 10.0) -> bool:
    """True when the webserver on ``host:port`` has loaded a code location with ``job_name`` (the instance
    is ready for ``tapewatch rescan``); False while it loads, or when nothing answers."""
    request = urllib.request.Request(
        f"http://{host}:{port}/graphql", data=_JOBS_QUERY, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.loads(resp.read())
        nodes = body["data"]["repositoriesOrError"].get("nodes") or []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return any(job.get("name") == job_name for node in nodes for job in node.get("jobs") or [])


@dataclass(frozen=True, slots=True)
class DagsterRuns:
    """The runs of the Dagster webserver on ``host:port``, through its GraphQL API: :meth:`launch` submits a
    job and returns at once, :meth:`status` reads a run's status (one short HTTP request, no client to build).
    ``tapewatch rescan`` (:func:`launch_and_wait`) and the dashboard's Rescan button both use it."""

    host: str
    port: int
    timeout: float = 10.0

    def advice(self, exc: BaseException) -> str:
        """What to do when nothing (or something else) answers."""
        return (
            f"no Dagster instance answers at http://{self.host}:{self.port} ({type(exc).__name__}: {exc}); "
            "start it with `tapewatch dagster` or `make demo`, or set TAPEWATCH_DAGSTER_HOST / "
            "TAPEWATCH_DAGSTER_PORT"
        )

    def _refused(self, exc: BaseException, what: str) -> DagsterUnavailable:
        # The client wraps a failed HTTP request (nothing listening, a timeout) in the same error class as a
        # refusal by Dagster; the cause tells them apart.
        if exc.__cause__ is not None:
            return DagsterUnavailable(self.advice(exc.__cause__))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DagsterUnavailable(f"{what}: {first}")

    def launch(self, job_name: str) -> str:
        """Submit a run of ``job_name``; its run id. DagsterUnavailable when the webserver does not answer or
        does not know the job."""
        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        # the client hides a refused connection in a generic query error: ask the webserver first
        problem = webserver_problem(self.host, self.port, timeout=self.timeout)
        if problem is not None:
            raise DagsterUnavailable(self.advice(problem))
        try:
            client = DagsterGraphQLClient(self.host, port_number=self.port, timeout=max(1, int(self.timeout)))
            return str(client.submit_job_execution(job_name))
        except DagsterGraphQLClientError as exc:
            raise self._refused(exc, f"Dagster refused to launch {job_name}") from exc
        except Exception as exc:  # the client connects (and fetches the schema) on construction
            raise DagsterUnavailable(self.advice(exc)) from exc

    def _query(self, query: str, variables: Mapping[str, Any], field: str) -> dict[str, Any]:
        """``data[field]`` of one GraphQL request (with its ``__typename``); DagsterUnavailable when the
        webserver does not answer, or answers something else."""
        body = json.dumps({"query": query, "variables": dict(variables)}).encode()
        request = urllib.request.Request(
            f"http://{self.host}:{self.port}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                answer = json.loads(resp.read())
            result = answer["data"][field]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DagsterUnavailable(self.advice(exc)) from exc
        if not isinstance(result, dict) or "__typename" not in result:
            raise DagsterUnavailable(self.advice(ValueError(f"unexpected {field}: {result!r}"[:300])))
        return result

    def status(self, run_id: str) -> str:
        """The status of run ``run_id`` (QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ...).
        DagsterUnavailable when the webserver does not answer or does not know the run."""
        from dagster_graphql.client.client_queries import GET_PIPELINE_RUN_STATUS_QUERY

        result = self._query(GET_PIPELINE_RUN_STATUS_QUERY, {"runId": run_id}, "pipelineRunOrError")
        kind = result["__typename"]
        if kind in ("Run", "PipelineRun"):
            return str(result["status"])
        raise DagsterUnavailable(f"Dagster does not know run {run_id}: {result.get('message') or kind}")

    def runs_ahead(self, job_name: str, run_id: str) -> list[RunAhead]:
        """The other runs of ``job_name`` going on now (what a QUEUED ``run_id`` waits for when the job runs
        one at a time), oldest first. DagsterUnavailable when the webserver does not answer or cannot list."""
        result = self._query(_AHEAD_QUERY, {"job": job_name}, "runsOrError")
        if result["__typename"] != "Runs":
            raise DagsterUnavailable(
                f"Dagster cannot list the runs of {job_name}: {result.get('message') or result['__typename']}"
            )
        ahead = [
            RunAhead(
                str(run["runId"]), str(run["status"]), float(run.get("startTime") or run["creationTime"])
            )
            for run in result.get("results") or []
            if run.get("runId") != run_id
        ]
        return sorted(ahead, key=lambda run: run.since)

    def failures(self, run_id: str, page: int = 1000, max_pages: int = 20) -> list[RunFailure]:
        """Why run ``run_id`` failed: each failed step with its error, in the order they failed; the run's own
        failure only when no step failed or it names an error the steps do not. Reads at most ``max_pages``
        pages of ``page`` events. DagsterUnavailable when the webserver does not answer or does not know the
        run."""
        steps: list[RunFailure] = []
        runs: list[RunFailure] = []
        cursor: str | None = None
        for _ in range(max_pages):
            variables = {"runId": run_id, "cursor": cursor, "limit": page}
            result = self._query(_FAILURES_QUERY, variables, "logsForRun")
            if result["__typename"] != "EventConnection":
                raise DagsterUnavailable(
                    f"Dagster cannot list the events of run {run_id}: "
                    f"{result.get('message') or result['__typename']}"
                )
            for event in result.get("events") or []:
                kind, message = event.get("__typename"), str(event.get("message") or "")
                if kind == "ExecutionStepFailureEvent":
                    steps.append(RunFailure(event.get("stepKey"), _error_chain(event.get("error"), message)))
                elif kind == "RunFailureEvent":
                    runs.append(RunFailure(None, _error_chain(event.get("error"), message)))
            cursor = result.get("cursor")
            if not result.get("hasMore"):
                break
        if not steps:
            return runs
        # the run's failure repeats the step's error (Dagster 1.13) or says "Steps failed: [...]": keep it only
        # when it names an error of its own
        known = {step.errors for step in steps}
        return steps + [run for run in runs if run.errors not in known and not _lists_steps(run)]


def launch_and_wait(
    host: str,
    port: int,
    job_name: str,
    *,
    timeout: float = 900.0,
    poll: float = 1.0,
    on_status: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Submit ``job_name`` and poll its status until it finishes or ``timeout`` seconds pass.

    ``on_status`` is called whenever the status changes (QUEUED, STARTING, STARTED, ...), and while the run is
    QUEUED behind another run of the same job, with that run (:func:`wait_for_run`). Raises
    DagsterUnavailable when the webserver does not answer or does not know the job."""
    runs = DagsterRuns(host, port, timeout=30.0)
    run_id = runs.launch(job_name)
    return wait_for_run(
        runs, job_name, run_id, timeout=timeout, poll=poll, on_status=on_status, sleep=sleep, clock=clock
    )


#: Seconds between the looks at what a QUEUED run waits for.
AHEAD_EVERY = 5.0


def wait_for_run(
    runs: DagsterRuns,
    job_name: str,
    run_id: str,
    *,
    timeout: float = 900.0,
    poll: float = 1.0,
    on_status: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> RunOutcome:
    """Poll run ``run_id`` of ``job_name`` until it finishes or ``timeout`` seconds pass (see
    :func:`launch_and_wait`). While it is QUEUED, every :data:`AHEAD_EVERY` s, the other runs of the job going
    on are named when they change (``QUEUED behind run … (STARTED 40 s ago) …``): a job that runs one at a time
    (the rescan) waits for them, which otherwise reads as a hang."""
    t0, last, ahead_said, ahead_at = clock(), "", "", -AHEAD_EVERY
    while True:
        status = runs.status(run_id)
        if status != last and on_status is not None:
            on_status(status)
        last = status
        if status in FINISHED or clock() - t0 > timeout:
            return RunOutcome(run_id, status, clock() - t0)
        if status == "QUEUED" and on_status is not None and clock() - ahead_at >= AHEAD_EVERY:
            ahead_at = clock()
            ahead_ids, note = _ahead(runs, job_name, run_id, wall())
            if ahead_ids != ahead_said and note:
                on_status(note)
            ahead_said = ahead_ids
        sleep(poll)


def _ahead(runs: DagsterRuns, job_name: str, run_id: str, now: float) -> tuple[str, str]:
    """The ids of the runs ``run_id`` waits behind (to say it once per change) and the line that says so."""
    try:
        ahead = runs.runs_ahead(job_name, run_id)
    except DagsterUnavailable:
        return "", ""  # only an explanation: the status poll reports a webserver gone
    if not ahead:
        return "", ""
    names = ", ".join(run.describe(now) for run in ahead)
    return " ".join(run.run_id for run in ahead), (
        f"QUEUED behind {names}: {job_name} runs one at a time, this one starts when that ends"
    )
