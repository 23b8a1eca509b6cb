"""One typed settings object for every tapewatch process.

Values come, highest priority first, from keyword overrides, ``TAPEWATCH_*`` environment variables,
an optional YAML file (``TAPEWATCH_CONFIG_FILE`` or ``--config``) and the defaults below. The spec's
CONFIG and DATA_CONFIG keys keep their names (``TAPEWATCH_MIN_24H_VOLUME`` sets ``min_24h_volume``).
A bad value fails at start with a :class:`~tapewatch.errors.ConfigError` naming the key and its range; so
do a YAML file that does not parse (with its line) or is not a mapping, an infinite or NaN number, and a
``TAPEWATCH_*`` environment variable that is neither a setting nor in :data:`NON_SETTING_ENV` (a typo).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tapewatch.errors import ConfigError

#: Kline intervals Binance USD-M accepts.
TIMEFRAMES: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
Timeframe = Literal[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"
]
#: Depth snapshot sizes Binance USD-M accepts, with their request weight.
SNAPSHOT_WEIGHTS: dict[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
SnapshotLimit = Literal[5, 10, 20, 50, 100, 500, 1000]

ENV_PREFIX = "TAPEWATCH_"
CONFIG_FILE_ENV = "TAPEWATCH_CONFIG_FILE"
#: The ``TAPEWATCH_*`` environment variables that are not settings, with who reads them. Every other
#: ``TAPEWATCH_*`` variable must name a setting: a misspelt setting name is refused, not ignored.
NON_SETTING_ENV: dict[str, str] = {
    CONFIG_FILE_ENV: "the YAML settings file (load_settings; --config wins)",
    "TAPEWATCH_TEST_DATABASE_URL": "tests: the PostgreSQL to use (tests/conftest.py)",
    "TAPEWATCH_TEST_REDIS_URL": "tests: the Redis to use (tests/conftest.py)",
    "TAPEWATCH_UPDATE_README_SCREENSHOT": "tests: =1 makes the browser test refresh the README screenshot",
}


class Settings(BaseSettings):
    """Every setting of tapewatch. Field descriptions double as the settings reference in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # `inf` passes `gt=0` and no upper bound: TAPEWATCH_LARGE_TRADE_SIZE=inf would silence every signal.
        allow_inf_nan=False,
    )

    # --- spec CONFIG ---------------------------------------------------------------------------------
    mode: Literal["SIGNAL_ONLY"] = Field("SIGNAL_ONLY", description="Signals only: tapewatch never trades.")
    universe_rescan_interval: float = Field(
        6, gt=0, le=168, description="Hours between full universe rescans."
    )
    min_24h_volume: float = Field(50_000_000, ge=0, description="Minimum 24h quote volume, USD.")
    min_open_interest: float = Field(10_000_000, ge=0, description="Minimum open interest, USD.")
    max_spread: float = Field(0.0002, gt=0, lt=1, description="Maximum relative spread (0.0002 = 0.02 %).")
    orderbook_imbalance_threshold: float = Field(0.28, gt=0, lt=1, description="|top-10 imbalance| needed.")
    min_large_trades: int = Field(3, ge=1, le=1000, description="Large trades needed in the trade window.")
    large_trade_size: float = Field(50_000, gt=0, description="Quote size (USD) from which a trade is large.")
    volume_confirmation_multiplier: float = Field(1.8, gt=0, le=100, description="Volume intensity needed.")
    primary_tf: Timeframe = Field("15m", description="Primary timeframe (RSI, ATR, levels).")
    context_tf: Timeframe = Field("1h", description="Context timeframe (rolling VWAP window).")
    max_daily_signals: int = Field(
        80, ge=0, le=10_000, description="Signals per UTC day (event time), all tiers."
    )
    max_concurrent_signals: int = Field(5, ge=0, le=1000, description="Open signals at once.")
    correlation_threshold: float = Field(0.6, ge=0, le=1, description="Reject above this return correlation.")

    # --- spec DATA_CONFIG ----------------------------------------------------------------------------
    orderbook_depth: int = Field(20, ge=1, le=1000, description="Book levels kept in views and Redis.")
    trade_history_window: int = Field(300, ge=1, le=86_400, description="Seconds of trades analysed.")
    kline_history_bars: int = Field(100, ge=1, le=1500, description="Candles of context per symbol.")
    update_frequency: Literal[100, 250, 500] = Field(100, description="Depth stream speed, ms.")

    # --- universe --------------------------------------------------------------------------------------
    universe_size: int = Field(30, ge=1, le=2000, description="Symbols kept after scoring.")
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Fixed universe (comma list); empty = chosen by score."
    )

    # --- universe selection (issue 5: spec 4.1 score, rescans, quick and emergency checks) -------------------
    universe_weight_volume: float = Field(0.35, ge=0, le=1, description="Score weight of 24h volume (spec).")
    universe_weight_liquidity: float = Field(
        0.25, ge=0, le=1, description="Score weight of depth within 1 % of mid (spec)."
    )
    universe_weight_volatility: float = Field(
        0.20, ge=0, le=1, description="Score weight of ATR/price (spec)."
    )
    universe_weight_activity: float = Field(0.20, ge=0, le=1, description="Score weight of trades/s (spec).")
    universe_ref_volume: float = Field(
        100_000_000, gt=0, description="24h quote volume (USD) worth a full volume score (spec $100M)."
    )
    universe_ref_depth: float = Field(
        2_000_000, gt=0, description="Depth within 1 % of mid (USD) worth a full liquidity score (spec $2M)."
    )
    universe_ref_atr_ratio: float = Field(
        0.02,
        gt=0,
        le=1,
        description="ATR/price worth a full volatility score (spec 0.1 is for daily ATR; 0.02 for 1h).",
    )
    universe_ref_trades_per_second: float = Field(
        10, gt=0, description="Trades per second worth a full activity score (spec 10)."
    )
    universe_atr_interval: Timeframe = Field("1h", description="Candle interval of the universe's ATR.")
    universe_atr_period: int = Field(14, ge=1, le=500, description="ATR period (candles) for the universe.")
    universe_depth_limit: SnapshotLimit = Field(
        500, description="Depth snapshot levels read per candidate for spread and depth within 1 %."
    )
    min_depth_1pct_usd: float = Field(
        0, ge=0, description="Minimum depth within 1 % of mid, USD (0 = no minimum; the spec has none)."
    )
    emergency_volume_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Emergency exclusion when live volume, scaled to 24h, is below this × min_24h_volume.",
    )
    emergency_strikes: int = Field(
        3,
        ge=1,
        le=100,
        description="Emergency checks in a row (30 s apart) a symbol must fail to be excluded.",
    )
    max_exclusion_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A quick or emergency check where more than this share of the universe breaks a minimum "
        "at once excludes nobody: a market-wide condition, logged (1 = off).",
    )

    # --- Dagster instance (issue 5) ----------------------------------------------------------------------
    dagster_host: str = Field("127.0.0.1", description="Dagster webserver host (tapewatch dagster, rescan).")
    dagster_port: int = Field(3000, ge=1, le=65535, description="Dagster webserver port.")
    dagster_max_concurrent_runs: int = Field(
        4, ge=1, le=100, description="Dagster runs at once (queued run coordinator)."
    )

    # --- outcomes, metrics and reports (issue 5: spec 9.1, 13.2) --------------------------------------------
    outcome_pnl_tolerance: float = Field(
        0.05, ge=0, le=10, description="Live vs batch outcome P&L difference (R) above which they disagree."
    )
    metrics_sharpe_days: int = Field(
        30,
        ge=2,
        le=3650,
        description="Days of daily R behind the daily Sharpe ratio (annualised by sqrt 365).",
    )
    metrics_trend_weeks: int = Field(
        8, ge=2, le=520, description="Weeks behind the weekly win-rate and quality trends."
    )
    metrics_top_symbols: int = Field(
        3, ge=1, le=100, description="Best and worst symbols listed per week and report."
    )

    # --- storage ---------------------------------------------------------------------------------------
    database_url: str | None = Field(None, description="PostgreSQL URL; unset = embedded server under var/.")
    redis_url: str | None = Field(None, description="Redis URL; unset = embedded server under var/.")
    var_dir: Path = Field(Path("var"), description="Where embedded servers, captures and reports live.")
    redis_prefix: str = Field(
        "tw:",
        pattern=r"^([A-Za-z0-9_-]+:)+$",
        description="Prefix of every Redis key, like tw: (one per deployment).",
    )

    # --- Binance endpoints -----------------------------------------------------------------------------
    binance_rest_url: str = Field("https://fapi.binance.com", description="REST base URL.")
    binance_ws_public_url: str = Field(
        "wss://fstream.binance.com/public",
        description="A ws:// or wss:// base URL: the route of depth and bookTicker.",
    )
    binance_ws_market_url: str = Field(
        "wss://fstream.binance.com/market",
        description="A ws:// or wss:// base URL: the route of aggTrade and klines.",
    )

    # --- REST limits -----------------------------------------------------------------------------------
    rest_weight_limit: int = Field(2400, ge=1, le=100_000, description="Binance request weight per minute.")
    rest_weight_target: float = Field(
        0.8, gt=0, le=1, description="Share of the weight limit we use at most."
    )
    resync_weight_share: float = Field(0.5, gt=0, le=1, description="Share of the limit snapshots may use.")
    rest_timeout: float = Field(10, gt=0, le=300, description="Seconds before a REST request times out.")
    rest_max_retries: int = Field(5, ge=0, le=50, description="Retries of a REST call on 5xx or timeout.")

    # --- websockets ------------------------------------------------------------------------------------
    ws_max_streams_per_connection: int = Field(200, ge=1, le=1024, description="Streams per connection.")
    ws_control_rate: float = Field(3, gt=0, le=10, description="SUBSCRIBE/UNSUBSCRIBE messages per second.")
    ws_connect_interval: float = Field(1.0, ge=0, le=60, description="Seconds between new connections.")
    ws_stale_after: float = Field(
        15,
        gt=0,
        le=3600,
        description="Reconnect a connection silent this long, or one of its depth/bookTicker streams (s).",
    )
    ws_rollover_after: float = Field(
        23.5, gt=0, lt=24, description="Hours before a planned rollover (Binance cuts at 24)."
    )
    ws_backoff_base: float = Field(0.5, gt=0, le=60, description="First reconnect backoff ceiling (s).")
    ws_backoff_max: float = Field(30, gt=0, le=3600, description="Largest reconnect backoff (s).")

    # --- order books -----------------------------------------------------------------------------------
    snapshot_limit: SnapshotLimit = Field(1000, description="Depth snapshot size for the universe's symbols.")
    tail_snapshot_limit: SnapshotLimit = Field(100, description="Snapshot size for symbols outside the top.")
    book_stale_after: float = Field(
        5, gt=0, le=3600, description="A book with no update this long is stale (s)."
    )
    trade_stale_after: float = Field(
        60,
        gt=0,
        le=3600,
        description="A symbol whose last trade is this much older than the event (s) is not evaluated.",
    )
    resync_min_interval: float = Field(
        1.0, ge=0, le=600, description="Seconds between resyncs of one symbol."
    )
    trade_fill_timeout: float = Field(
        10,
        ge=0,
        le=600,
        description="Trade time (s) an aggTrade id gap waits for its REST fill before its trades count as lost.",
    )

    # --- signal engine ---------------------------------------------------------------------------------
    setup_reset_seconds: float = Field(
        120, ge=0, le=3600, description="A setup is new again after its conditions failed this long (s)."
    )

    # --- quality tiers (spec 7.2 / 8.1 min_quality; tuned monthly, issue 5) ------------------------------
    quality_low_min: int = Field(
        50, ge=0, le=100, description="Lowest quality score of a LOW signal (below: a candidate only)."
    )
    quality_medium_min: int = Field(
        65, ge=0, le=100, description="Lowest quality score of a MEDIUM signal (above quality_low_min)."
    )
    quality_high_min: int = Field(
        80, ge=0, le=100, description="Lowest quality score of a HIGH signal (above quality_medium_min)."
    )

    @field_validator("quality_medium_min", "quality_high_min")
    @classmethod
    def _check_quality_order(cls, value: int, info: ValidationInfo) -> int:
        lower_key = "quality_low_min" if info.field_name == "quality_medium_min" else "quality_medium_min"
        lower = info.data.get(lower_key)
        if lower is not None and value <= lower:
            raise ValueError(f"must be above {lower_key} ({lower})")
        return value

    # --- capture ---------------------------------------------------------------------------------------
    capture_enabled: bool = Field(True, description="Write every incoming frame to var/capture/.")
    capture_flush_interval: float = Field(1.0, gt=0, le=60, description="Seconds between capture flushes.")

    # --- signal management (spec 8.1 SIGNAL_MANAGEMENT) and trade plans -------------------------------------
    max_daily_high: int = Field(20, ge=0, le=10_000, description="HIGH signals per UTC day (event time).")
    max_daily_medium: int = Field(40, ge=0, le=10_000, description="MEDIUM signals per UTC day (event time).")
    max_daily_low: int = Field(20, ge=0, le=10_000, description="LOW signals per UTC day (event time).")
    response_window_high: float = Field(
        60, gt=0, le=86_400, description="Seconds a HIGH signal's entry may trigger (spec: immediate)."
    )
    response_window_medium: float = Field(
        300, gt=0, le=86_400, description="Seconds a MEDIUM signal's entry may trigger (spec: <5min)."
    )
    response_window_low: float = Field(
        900, gt=0, le=86_400, description="Seconds a LOW signal's entry may trigger (spec: <15min)."
    )
    hold_time_high_min: float = Field(15, gt=0, le=10_080, description="HIGH hold band, lower bound (min).")
    hold_time_high_max: float = Field(45, gt=0, le=10_080, description="HIGH hold band, upper bound (min).")
    hold_time_medium_min: float = Field(
        30, gt=0, le=10_080, description="MEDIUM hold band, lower bound (min)."
    )
    hold_time_medium_max: float = Field(
        90, gt=0, le=10_080, description="MEDIUM hold band, upper bound (min)."
    )
    hold_time_low_min: float = Field(60, gt=0, le=10_080, description="LOW hold band, lower bound (min).")
    hold_time_low_max: float = Field(180, gt=0, le=10_080, description="LOW hold band, upper bound (min).")
    risk_per_signal: float = Field(
        0.005, gt=0, le=0.1, description="Share of capital lost at the stop (sizes the position)."
    )
    max_position_size: float = Field(
        1.0, gt=0, le=100, description="Largest suggested position, notional as a share of capital."
    )
    taker_fee: float = Field(0.0005, ge=0, lt=0.01, description="Taker fee per side (0.0005 = 0.05 %).")
    tp1_r: float = Field(1.0, gt=0, le=50, description="First target, in R (multiples of the stop distance).")
    tp2_r: float = Field(2.0, gt=0, le=50, description="Second target, in R; above tp1_r.")
    move_stop_to_entry_at_tp1: bool = Field(True, description="Move the stop to the entry once TP1 is hit.")
    cooldown_after_loss: int = Field(
        3, ge=0, le=1000, description="Candidates suppressed on a symbol after a stop-out."
    )
    stop_atr_multiple: float = Field(1.5, gt=0, le=50, description="Widest stop, in ATR(15m) from the entry.")
    min_stop_atr_multiple: float = Field(
        0.5, ge=0, le=50, description="Closest stop, in ATR(15m); at most stop_atr_multiple."
    )

    # --- scale-out (issue 7) ----------------------------------------------------------------------------------
    shard: str = Field(
        "0/1",
        description="I/N: this realtime instance follows shard I of N of the universe (0/1 = all of it).",
    )

    # --- dispatch: storage buffer, outbox relay, notifiers ---------------------------------------------------
    pending_writes_max: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        description="Signals+candidates held in memory while PostgreSQL is down.",
    )
    outbox_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between outbox relay passes when not woken."
    )
    outbox_batch: int = Field(100, ge=1, le=10_000, description="Outbox rows published per relay pass.")
    outbox_retry_max: float = Field(
        30, gt=0, le=3600, description="Longest wait (s) between relay retries while Redis is down."
    )
    signals_stream_maxlen: int = Field(
        100_000, ge=1000, le=100_000_000, description="Entries kept in the Redis signal stream (approx.)."
    )
    notify_queue_size: int = Field(1000, ge=1, le=1_000_000, description="Signals queued per notifier.")
    notify_max_age: float = Field(
        900, ge=0, le=86_400, description="At start, notify published signals at most this old (s)."
    )
    webhook_url: str | None = Field(None, description="POST every published signal here (JSON); unset = off.")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the X-Tapewatch-Signature header; required with webhook_url."
    )
    webhook_timeout: float = Field(5, gt=0, le=120, description="Seconds before a webhook POST times out.")
    webhook_max_attempts: int = Field(
        5, ge=1, le=100, description="Webhook tries per signal before giving up."
    )
    webhook_backoff_base: float = Field(
        0.5, gt=0, le=60, description="First webhook retry delay (s), doubling."
    )
    webhook_backoff_max: float = Field(30, gt=0, le=3600, description="Longest webhook retry delay (s).")
    telegram_bot_token: SecretStr | None = Field(
        None, description="Telegram bot token; unset = Telegram off."
    )
    telegram_chat_id: str | None = Field(
        None, description="Telegram chat to post to; required with the token."
    )
    telegram_api_url: str = Field("https://api.telegram.org", description="Telegram Bot API base URL.")
    telegram_max_per_minute: int = Field(
        20, ge=1, le=1000, description="Telegram messages per minute; beyond, one digest per minute."
    )
    telegram_timeout: float = Field(10, gt=0, le=120, description="Seconds before a Telegram call times out.")
    telegram_max_attempts: int = Field(5, ge=1, le=100, description="Telegram tries per message.")
    telegram_retry_after_max: float = Field(
        300, gt=0, le=3600, description="Longest 429 retry_after (s) honoured; longer gives up."
    )

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https"))

    @field_validator("telegram_api_url")
    @classmethod
    def _check_telegram_api_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https")) or value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("webhook_url") and not (value and value.get_secret_value()):
            raise ValueError("webhook_url is set: set webhook_secret too (receivers verify the signature)")
        return value

    @field_validator("telegram_chat_id")
    @classmethod
    def _check_telegram_chat(cls, value: str | None, info: ValidationInfo) -> str | None:
        token = info.data.get("telegram_bot_token")
        if bool(token is not None and token.get_secret_value()) != bool(value):
            raise ValueError("set both telegram_bot_token and telegram_chat_id, or neither")
        return value

    # --- realtime live state in Redis (open signals, features, metrics, quiet symbols, loop lag) -------------
    live_state_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between live-state writes (unrealised R, features, metrics)."
    )
    features_ttl: float = Field(
        120, gt=0, le=86_400, description="Seconds a symbol's last features stay in Redis unless refreshed."
    )
    symbol_quiet_after: float = Field(
        30, gt=0, le=3600, description="Seconds without an event on a symbol, while others flow, = quiet."
    )
    loop_lag_warn: float = Field(
        0.5, gt=0, le=60, description="Event-loop lag (s) above which a late wake-up is logged and counted."
    )

    # --- health sensors (spec 11.1 HEALTH_CHECKS), market-data archive, monthly tuning (issue 5) ----------
    timeout_threshold: int = Field(
        5, ge=1, le=1000, description="Consecutive failed connectivity checks before the backup feed."
    )
    api_recovery_checks: int = Field(
        2, ge=1, le=1000, description="Consecutive good connectivity checks before the primary feed again."
    )
    heartbeat_max_age: float = Field(
        30,
        gt=0,
        le=3600,
        description="A realtime heartbeat older, or websockets silent longer, than this (s) fails a connectivity check.",
    )
    anomaly_threshold: float = Field(
        3, gt=0, le=100, description="Standard deviations from the rolling mean that make an anomaly."
    )
    anomaly_window: int = Field(
        30, ge=2, le=10_000, description="Checks the rolling mean/std of each data-quality series spans."
    )
    anomaly_min_samples: int = Field(
        10, ge=2, le=10_000, description="Checks of a series before it can be anomalous (warm-up)."
    )
    data_quality_clean_checks: int = Field(
        5, ge=1, le=1000, description="Consecutive clean data-quality checks before signalling resumes."
    )
    cpu_threshold: float = Field(
        80, gt=0, le=100, description="CPU use (%) above which the universe shrinks."
    )
    memory_threshold: float = Field(
        85, gt=0, le=100, description="Memory use (%) above which the universe shrinks."
    )
    performance_trip_checks: int = Field(
        2, ge=1, le=1000, description="Consecutive overloaded checks before the universe shrinks (again)."
    )
    performance_clear_checks: int = Field(
        10, ge=1, le=1000, description="Consecutive healthy checks before the universe cap is lifted."
    )
    min_universe_under_load: int = Field(
        5, ge=1, le=2000, description="The universe is never shrunk below this many symbols."
    )
    capture_retention_hours: float = Field(
        72, ge=1, le=100_000, description="Raw capture files older than this (h) are pruned once archived."
    )
    archive_max_gap_seconds: float = Field(
        120, gt=0, le=86_400, description="Archive check: largest silence (s) in a symbol's trades or tops."
    )
    tuning_min_samples: int = Field(
        30, ge=1, le=1_000_000, description="Scored signals a parameter set needs in-sample to be proposed."
    )
    tuning_weeks: int = Field(
        5, ge=2, le=52, description="Weeks of candidates tuning reads: all but the last fit, the last judges."
    )

    # --- dashboard (issue 6) -----------------------------------------------------------------------------
    dashboard_host: str = Field(
        "127.0.0.1", min_length=1, description="Dashboard listen address; not loopback = password required."
    )
    dashboard_port: int = Field(8050, ge=1, le=65535, description="Dashboard listen port.")
    dashboard_user: str = Field(
        "tapewatch", min_length=1, description="Basic-auth user name of the dashboard (with the password)."
    )
    dashboard_password: SecretStr | None = Field(
        None, description="Basic-auth password; required when dashboard_host is not 127.0.0.1/localhost."
    )
    dashboard_refresh: float = Field(
        1.0, ge=0.2, le=2, description="Seconds between the dashboard's live updates (at most 2)."
    )

    # --- simulator and logging -------------------------------------------------------------------------
    sim_host: str = Field("127.0.0.1", description="Simulated exchange host.")
    sim_port: int = Field(8765, ge=1, le=65535, description="Simulated exchange port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("postgresql", "postgresql+psycopg", "postgres"))

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("binance_rest_url")
    @classmethod
    def _check_rest_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https")) or value

    @field_validator("binance_ws_public_url", "binance_ws_market_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        return _check_url(value, ("ws", "wss")) or value

    @field_validator("hold_time_high_max", "hold_time_medium_max", "hold_time_low_max")
    @classmethod
    def _check_hold_band(cls, value: float, info: ValidationInfo) -> float:
        lower_key = str(info.field_name).removesuffix("_max") + "_min"
        lower = info.data.get(lower_key)
        if lower is not None and value <= lower:
            raise ValueError(f"must be above {lower_key} ({lower})")
        return value

    @field_validator("tp2_r")
    @classmethod
    def _check_tp2_r(cls, value: float, info: ValidationInfo) -> float:
        tp1 = info.data.get("tp1_r")
        if tp1 is not None and value <= tp1:
            raise ValueError(f"must be above tp1_r ({tp1})")
        return value

    @field_validator("min_stop_atr_multiple")
    @classmethod
    def _check_min_stop(cls, value: float, info: ValidationInfo) -> float:
        widest = info.data.get("stop_atr_multiple")
        if widest is not None and value > widest:
            raise ValueError(f"must be at most stop_atr_multiple ({widest})")
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        from tapewatch.sharding import parse_shard

        return parse_shard(value).label

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [s for s in value.replace(" ", "").split(",") if s]
        if isinstance(value, list | tuple):
            bad = [s for s in value if not (isinstance(s, str) and s.isalnum())]
            if bad:
                raise ValueError(f"symbols must be letters and digits, like BTCUSDT; got {bad!r}")
            return tuple(s.upper() for s in value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _yaml_data is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_yaml_data))
        return tuple(sources)

    @property
    def capture_dir(self) -> Path:
        return self.var_dir / "capture"

    @property
    def usable_weight_per_minute(self) -> int:
        return int(self.rest_weight_limit * self.rest_weight_target)


#: The YAML file's settings while :func:`load_settings` builds a Settings (read there, so its errors are ours).
_yaml_data: dict[str, Any] | None = None


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.path or parts.query):
        raise ValueError(
            f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}; got {value!r}"
        )
    return value


def allowed_range(name: str) -> str:
    """Human-readable allowed values of a field, e.g. ``> 0 and < 1`` or ``one of 15m, 1h``."""
    field = Settings.model_fields[name]
    bounds: list[str] = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    if bounds:
        return " and ".join(bounds)
    args = getattr(field.annotation, "__args__", ())
    if args and all(isinstance(a, str | int) for a in args):
        return "one of " + ", ".join(str(a) for a in args)
    return field.description or "see the settings reference"


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file, or ConfigError naming the file, the line of a syntax error and the fix."""
    where = f"config file {path} (set by --config or {CONFIG_FILE_ENV})"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{where} is not valid YAML{at}: {problem}; fix it (one `key: value` per line, "
            "lists as [a, b]; see the settings reference in the README)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    if data is None:  # an empty file (or only comments): no settings
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise ConfigError(
            f"{where} must map setting names to values (`max_spread: 0.0003`, one per line); it holds {kind}"
        )
    return data


def _did_you_mean(key: str, known: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """One line per ``TAPEWATCH_*`` variable of ``environ`` that is neither a setting nor in NON_SETTING_ENV,
    naming the closest known name when there is one."""
    known = {name.upper() for name in Settings.model_fields} | {
        name.removeprefix(ENV_PREFIX) for name in NON_SETTING_ENV
    }
    lines = []
    for name in sorted(environ):
        key = name.upper().removeprefix(ENV_PREFIX)
        if name.upper().startswith(ENV_PREFIX) and key not in known:
            # Compared without the prefix, which every name shares and which would make anything look close.
            lines.append(
                f"unknown environment variable {name}: {_did_you_mean(key, known, ENV_PREFIX)}rename or "
                "unset it (every TAPEWATCH_* variable must be a setting; see the settings reference in the README)"
            )
    return lines


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError with one line per bad key (env name, value, allowed range)
    and per unknown ``TAPEWATCH_*`` environment variable."""
    global _yaml_data
    path = config_file or os.environ.get(CONFIG_FILE_ENV)
    lines = unknown_env(os.environ)
    settings: Settings | None = None
    try:
        _yaml_data = read_config_file(Path(path)) if path is not None else None
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            env = ENV_PREFIX + key.upper()
            if err["type"] == "extra_forbidden":
                hint = _did_you_mean(key, set(Settings.model_fields))
                lines.append(
                    f"unknown setting {key!r}: {hint}remove it (see the settings reference in the README)"
                )
                continue
            allowed = allowed_range(key) if key in Settings.model_fields else ""
            lines.append(f"{key} ({env}) = {err.get('input')!r}: {err['msg']}; allowed: {allowed}")
    finally:
        _yaml_data = None
    if settings is None or lines:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines))
    return settings
