"""Settings: defaults from the spec, env and YAML sources, and clear errors for bad values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tapewatch.cli import main
from tapewatch.errors import ConfigError
from tapewatch.settings import NON_SETTING_ENV, Settings, load_settings


def test_spec_defaults() -> None:
    s = load_settings()
    assert (s.mode, s.universe_rescan_interval, s.min_24h_volume, s.min_open_interest) == (
        "SIGNAL_ONLY", 6, 50_000_000, 10_000_000,
    )  # fmt: skip
    assert (s.max_spread, s.orderbook_imbalance_threshold, s.min_large_trades, s.large_trade_size) == (
        0.0002, 0.28, 3, 50_000,
    )  # fmt: skip
    assert (s.volume_confirmation_multiplier, s.primary_tf, s.context_tf) == (1.8, "15m", "1h")
    assert (s.max_daily_signals, s.max_concurrent_signals, s.correlation_threshold) == (80, 5, 0.6)
    assert (s.orderbook_depth, s.trade_history_window, s.kline_history_bars, s.update_frequency) == (
        20,
        300,
        100,
        100,
    )


def test_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("min_large_trades: 5\nsymbols: [btcusdt, ethusdt]\nmax_spread: 0.001\n")
    monkeypatch.setenv("TAPEWATCH_MAX_SPREAD", "0.0005")
    s = load_settings(cfg)
    assert s.min_large_trades == 5
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.max_spread == 0.0005  # the environment wins over the file
    monkeypatch.setenv("TAPEWATCH_SYMBOLS", "solusdt, xrpusdt")
    assert load_settings().symbols == ("SOLUSDT", "XRPUSDT")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_spread", -0.1, "max_spread (TAPEWATCH_MAX_SPREAD) = -0.1"),
        ("orderbook_imbalance_threshold", 1.5, "allowed: > 0 and < 1"),
        ("universe_atr_interval", "7m", "allowed: one of 1m, 3m"),
        ("database_url", "mysql://db", "expected a URL starting with postgresql://"),
        ("redis_url", "not a url", "expected a URL starting with redis://"),
        ("binance_ws_public_url", "http://x", "ws:// or wss://"),
        ("snapshot_limit", 42, "allowed: one of 5, 10, 20, 50, 100, 500, 1000"),
        ("symbols", "BTC-USDT", "letters and digits"),
        ("min_large_trades", 0, ">= 1"),
        # Binance cuts every connection at 24 h: the planned rollover must come strictly before.
        ("ws_rollover_after", 24, "= 24: Input should be less than 24; allowed: > 0 and < 24"),
    ],
)
def test_bad_values_name_the_key_and_range(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, **{key: value})
    assert key in str(err.value) and expected in str(err.value)


def test_unknown_key_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'max_spred'"):
        load_settings(max_spred=0.1)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.max_spread = 0.5  # type: ignore[misc]
    assert isinstance(s, Settings)


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("min_large_trades: 5\nmax_spread: [1,\n  bad: :\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"config file {cfg}" in str(err.value)
    assert "is not valid YAML at line 3, column 8" in str(err.value)
    assert "one `key: value` per line" in str(err.value)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("just words\n", "a single str value")])
def test_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"{cfg} .*must map setting names to values.*; it holds {kind}$"):
        load_settings(cfg)


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("# nothing set here\n")
    assert load_settings(cfg) == load_settings()


def test_cli_reports_a_bad_yaml_file_as_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("max_spread: [1,\n")
    assert main(["--config", str(cfg), "settings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tapewatch: configuration error: config file {cfg}")
    assert "is not valid YAML at line 2" in err and "Traceback" not in err


# `inf` passed `gt=0` on fields with no upper bound: TAPEWATCH_LARGE_TRADE_SIZE=inf meant no trade is ever large.
@pytest.mark.parametrize(
    "key", ["large_trade_size", "min_24h_volume", "universe_ref_depth", "min_depth_1pct_usd"]
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_inf_and_nan_are_refused_with_the_key(key: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = "TAPEWATCH_" + key.upper()
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=f"{key} \\({env}\\) = '{value}': Input should be a finite number"):
        load_settings()
    monkeypatch.delenv(env)
    with pytest.raises(ConfigError, match=f"{key} \\({env}\\) = {value}: Input should be a finite number"):
        load_settings(None, **{key: float(value)})


def test_unknown_env_var_is_refused_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEWATCH_MAX_SPREED", "0.001")
    monkeypatch.setenv("TAPEWATCH_FOO", "1")
    for allowed in NON_SETTING_ENV.keys() - {"TAPEWATCH_CONFIG_FILE"}:  # not settings, read elsewhere
        monkeypatch.setenv(allowed, "1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "unknown environment variable TAPEWATCH_FOO",
        "unknown environment variable TAPEWATCH_MAX_SPREED",
    ]
    assert "did you mean" not in lines[0]
    assert "did you mean TAPEWATCH_MAX_SPREAD? rename or unset it" in lines[1]
    monkeypatch.delenv("TAPEWATCH_MAX_SPREED")
    monkeypatch.delenv("TAPEWATCH_FOO")
    assert load_settings().max_spread == 0.0002  # the allow-listed ones alone are fine


def test_unknown_yaml_key_gets_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("max_spred: 0.001\n")
    with pytest.raises(
        ConfigError, match="unknown setting 'max_spred': did you mean max_spread\\? remove it"
    ):
        load_settings(cfg)


def test_every_tapewatch_variable_the_repository_names_is_a_setting_or_allow_listed() -> None:
    """A new non-setting variable (a test switch, a path) must join NON_SETTING_ENV, or load_settings refuses it."""
    root = Path(__file__).resolve().parents[2]
    files = [root / name for name in ("Makefile", "README.md", ".ci/run", "workspace.yaml", "pyproject.toml")]
    for top in ("tapewatch", "realtime", "orchestration", "assets", "dashboard", "tests", "bench", "docs"):
        files += [p for p in (root / top).rglob("*") if p.suffix in {".py", ".md", ".yaml", ".toml", ".sh"}]
    # `TAPEWATCH_{name.upper()}_PORT` and `TAPEWATCH_<KEY>` are built from setting names: not literal names;
    # the README quotes the error for a misspelt one.
    here = Path(__file__).resolve()  # this file names bad variables on purpose
    names = {
        m
        for f in files
        if f.is_file() and f.resolve() != here
        for m in re.findall(
            r"(?<!unknown environment variable )\bTAPEWATCH_[A-Z0-9_]+\b(?![{<])", f.read_text()
        )
    }
    assert "TAPEWATCH_CONFIG_FILE" in names and "TAPEWATCH_MAX_SPREAD" in names
    known = {"TAPEWATCH_" + name.upper() for name in Settings.model_fields} | NON_SETTING_ENV.keys()
    assert sorted(names - known) == []


def test_a_replay_without_settings_loads_them_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run_replay/replay (bench/run.py calls it so) built a bare Settings(): a misspelt variable was ignored
    from realtime.replay import replay

    monkeypatch.setenv("TAPEWATCH_MAX_SPRED", "0.001")
    with pytest.raises(ConfigError, match="unknown environment variable TAPEWATCH_MAX_SPRED"):
        replay([tmp_path])
    monkeypatch.delenv("TAPEWATCH_MAX_SPRED")
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text("max_spread: 2\n")  # the YAML file named by the environment is read, and checked
    monkeypatch.setenv("TAPEWATCH_CONFIG_FILE", str(cfg))
    with pytest.raises(ConfigError, match="max_spread"):
        replay([tmp_path])


def test_the_settings_command_never_prints_a_password_or_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", "postgresql+psycopg://u:s3cret@db.example:5432/tw")
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", "redis://:r3dis@cache.example:6379/0")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "r3dis" not in out
    assert "database_url = 'postgresql+psycopg://u:***@db.example:5432/tw'" in out
    assert "redis_url = 'redis://:***@cache.example:6379/0'" in out
