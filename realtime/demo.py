"""``tapewatch demo`` (issue 3 scope): the simulated exchange in a child process and the realtime service in
the foreground, printing the live book and trade-flow state. Ctrl-C stops both; nothing is left running but
the embedded PostgreSQL/Redis, which later runs reuse."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from realtime.main import exchange_settings
from realtime.main import main as run_main
from tapewatch.errors import ConfigError
from tapewatch.settings import Settings

log = logging.getLogger(__name__)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(
                f"the simulated exchange exited with code {child.returncode} (see its log above)"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the simulated exchange did not listen on {host}:{port} within {timeout:.0f} s")


def run_demo(
    settings: Settings,
    *,
    redis_url: str,
    database_url: str | None = None,
    seed: int,
    symbols: int,
    speed: float,
    duration: float | None,
    status_every: float,
) -> int:
    host, port = settings.sim_host, settings.sim_port
    if not port_free(host, port):
        raise ConfigError(
            f"port {host}:{port} for the simulated exchange is taken; set TAPEWATCH_SIM_PORT to a free port"
        )
    command = [
        sys.executable, "-m", "tapewatch.cli", "sim", "--host", host, "--port", str(port),
        "--seed", str(seed), "--symbols", str(symbols), "--speed", str(speed),
    ]  # fmt: skip
    print(f">> starting the simulated exchange on http://{host}:{port} ({symbols} symbols, speed x{speed:g})")
    child = subprocess.Popen(command, start_new_session=True)
    try:
        wait_for_port(host, port, 30, child)
        print(">> starting the realtime service (Ctrl-C stops everything)", flush=True)
        return run_main(
            exchange_settings(settings, "sim"),
            redis_url=redis_url,
            database_url=database_url,
            duration=duration,
            status_every=status_every,
        )
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        print(">> stopped", flush=True)
