"""Bad command-line arguments and unusable paths: one clear line on stderr and exit code 2, never a traceback
(``tapewatch.cli_parser`` checks numbers; the commands turn an unusable user-given path into a ConfigError)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.sim.faults import parse_duration
from realtime.sim.symbols import MAX_SYMBOLS
from tapewatch.cli import main
from tapewatch.cli_parser import build_parser
from tests.helpers import restored_logging


@pytest.fixture(autouse=True)
def _settings_and_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The commands read the environment and configure logging for a process: undo the latter after each test.
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    with restored_logging():
        yield


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit code of ``tapewatch ARGV`` (argparse's SystemExit included) and its stderr."""
    code, _, err = run_out(capsys, *argv)
    return code, err


def run_out(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The exit code of ``tapewatch ARGV``, its stdout and its stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sim", "--port", "99999"], "argument --port: 99999 is out of range; use an integer 1..65535"),
        (["sim", "--port", "-1"], "argument --port: -1 is out of range"),
        (
            ["sim", "--symbols", "0"],
            f"argument --symbols: 0 is out of range; use an integer 1..{MAX_SYMBOLS}",
        ),
        (["sim", "--symbols", "5000"], "argument --symbols: 5000 is out of range"),
        (["sim", "--speed", "0"], "argument --speed: 0 is out of range; use a number > 0"),
        (["sim", "--speed", "nan"], "argument --speed: 'nan' is not a finite number"),
        (
            ["sim", "--record", "x", "--duration", "1m", "--speed", "-1"],
            "argument --speed: -1 is out of range",
        ),
        (["sim", "--seed", "-1"], "argument --seed: -1 is out of range; use an integer >= 0"),
        (["sim", "--episode-rate", "-2"], "argument --episode-rate: -2 is out of range; use a number >= 0"),
        (["dashboard", "--port", "70000"], "argument --port: 70000 is out of range"),
        (["dagster", "--port", "0"], "argument --port: 0 is out of range"),
        (
            ["tuning", "list", "--limit", "-1"],
            "argument --limit: -1 is out of range; use an integer 1..10000",
        ),
        (["tuning", "list", "--limit", "ten"], "argument --limit: 'ten' is not an integer"),
        (["demo", "--symbols", "801"], "argument --symbols: 801 is out of range"),
        (["demo", "--daily-cap-scale", "0"], "argument --daily-cap-scale: 0 is out of range"),
        (["demo", "--status-every", "0"], "argument --status-every: 0 is out of range"),
        (["run", "--duration", "-5"], "argument --duration: -5 is negative; use a time above 0, like 90"),
        (["rescan", "--timeout", "-1"], "argument --timeout: -1 is out of range; use a number >= 0"),
        # upper bounds: an unbounded value overflowed PostgreSQL's bigint, or starved the service
        (
            ["tuning", "list", "--limit", "99999999999999999999"],
            "argument --limit: 99999999999999999999 is out of range; use an integer 1..10000",
        ),
        (
            ["run", "--status-every", "1e-9"],
            "argument --status-every: 1e-09 is out of range; use a number >= 0.5",
        ),
        (["demo", "--status-every", "0.1"], "argument --status-every: 0.1 is out of range"),
        (
            ["sim", "--speed", "1e308"],
            "argument --speed: 1e+308 is out of range; use a number > 0 and <= 10000",
        ),
        (["demo", "--speed", "20000"], "argument --speed: 20000 is out of range"),
        (
            ["sim", "--record", "x", "--duration", "1m", "--episode-rate", "1e308"],
            "argument --episode-rate: 1e+308 is out of range; use a number >= 0 and <= 1000",
        ),
        (["demo", "--episode-rate", "1001"], "argument --episode-rate: 1001 is out of range"),
        # a value that looks like an option: its own range error, not argparse's "expected one argument"
        (
            ["run", "--shard", "-1/2"],
            "argument --shard: shard index must be within 0..1 (I/N: instance I of N); got -1/2",
        ),
        (["run", "--shard", "2/2"], "argument --shard: shard index must be within 0..1"),
        (["run", "--shard", "x"], "argument --shard: a shard is I/N, like 0/2 (instance 0 of 2); got 'x'"),
        (["run", "--duration", "-5m"], "argument --duration: -5m is negative; use a time above 0"),
        (["run", "--symbols", "-1"], "argument --symbols: '-1' is not a symbol name; use letters and digits"),
        (["run", "--symbols", ",,,"], "argument --symbols: ',,,' names no symbol"),
        (["run", "--symbols", "BTCUSDT,ETH-USDT"], "argument --symbols: 'ETH-USDT' is not a symbol name"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error_naming_the_argument_and_its_range(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    # The parser alone: a value it let through would start the command (a demo, a server) instead of failing.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and says in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_duration_takes_the_forms_sim_takes_and_a_bare_number_is_still_seconds(command: str) -> None:
    # `run --duration 2h` was "'2h' is not a number" while `sim --record --duration 2h` took it
    parse = build_parser().parse_args
    seen = {text: parse([command, "--duration", text]).duration for text in ("90", "1.5", "90s", "10m", "2h")}
    assert seen == {"90": 90.0, "1.5": 1.5, "90s": 90.0, "10m": 600.0, "2h": 7200.0}
    # the very parser sim uses: one idea, one piece of code
    assert parse([command, "--duration", "1d"]).duration == parse_duration("1d") == 86_400


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "argument --duration: 0 is no time at all; use a time above 0, like 90 (seconds), 90s, 10m or 2h"),
        ("0s", "argument --duration: 0s is no time at all"),
        ("-2h", "argument --duration: -2h is negative"),
        ("soon", "argument --duration: not a duration: 'soon' (use e.g. 250ms, 30s, 5m, 2h, 1d)"),
        ("5 weeks", "argument --duration: not a duration: '5 weeks'"),
        ("9" * 400 + "d", "is not a finite time"),  # float('9' * 400) is inf: a service that never stops
        ("nan", "argument --duration: nan is not a finite time"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_bad_duration_is_a_usage_error_naming_the_option(
    capsys: pytest.CaptureFixture[str], command: str, value: str, says: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--duration", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and says in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["sim", "dashboard"])
@pytest.mark.parametrize("value", ["  ", "", "127.0.0.1 "])
def test_a_listen_host_of_spaces_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    # "  " reached the socket (an obscure gaierror after the start-up banner); "" silently meant the setting
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--host", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "argument --host: must name a host without spaces" in err
    assert build_parser().parse_args([command, "--host", "::1"]).host == "::1"


def test_the_command_line_exits_2_with_the_usage_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run(capsys, "sim", "--port", "99999")  # was an OverflowError from the socket, exit 1
    assert code == 2 and err.startswith("usage: tapewatch sim") and "Traceback" not in err
    # the bounds themselves are accepted
    sim = build_parser().parse_args(
        ["sim", "--port", "65535", "--symbols", str(MAX_SYMBOLS), "--seed", "0", "--episode-rate", "0"]
    )
    assert (sim.port, sim.symbols, sim.seed, sim.episode_rate) == (65535, MAX_SYMBOLS, 0, 0.0)
    assert build_parser().parse_args(["dashboard", "--port", "1"]).port == 1
    assert build_parser().parse_args(["tuning", "list", "--limit", "1"]).limit == 1


def test_a_record_directory_that_is_a_file_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n")
    code, err = run(capsys, "sim", "--record", str(file), "--duration", "1m", "--symbols", "1")
    assert code == 2
    assert f"sim --record {file}: cannot use it as a directory (it is a file)" in err
    code, err = run(capsys, "sim", "--record", str(file / "sub"), "--duration", "1m", "--symbols", "1")
    assert code == 2 and f"sim --record {file / 'sub'}" in err and "Not a directory" in err
    assert file.read_text() == "root:x:0:0\n"


def test_a_record_of_no_time_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "sim", "--record", str(tmp_path / "rec"), "--duration", "0s", "--symbols", "1")
    assert code == 2 and "--duration 0s is no time at all" in err


def test_a_clock_file_in_a_file_is_refused_before_serving_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "plain"
    file.write_text("")
    with socket.socket() as s:  # a free port: the old code started serving before it hit the clock file
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["sim", "--port", str(port), "--symbols", "1", "--clock-file"]
    code, err = run(capsys, *argv, str(file / "clock.json"))
    assert code == 2 and f"sim --clock-file's directory {file}" in err and "cannot listen" not in err
    code, err = run(capsys, *argv, str(tmp_path))
    assert code == 2 and f"sim --clock-file {tmp_path} is a directory" in err


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_a_var_dir_that_cannot_be_a_directory_is_a_configuration_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], below: str
) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n")
    var_dir = file / below if below else file
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(var_dir))
    for argv in (["db", "upgrade"], ["tuning", "list"]):
        code, err = run(capsys, *argv)
        assert code == 2, argv
        assert f"var_dir (TAPEWATCH_VAR_DIR) = {var_dir}" in err and "set TAPEWATCH_VAR_DIR" in err
    assert file.read_text() == "root:x:0:0\n"
    code, out, _ = run_out(
        capsys, "settings"
    )  # shows the settings, the bad var_dir too, rather than refusing
    assert code == 0 and f"var_dir = PosixPath('{var_dir}')" in out


def test_a_symbol_list_drops_empty_items_and_the_bounds_themselves_are_accepted() -> None:
    run = build_parser().parse_args(
        ["run", "--symbols", " btcusdt,,ETHUSDT, ", "--shard", "1/2", "--status-every", "0.5"]
    )
    assert (run.symbols, run.shard.label, run.status_every) == (("BTCUSDT", "ETHUSDT"), "1/2", 0.5)
    sim = build_parser().parse_args(["sim", "--speed", "10000", "--episode-rate", "1000"])
    assert (sim.speed, sim.episode_rate) == (10_000.0, 1_000.0)
    assert build_parser().parse_args(["tuning", "list", "--limit", "10000"]).limit == 10_000


@pytest.mark.parametrize(
    ("gap", "says"),
    [
        (
            "FOOUSDT@30s",
            "--gap FOOUSDT@30s: FOOUSDT is not one of the 3 simulated symbols (--symbols 3: BTCUSDT,",
        ),
        ("BTCUSDT@5m", "--gap BTCUSDT@5m: the offset is not within the recording (--duration 1m)"),
    ],
)
def test_a_gap_outside_the_recording_is_refused_before_the_directory_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gap: str, says: str
) -> None:
    rec = tmp_path / "rec"
    code, err = run(capsys, "sim", "--record", str(rec), "--duration", "1m", "--symbols", "3", "--gap", gap)
    assert code == 2 and f"configuration error: sim --record: {says}" in err and "Traceback" not in err
    assert not rec.exists()  # the old code left an empty rec/ behind (and a ValueError traceback)


def test_a_negative_record_duration_gets_its_own_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "rec"
    code, err = run(capsys, "sim", "--record", str(rec), "--duration", "-5m", "--symbols", "1")
    assert code == 2 and "sim --record: --duration -5m is negative" in err and not rec.exists()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on: a simulator the old code started anyway fails at once instead of serving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_duration_without_record_is_refused(capsys: pytest.CaptureFixture[str], busy_port: int) -> None:
    code, err = run(capsys, "sim", "--port", str(busy_port), "--symbols", "1", "--duration", "5m")
    assert code == 2
    assert "--duration 5m is the length of a recording: use it with --record DIR" in err
    assert "cannot listen" not in err  # refused before serving, as a lone --gap is


def test_an_address_of_another_machine_names_the_host_setting(
    capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine: binding it fails with EADDRNOTAVAIL
    code, err = run(capsys, "sim", "--host", "192.0.2.1", "--port", str(busy_port), "--symbols", "1")
    assert code == 2 and "cannot listen on 192.0.2.1:" in err
    assert "set --host or TAPEWATCH_SIM_HOST" in err and "set --port" not in err
    code, err = run(capsys, "sim", "--port", str(busy_port), "--symbols", "1")  # in use: the port it is
    assert code == 2 and "set --port or TAPEWATCH_SIM_PORT" in err


def test_a_bad_shard_in_the_environment_names_the_variable_not_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAPEWATCH_SHARD", "x")
    code, err = run(capsys, "run", "--duration", "1")
    assert code == 2 and "shard (TAPEWATCH_SHARD) = 'x'" in err and "a shard is I/N" in err
    assert "--shard" not in err  # the old message said "--shard takes I/N" though no --shard was given
