"""`tapewatch dashboard` as it is deployed: behind its password (a real server, as a subprocess, on this test's
PostgreSQL database and Redis keys), and refused before it starts when its port is taken."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import check_port
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.errors import ConfigError
from tests.dashboard.support import dashboard_process, free_port

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ops", "s3cret"


def _get(url: str, user: str | None = None, password: str = PASSWORD) -> tuple[int, bytes]:
    """The HTTP status and body of ``url``, with basic-auth credentials when ``user`` is given."""
    request = urllib.request.Request(url)
    if user is not None:
        token = b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def protected_dashboard(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace
) -> Iterator[tuple[str, Any]]:
    """`tapewatch dashboard` with TAPEWATCH_DASHBOARD_PASSWORD set (what every non-local deployment runs)."""
    with dashboard_process(
        migrated_database_url,
        redis_url,
        redis_keys,
        TAPEWATCH_DASHBOARD_USER=USER,
        TAPEWATCH_DASHBOARD_PASSWORD=PASSWORD,
    ) as running:
        yield running


@pytest.mark.e2e
def test_the_dashboard_with_a_password_serves_only_with_it(protected_dashboard: tuple[str, Any]) -> None:
    # It crashed at start: the basic auth was added after the set-up request, when Flask takes no more hooks.
    url, log = protected_dashboard
    assert _get(url + "/")[0] == 401
    assert _get(url + "/_dash-dependencies")[0] == 401
    assert _get(url + "/", USER, "wrong")[0] == 401
    assert _get(url + "/", "tapewatch", PASSWORD)[0] == 401  # the user is TAPEWATCH_DASHBOARD_USER's
    status, page = _get(url + "/", USER)
    assert status == 200 and b"tapewatch" in page
    status, dependencies = _get(url + "/_dash-dependencies", USER)
    assert status == 200 and b"live-open-grid" in dependencies  # the app was finished before serving
    # dash_auth keeps the user in Flask's session: without a secret key every request logged a warning
    log.seek(0)
    assert b"Session is not available" not in log.read()


def test_a_taken_port_is_refused_before_anything_starts(capsys: Any, monkeypatch: Any) -> None:
    from tapewatch.cli import main

    monkeypatch.delenv("TAPEWATCH_DASHBOARD_PASSWORD", raising=False)
    with closing(socket.socket()) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["dashboard", "--host", "127.0.0.1", "--port", str(port)]) == 2
        out, err = capsys.readouterr()
        assert f"port 127.0.0.1:{port} for the dashboard is taken" in err
        assert "--port" in err and "TAPEWATCH_DASHBOARD_PORT" in err
        assert "tapewatch dashboard on" not in out  # refused before the start-up banner
        with pytest.raises(ConfigError, match="is taken"):
            check_port("localhost", port)
    check_port("127.0.0.1", port)  # free again


def test_an_address_not_of_this_machine_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1:.*TAPEWATCH_DASHBOARD_HOST"):
        check_port("192.0.2.1", free_port())  # TEST-NET-1: never a local address
