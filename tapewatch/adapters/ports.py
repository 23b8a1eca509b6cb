"""The ports the platform listens on: whether one is free here (and who holds it), whether something answers on
one, and the message that names the setting to change."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from tapewatch.adapters.status_format import http_url
from tapewatch.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A port the platform listens on, and the setting that moves it."""

    what: str
    host: str
    port: int
    setting: str

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def host_setting(self) -> str:
        """The setting of this endpoint's host (``sim_port`` → ``sim_host``)."""
        return self.setting.removesuffix("_port") + "_host"


def check_ports(found: Mapping[str, Endpoint]) -> None:
    """Raise ConfigError naming the setting (and, when visible, the process) of every port already taken, and
    the host setting of every host that is not an address of this machine."""
    problems = []
    for endpoint in found.values():
        try:
            free = port_free(endpoint.host, endpoint.port)
        except OSError as exc:
            problems.append(
                f"{endpoint.what} cannot listen on {endpoint.host} ({exc.strerror or exc}); "
                f"{host_advice(endpoint.host_setting)}"
            )
            continue
        if not free:
            env = "TAPEWATCH_" + endpoint.setting.upper()
            problems.append(
                f"port {endpoint.host}:{endpoint.port} for {endpoint.what} is taken{_holder(endpoint.port)}; "
                f"set {env} (setting {endpoint.setting}) to a free port, or stop what holds it"
            )
    if problems:
        raise ConfigError("\n  ".join(problems))


def host_advice(setting: str) -> str:
    """What to do when the host of ``setting`` is not an address of this machine."""
    return (
        f"set TAPEWATCH_{setting.upper()} (setting {setting}) to an address of this machine, "
        "e.g. 127.0.0.1, ::1 or 0.0.0.0"
    )


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be listened on here: every address ``host`` resolves to, IPv4 or IPv6, binds;
    False when one is in use (or a privileged port). Raises OSError when the host is at fault: a name that does
    not resolve (``socket.gaierror``), or an address that is not this machine's."""
    # every address a server on host:port binds, as asyncio's create_server does: localhost may be 127.0.0.1 and ::1
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, _, _, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # a family this machine lacks: asyncio's create_server skips it too
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as servers bind it: [::]:port says nothing of 0.0.0.0:port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


def _holder(port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:80]
                return f" (by pid {conn.pid}: {cmd})"
    return ""


def port_open(host: str, port: int) -> bool:
    """True when something accepts connections on ``host:port`` (an IPv4 or IPv6 address, or a name)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
