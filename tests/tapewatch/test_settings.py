"""Settings: defaults from the spec, env and YAML sources, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapewatch.errors import ConfigError
from tapewatch.settings import Settings, load_settings


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
        ("primary_tf", "7m", "allowed: one of 1m, 3m"),
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
        load_settings(**{key: value})
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
