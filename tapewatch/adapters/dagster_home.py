"""The Dagster instance of tapewatch: its home, its storage, its environment and its two processes.

- **Home**: ``DAGSTER_HOME`` = ``<var_dir>/dagster`` with a generated ``dagster.yaml`` (mode 0600: it holds
  the database URL).
- **Storage**: ``dagster-postgres`` on the same PostgreSQL server as tapewatch, in a database of its own,
  ``<tapewatch database>_dagster`` (``tapewatch_dagster`` on the embedded server), created when missing.
  Dagster's tables never mix with ours, and dropping one database never touches the other.
- **Runs**: the queued run coordinator (at most ``dagster_max_concurrent_runs`` at once, dequeued by the
  daemon; one rescan at a time through the ``tapewatch/exclusive`` tag) and the default launcher (each run a
  subprocess of the code server). This works the same under ``dagster dev`` and under ``dagster-webserver`` +
  ``dagster-daemon``; schedules and sensors need the daemon.
- **Run monitoring** (daemon): a run stuck STARTING for ``RUN_START_TIMEOUT_S`` or running longer than
  ``RUN_MAX_RUNTIME_S`` is failed, so a dead worker never holds a queue slot forever (the default launcher
  cannot probe a worker's health: the runtime limit is the backstop); ``tapewatch dagster`` fails the runs a
  previous instance left in progress before it starts (:func:`fail_orphaned_runs`).
- **Run retries**: a failed run of a job tagged ``dagster/max_retries`` is re-launched that many times
  (``RETRY_TAGS`` of ``tapewatch.adapters.dagster_runs``: the rescan, report and exclusion jobs).
- **Retention**: sensor and schedule ticks are purged after ``TICK_RETENTION_DAYS`` (skipped ones sooner).
- **Environment**: :func:`dagster_env` is what a Dagster process needs: ``DAGSTER_HOME`` and the settings of
  this process as ``TAPEWATCH_*`` variables (the resources of ``orchestration.definitions`` read
  ``TAPEWATCH_DATABASE_URL``, ``TAPEWATCH_REDIS_URL``, ``TAPEWATCH_REDIS_PREFIX`` and
  ``TAPEWATCH_BINANCE_REST_URL`` through ``dg.EnvVar``; ``TapewatchSettings`` reads the rest).
- **Processes**: :func:`dagster_commands` gives the two command lines; :func:`run_dagster` (``tapewatch
  dagster``) runs them under :class:`tapewatch.adapters.supervisor.Supervisor` until Ctrl-C/SIGTERM.

``tapewatch demo`` calls :func:`prepare_dagster_home`, :func:`dagster_env` and :func:`dagster_commands`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from pydantic import SecretStr

from tapewatch.adapters.dagster_runs import EXCLUSIVE_TAG, RESCAN_EXCLUSIVE, RESCAN_JOB, job_available
from tapewatch.adapters.db import open_database
from tapewatch.adapters.embedded import ensure_database, ensure_redis
from tapewatch.adapters.redis_keys import DAGSTER, Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.errors import ConfigError, StorageUnavailable
from tapewatch.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from tapewatch.adapters.supervisor import Supervisor

log = logging.getLogger(__name__)

#: The repository root: ``workspace.yaml`` is there, and Dagster processes run there (it imports
#: ``orchestration.definitions``).
ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "workspace.yaml"
#: Seconds the webserver may take to load the code location (two busy cores: be patient).
READY_TIMEOUT = 240.0
#: Run monitoring: a run still STARTING after this many seconds failed to start (its worker loads the code
#: location first: ``READY_TIMEOUT`` plus a margin).
RUN_START_TIMEOUT_S = int(READY_TIMEOUT) + 60
#: Run monitoring: the longest any run may take. The longest jobs (a full rescan paced by the REST weight
#: budget, the monthly tuning re-scoring, a daily outcomes pass after an outage) take minutes to tens of
#: minutes; ``tapewatch rescan`` waits 15 min by default. Two hours leaves ample headroom and still frees a
#: slot held by a dead worker the same morning.
RUN_MAX_RUNTIME_S = 2 * 3600
#: Seconds between the daemon's run monitoring passes.
RUN_MONITOR_POLL_S = 60
#: Days sensor and schedule ticks are kept (skipped ticks: the 30 s sensors make thousands a day).
TICK_RETENTION_DAYS = 30
SKIPPED_TICK_RETENTION_DAYS = 7
#: Our loggers whose records Dagster copies into the run's event log (the UI's run page), at INFO and above:
#: without them a warning of tapewatch code run by an asset (holes in the candles, a capped outcome) only
#: reaches the process's stderr.
MANAGED_PYTHON_LOGGERS = ("tapewatch", "assets", "orchestration")
PYTHON_LOG_LEVEL = "INFO"


def dagster_home(settings: Settings) -> Path:
    """``<var_dir>/dagster`` as an absolute path (the directory ``DAGSTER_HOME`` points at)."""
    return (settings.var_dir / "dagster").resolve()


def dagster_database_url(database_url: str) -> str:
    """The URL of Dagster's database: tapewatch's server, database ``<name>_dagster``, with the psycopg2
    driver named (``postgresql+psycopg2://``): dagster-postgres needs it (its ``NOTIFY`` statements fail
    under psycopg 3, SQLAlchemy 2.1's default). Unix-socket URLs (``?host=/path``) keep their query."""
    url = sa.make_url(database_url)
    name = url.database or "tapewatch"
    return url.set(drivername="postgresql+psycopg2", database=f"{name}_dagster").render_as_string(
        hide_password=False
    )


def ensure_dagster_database(database_url: str) -> str:
    """Create Dagster's database on tapewatch's server if it is missing; return its URL.

    Raises StorageUnavailable when the server does not answer and ConfigError when the database is missing
    and our user may not create it (the message says what to run)."""
    target = dagster_database_url(database_url)
    name = sa.make_url(target).database
    libpq = sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')  # name derived from ours: letters, digits, _
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"Dagster's database {name!r} does not exist and this user may not create it ({exc}); "
            f"run `CREATE DATABASE {name}` as an administrator"
        ) from exc
    except psycopg.OperationalError as exc:
        raise StorageUnavailable(f"PostgreSQL does not answer for Dagster's database: {exc}") from exc
    return target


def dagster_yaml(postgres_url: str, max_concurrent_runs: int, home: Path) -> str:
    """The ``dagster.yaml`` of the instance (JSON is valid YAML: no quoting surprises in the URL)."""
    import json

    config: dict[str, Any] = {
        "storage": {"postgres": {"postgres_url": postgres_url}},
        # one rescan at a time (EXCLUSIVE_TAG on the rescan job): a second one waits QUEUED
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": max_concurrent_runs,
                "tag_concurrency_limits": [{"key": EXCLUSIVE_TAG, "value": RESCAN_EXCLUSIVE, "limit": 1}],
            },
        },
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": RUN_START_TIMEOUT_S,
            "max_runtime_seconds": RUN_MAX_RUNTIME_S,
            "poll_interval_seconds": RUN_MONITOR_POLL_S,
        },
        # retries only where a job sets the dagster/max_retries tag (retry_on_asset_or_op_failure: an op
        # that failed on a transient REST or storage error gets its second chance too)
        "run_retries": {"enabled": True, "max_retries": 0},
        "retention": {
            kind: {
                "purge_after_days": {
                    "skipped": SKIPPED_TICK_RETENTION_DAYS,
                    "success": TICK_RETENTION_DAYS,
                    "failure": TICK_RETENTION_DAYS,
                    "started": TICK_RETENTION_DAYS,
                }
            }
            for kind in ("schedule", "sensor")
        },
        "run_launcher": {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"},
        "python_logs": {
            "managed_python_loggers": list(MANAGED_PYTHON_LOGGERS),
            "python_log_level": PYTHON_LOG_LEVEL,
        },
        "local_artifact_storage": {
            "module": "dagster.core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": str(home / "storage")},
        },
        "code_servers": {"local_startup_timeout": int(READY_TIMEOUT)},
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},  # no "join the community" dialog over an operator's first page
    }
    return "# generated by tapewatch (tapewatch.adapters.dagster_home); rewritten at every start\n" + (
        json.dumps(config, indent=2) + "\n"
    )


def prepare_dagster_home(settings: Settings, database_url: str) -> Path:
    """Create ``<var_dir>/dagster`` with its ``dagster.yaml`` (storage in Dagster's own database on the server
    of ``database_url``, created when missing); return the directory, for ``DAGSTER_HOME``."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    text = dagster_yaml(ensure_dagster_database(database_url), settings.dagster_max_concurrent_runs, home)
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name("dagster.yaml.tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return home


def orphans_command(home: Path) -> list[str]:
    """The one-shot process that fails the runs a previous instance left in progress
    (:mod:`orchestration.orphans`; a process of its own, as the webserver and the daemon are, since the domain
    package never imports Dagster)."""
    return [sys.executable, "-m", "orchestration.orphans", str(home)]


def fail_orphaned_runs(home: Path, env: dict[str, str], timeout: float = 120.0) -> list[str]:
    """Run :func:`orphans_command`; return the ids of the runs it marked failed. Raises ChildFailed with the
    process's last lines when it fails."""
    from tapewatch.adapters.supervisor import ChildFailed

    try:
        done = subprocess.run(
            orphans_command(home),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(
            f"failing the runs a previous Dagster instance left took over {timeout:.0f} s"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ChildFailed(
            f"failing the runs a previous Dagster instance left failed (exit {done.returncode}):\n{tail}"
        )
    return done.stdout.split()


def _env_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value.resolve())
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting that differs from its default, as ``TAPEWATCH_*`` variables (so a child process rebuilds
    the same settings from its environment, whatever file or variables this one read them from)."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value == field.default and name != "var_dir":  # var_dir: always absolute, the cwd changes
            continue
        text = _env_value(value)
        if text is not None:
            env[ENV_PREFIX + name.upper()] = text
    return env


def dagster_env(settings: Settings, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a Dagster process (webserver, daemon, ``dagster dev``): this process's environment,
    the settings as ``TAPEWATCH_*``, the resolved database and Redis URLs, and ``DAGSTER_HOME``."""
    env = {**os.environ, **settings_env(settings)}
    env.update(
        {
            "DAGSTER_HOME": str(dagster_home(settings)),
            "TAPEWATCH_DATABASE_URL": database_url,
            "TAPEWATCH_REDIS_URL": redis_url,
            "TAPEWATCH_REDIS_PREFIX": settings.redis_prefix,
            "TAPEWATCH_BINANCE_REST_URL": settings.binance_rest_url,
        }
    )
    return env


def _tool(name: str) -> str:
    # the console scripts of this interpreter's environment (the venv), whatever PATH says
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def webserver_command(host: str, port: int) -> list[str]:
    """``dagster-webserver -w workspace.yaml -h HOST -p PORT`` (run it with cwd = the repository root)."""
    return [_tool("dagster-webserver"), "-w", str(WORKSPACE), "-h", host, "-p", str(port)]


def daemon_command() -> list[str]:
    """``dagster-daemon run -w workspace.yaml``: schedules, sensors and the run queue."""
    return [_tool("dagster-daemon"), "run", "-w", str(WORKSPACE)]


def dagster_commands(settings: Settings, port: int | None = None) -> dict[str, list[str]]:
    """The two processes of the instance by name (``dagster-web``, ``dagster-daemon``), webserver on
    ``settings.dagster_host`` and ``port`` (default ``settings.dagster_port``)."""
    return {
        "dagster-web": webserver_command(settings.dagster_host, port or settings.dagster_port),
        "dagster-daemon": daemon_command(),
    }


def run_dagster(settings: Settings, port: int | None = None) -> int:
    """``tapewatch dagster``: embedded servers, the home, then webserver + daemon until Ctrl-C/SIGTERM.

    Raises ConfigError when the port is taken (naming ``dagster_port``) or the host is not this machine's
    (naming ``dagster_host``). Returns the exit code: 0 after a requested stop, a child's code when one dies
    (its last lines are printed)."""
    from tapewatch.adapters.ports import host_advice, port_free
    from tapewatch.adapters.status_format import http_url
    from tapewatch.adapters.supervisor import ChildFailed, Supervisor

    port = port or settings.dagster_port
    try:
        free = port_free(settings.dagster_host, port)
    except OSError as exc:  # a name that does not resolve, an address not of this machine
        raise ConfigError(
            f"the Dagster webserver cannot listen on {settings.dagster_host} ({exc.strerror or exc}); "
            f"{host_advice('dagster_host')}"
        ) from exc
    if not free:
        raise ConfigError(
            f"port {settings.dagster_host}:{port} for the Dagster webserver is taken; use --port or set "
            f"TAPEWATCH_DAGSTER_PORT (setting dagster_port) to a free port, or stop what holds it"
        )
    open_database(settings).dispose()  # migrations before any asset runs
    database_url, redis_url = ensure_database(settings), ensure_redis(settings)
    home = prepare_dagster_home(settings, database_url)
    env = dagster_env(settings, database_url, redis_url)
    with Supervisor(run_dir=settings.var_dir / "run", name="dagster") as sup:
        try:  # inside the supervisor: a second `tapewatch dagster` stops at its lock before touching runs
            orphans = fail_orphaned_runs(home, env)
            seconds = start_instance(sup, settings, port, env)
        except ChildFailed as exc:
            sup.say(str(exc))
            return 1
        if orphans:
            sup.say(f"{len(orphans)} run(s) left in progress by the previous instance marked failed")
        sup.say(
            f"Dagster is up at {http_url(settings.dagster_host, port)} ({seconds:.0f} s); Ctrl-C stops it"
        )
        beat = dagster_heartbeat(settings, redis_url, port)
        try:
            return sup.run(tick=beat.send, every=HEARTBEAT_EVERY)
        finally:
            beat.close()


def start_instance(
    sup: Supervisor, settings: Settings, port: int, env: dict[str, str], timeout: float = READY_TIMEOUT
) -> float:
    """Start the webserver, wait until its code location serves the rescan job, then start the daemon;
    return the seconds the webserver took. Raises ChildFailed (a child died, or the timeout passed).

    In that order because on a new instance both processes would create Dagster's tables at once, and one
    of them fails on "relation already exists"."""
    from tapewatch.adapters.supervisor import ChildSpec

    commands = dagster_commands(settings, port)
    sup.start(ChildSpec("dagster-web", commands["dagster-web"], env=env, cwd=ROOT))
    seconds = sup.wait_until(
        "dagster-web",
        # ready = the code location is loaded (``tapewatch rescan`` works from then on)
        lambda: job_available(settings.dagster_host, port, RESCAN_JOB),
        timeout=timeout,
    )
    sup.start(ChildSpec("dagster-daemon", commands["dagster-daemon"], env=env, cwd=ROOT))
    return seconds


#: Seconds between the Dagster heartbeats ``tapewatch status`` reads (component ``dagster``).
HEARTBEAT_EVERY = 10.0


class _Heartbeat:
    def __init__(self, state: RedisState, info: dict[str, str | int | float | bool]) -> None:
        self.state, self.info = state, info

    def send(self) -> None:
        try:
            self.state.beat(DAGSTER, ttl_s=HEARTBEAT_EVERY * 3, info=self.info)
        except StorageUnavailable as exc:  # Redis down: status will say so; Dagster itself is fine
            log.warning("dagster heartbeat not sent: %s", exc)

    def close(self) -> None:
        self.state.close()


def dagster_heartbeat(settings: Settings, redis_url: str, port: int) -> _Heartbeat:
    """Send the first heartbeat of the webserver serving on ``settings.dagster_host`` and ``port`` and return
    the sender (``send`` every ``HEARTBEAT_EVERY`` s, ``close`` at the end). Its details name the ``port`` and
    ``host`` the webserver serves on, the convention of every web component (the dashboard's too), which
    ``tapewatch status`` probes: ``--port`` or ``tapewatch demo``'s choice of a free port overrides the
    settings. ``started_ms`` (wall clock) says since when the daemon runs: a sensor tick recorded before it
    belongs to an earlier run of Dagster and proves nothing about this one."""
    state = RedisState.from_url(redis_url, keys=Keyspace(settings.redis_prefix))
    info: dict[str, str | int | float | bool] = {
        "port": port,
        "host": settings.dagster_host,
        "started_ms": int(time.time() * 1000),
    }
    beat = _Heartbeat(state, info)
    beat.send()
    return beat
