"""Launch a job in the running Dagster instance and wait for its end, through the webserver's GraphQL API.

Used by ``tapewatch rescan``; nothing here imports the code location (``orchestration``): the job is named,
the webserver resolves it. Errors are :class:`DagsterUnavailable` with what to do.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from tapewatch.errors import TapewatchError

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


def _advice(host: str, port: int, exc: BaseException) -> str:
    return (
        f"no Dagster instance answers at http://{host}:{port} ({type(exc).__name__}: {exc}); start it with "
        "`tapewatch dagster` or `make demo`, or set TAPEWATCH_DAGSTER_HOST / TAPEWATCH_DAGSTER_PORT"
    )


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

    ``on_status`` is called whenever the status changes (QUEUED, STARTING, STARTED, ...). Raises
    DagsterUnavailable when the webserver does not answer or does not know the job."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    # the client wraps a refused connection in a generic query error: ask the webserver first
    problem = webserver_problem(host, port)
    if problem is not None:
        raise DagsterUnavailable(_advice(host, port, problem))
    try:
        client = DagsterGraphQLClient(host, port_number=port, timeout=30)
    except Exception as exc:
        raise DagsterUnavailable(_advice(host, port, exc)) from exc
    try:
        run_id = str(client.submit_job_execution(job_name))
    except DagsterGraphQLClientError as exc:
        raise DagsterUnavailable(f"Dagster refused to launch {job_name}: {exc}") from exc
    except Exception as exc:
        raise DagsterUnavailable(_advice(host, port, exc)) from exc
    t0, last = clock(), ""
    while True:
        try:
            status = str(client.get_run_status(run_id).value)
        except Exception as exc:
            raise DagsterUnavailable(_advice(host, port, exc)) from exc
        if status != last and on_status is not None:
            on_status(status)
        last = status
        if status in FINISHED or clock() - t0 > timeout:
            return RunOutcome(run_id, status, clock() - t0)
        sleep(poll)
