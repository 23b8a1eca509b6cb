"""What the dashboard's callbacks read from and act on: PostgreSQL, Redis and Dagster, behind one object.

Callbacks are module-level functions (Dash registers them globally), so the running app installs one
:class:`Backend` with :func:`use` and callbacks fetch it with :func:`current`. Tests install their own, on
their real PostgreSQL and Redis, and call the callbacks as plain functions.

:func:`attempt` runs a read and turns an outage (``StorageUnavailable``) into a message the page shows in
its banner; the next interval tick simply tries again, so a page recovers by itself when the server returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tapewatch.adapters.dagster_runs import DagsterUnavailable, webserver_problem
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_state import RedisState
from tapewatch.errors import MigrationError, StorageUnavailable
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The Dagster job the Rescan button launches.
RESCAN_JOB = "universe_rescan_job"


@dataclass
class DagsterLauncher:
    """Launches and follows Dagster runs through the webserver's GraphQL API (never by importing the code
    location: the dashboard and orchestration are separate processes)."""

    host: str
    port: int
    timeout: float = 10.0

    def _client(self) -> Any:
        from dagster_graphql import DagsterGraphQLClient

        # the same preflight as `tapewatch rescan`: the client hides a refused connection in a query error
        problem = webserver_problem(self.host, self.port, timeout=self.timeout)
        if problem is not None:
            raise DagsterUnavailable(self._advice(problem))
        try:
            return DagsterGraphQLClient(self.host, port_number=self.port, timeout=int(self.timeout))
        except Exception as exc:  # the client connects (and fetches the schema) on construction
            raise DagsterUnavailable(self._advice(exc)) from exc

    def _advice(self, exc: BaseException) -> str:
        return (
            f"Dagster at {self.host}:{self.port} is unavailable ({type(exc).__name__}: {exc}). Start it with "
            "`tapewatch dagster` (or `make demo`), or set TAPEWATCH_DAGSTER_HOST / TAPEWATCH_DAGSTER_PORT."
        )

    def _explain(self, exc: BaseException, refused: str) -> str:
        # The client wraps a failed HTTP request (nothing listening, a timeout) in the same error class as a
        # refusal by Dagster; the cause tells them apart.
        if exc.__cause__ is not None:
            return self._advice(exc.__cause__)
        return f"{refused}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"

    def launch(self, job_name: str) -> str:
        """Submit a run of ``job_name``; its run id."""
        from dagster_graphql import DagsterGraphQLClientError

        client = self._client()
        try:
            return str(client.submit_job_execution(job_name))
        except DagsterGraphQLClientError as exc:
            raise DagsterUnavailable(self._explain(exc, f"Dagster refused to launch {job_name}")) from exc
        except Exception as exc:
            raise DagsterUnavailable(self._advice(exc)) from exc

    def run_status(self, run_id: str) -> str:
        """The status of run ``run_id`` (QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ...)."""
        from dagster_graphql import DagsterGraphQLClientError

        client = self._client()
        try:
            return str(client.get_run_status(run_id).value)
        except DagsterGraphQLClientError as exc:
            raise DagsterUnavailable(self._explain(exc, f"Dagster does not know run {run_id}")) from exc
        except Exception as exc:
            raise DagsterUnavailable(self._advice(exc)) from exc


@dataclass
class Backend:
    """The dashboard's connections: the database, the live state, Dagster, the settings and a wall clock."""

    settings: Settings
    db: Database
    redis: RedisState
    dagster: DagsterLauncher
    clock: Callable[[], float] = field(default=time.time)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def close(self) -> None:
        self.redis.close()
        self.db.dispose()


_current: Backend | None = None


def use(backend: Backend | None) -> None:
    """Install ``backend`` for every callback (None uninstalls it)."""
    global _current
    _current = backend


def current() -> Backend:
    """The installed backend; RuntimeError when the app was not started through ``dashboard.app``."""
    if _current is None:
        raise RuntimeError("no dashboard backend: start the dashboard with `tapewatch dashboard`")
    return _current


def attempt(read: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(read(), None)``, or ``(None, message)`` when PostgreSQL/Redis is down or the schema is missing."""
    try:
        return read(), None
    except StorageUnavailable as exc:
        log.warning("dashboard read failed: %s", exc)
        return None, str(exc)
    except MigrationError as exc:
        return None, str(exc)


def storage_problems(backend: Backend) -> list[str]:
    """What is down right now (empty when PostgreSQL and Redis both answer)."""
    problems: list[str] = []
    for check in (backend.db.check, backend.redis.ping):
        try:
            check()
        except StorageUnavailable as exc:
            problems.append(str(exc))
    return problems
