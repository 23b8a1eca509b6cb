"""The demo's and ``tapewatch dagster``'s port checks, IPv4 and IPv6 alike: a port held on ``::1`` is taken, a free
one is free, and a host that is not this machine's names the host setting, not the port's."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tapewatch.adapters.dagster_home import run_dagster
from tapewatch.adapters.ports import Endpoint, check_ports, port_free, port_open
from tapewatch.errors import ConfigError
from tapewatch.settings import load_settings


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")


@pytest.fixture
def held_v6() -> Iterator[int]:
    """A port something listens on at [::1] (only there), whose IPv4 namesake is free when it is handed out:
    other tests' servers on 127.0.0.1 take random ports too, and one of them may hold that number by chance."""
    for _ in range(20):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
            sock.listen()
            port: int = sock.getsockname()[1]
            if port_free("127.0.0.1", port):
                yield port
                return
    pytest.fail("no IPv6 port whose IPv4 namesake is free in 20 tries")


def _free_port(host: str, family: socket.AddressFamily) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@needs_ipv6
def test_a_free_ipv6_port_is_free() -> None:
    # the IPv4 socket could not even resolve "::1": a free port was reported taken
    assert port_free("::1", _free_port("::1", socket.AF_INET6))


@needs_ipv6
def test_a_port_held_on_ipv6_is_taken_and_open(held_v6: int) -> None:
    assert not port_free("::1", held_v6)
    assert not port_free("::", held_v6)  # every interface, IPv6: ::1 among them
    assert port_open("::1", held_v6)  # was a gaierror from an IPv4 socket
    assert port_free("127.0.0.1", held_v6)  # the other family's port of that number is another port


@needs_ipv6
def test_the_demo_names_the_setting_of_an_ipv6_port_that_is_taken(held_v6: int) -> None:
    found = {"sim": Endpoint("the simulated exchange", "::1", held_v6, "sim_port")}
    with pytest.raises(ConfigError) as err:
        check_ports(found)
    assert f"port ::1:{held_v6} for the simulated exchange is taken" in str(err.value)
    assert "set TAPEWATCH_SIM_PORT (setting sim_port)" in str(err.value)
    assert found["sim"].url == f"http://[::1]:{held_v6}"  # printed by the demo: a URL a browser opens


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_a_host_not_of_this_machine_names_the_host_setting_and_a_taken_port_the_port_setting(
    host: str,
) -> None:
    # was "port ... is taken; set TAPEWATCH_DASHBOARD_PORT": the port was never the problem
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert port_open("localhost", taken) and not port_free("localhost", taken)
        found = {
            "dashboard": Endpoint("the dashboard", host, taken, "dashboard_port"),
            "sim": Endpoint("the simulated exchange", "127.0.0.1", taken, "sim_port"),
        }
        with pytest.raises(ConfigError) as err:
            check_ports(found)
    message = str(err.value)
    assert f"the dashboard cannot listen on {host} (" in message
    assert "set TAPEWATCH_DASHBOARD_HOST (setting dashboard_host) to an address of this machine" in message
    assert "DASHBOARD_PORT" not in message and f"{host}:{taken}" not in message
    assert f"port 127.0.0.1:{taken} for the simulated exchange is taken" in message
    assert "set TAPEWATCH_SIM_PORT (setting sim_port) to a free port" in message


def test_tapewatch_dagster_names_its_host_setting_before_starting_anything() -> None:
    settings = load_settings(dagster_host="192.0.2.1")  # TEST-NET-1 (RFC 5737): no address of this machine
    with pytest.raises(ConfigError) as err:
        run_dagster(settings, _free_port("127.0.0.1", socket.AF_INET))
    assert "the Dagster webserver cannot listen on 192.0.2.1" in str(err.value)
    assert "set TAPEWATCH_DAGSTER_HOST (setting dagster_host)" in str(err.value)
