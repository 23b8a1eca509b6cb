"""``tapewatch run --symbols``: a fixed list of which nothing is tradable stops the service with exit 2 naming
``--symbols`` / ``TAPEWATCH_SYMBOLS`` (it used to log an error naming TAPEWATCH_SYMBOLS only, then run with an
empty universe, forever without ``--duration``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.cli import main
from tests.realtime.processes import free_port, processes, service_env, start_sim

pytestmark = [pytest.mark.db]


@pytest.fixture
def sim_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
) -> Iterator[None]:
    """A simulated exchange of three symbols, and the environment of a ``tapewatch run --exchange sim`` on it;
    the process's logging is restored afterwards (the command configures it)."""
    port = free_port()
    env = service_env(
        database_url=migrated_database_url,
        redis_url=redis_url,
        keys=redis_keys,
        var_dir=tmp_path / "var",
        sim_port=port,
        universe_size=3,
    )
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with processes(tmp_path, "sim.log") as (procs, logs):
        start_sim(port, env, logs[0], procs, "--symbols", "3")
        for name, value in env.items():
            if name.startswith("TAPEWATCH_"):
                monkeypatch.setenv(name, value)
        monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
        monkeypatch.delenv("TAPEWATCH_SYMBOLS", raising=False)
        yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("sim_env")
def test_a_fixed_list_with_no_tradable_symbol_exits_2_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code = main(["run", "--exchange", "sim", "--symbols", "FOOUSDT,BARUSDT", "--duration", "30"])
    err = capsys.readouterr().err
    assert code == 2  # the old code ran the whole --duration with no symbol and exited 0
    assert time.monotonic() - started < 25
    (line,) = [x for x in err.splitlines() if x.startswith("tapewatch: configuration error")]
    assert "--symbols / TAPEWATCH_SYMBOLS: none of BARUSDT, FOOUSDT is a tradable USDT perpetual" in line


@pytest.mark.usefixtures("sim_env")
def test_unknown_names_beside_tradable_ones_are_dropped_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--exchange", "sim", "--symbols", "FOOUSDT,BTCUSDT", "--duration", "2"])
    err = capsys.readouterr().err
    assert code == 0
    (line,) = [x for x in err.splitlines() if "not tradable USDT perpetuals" in x]
    assert "ERROR" in line and "ignored: FOOUSDT (check --symbols / TAPEWATCH_SYMBOLS)" in line
