"""The dashboard's pages are imported once per session (``dash.register_page`` needs an app); each test then
installs its own backend on its own PostgreSQL database and Redis key prefix."""

from __future__ import annotations

from collections.abc import Iterator

import dash
import pytest

from dashboard import backend as be
from dashboard.app import create_app
from tapewatch.adapters.dagster_runs import DagsterRuns
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.settings import load_settings
from tests.dashboard.support import closed_url, make_backend


def _idle_app() -> dash.Dash:
    # Built when this conftest is imported, before the test modules: they import the page modules, whose
    # dash.register_page needs an app. Its backend is never used (closed ports): each test installs its own.
    idle = be.Backend(
        settings=load_settings(),
        db=Database(closed_url("postgresql"), connect_timeout=2),
        redis=RedisState.from_url(closed_url("redis")),
        dagster=DagsterRuns("127.0.0.1", 1),
    )
    app = create_app(idle)
    be.use(None)
    return app


APP = _idle_app()


@pytest.fixture(scope="session")
def dash_app() -> dash.Dash:
    """The app with every page registered."""
    return APP


@pytest.fixture
def backend(dash_app: dash.Dash, migrated_database_url: str, redis_state: RedisState) -> Iterator[be.Backend]:
    """A backend on this test's database and Redis keys, installed for the callbacks."""
    backend = make_backend(migrated_database_url, redis_state)
    be.use(backend)
    yield backend
    be.use(None)
    backend.db.dispose()


@pytest.fixture
def down_backend(dash_app: dash.Dash) -> Iterator[be.Backend]:
    """A backend whose PostgreSQL and Redis are not there (closed ports)."""
    redis = RedisState.from_url(closed_url("redis"), keys=Keyspace("twtest:down:"))
    backend = make_backend(closed_url("postgresql"), redis)
    be.use(backend)
    yield backend
    be.use(None)
    backend.close()
