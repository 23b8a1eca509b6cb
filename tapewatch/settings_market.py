"""The settings of the market side: the spec's CONFIG and DATA_CONFIG, the universe, storage, Binance, REST,
websockets, order books, the signal engine, quality tiers, capture and signal management.

A pydantic mixin of :class:`tapewatch.settings.Settings` (which supplies the environment prefix, the sources and
the model config); the field order here is the order of the README's settings reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from tapewatch.settings_types import (
    CONTEXT_TIMEFRAMES,
    PRIMARY_TF,
    ContextTimeframe,
    PrimaryTimeframe,
    SnapshotLimit,
    Timeframe,
    check_host,
    check_redis_url,
    check_url,
)


class MarketSettings(BaseModel):
    """Settings of the market data, the universe, the signal engine and signal management."""

    # --- spec CONFIG ---------------------------------------------------------------------------------
    mode: Literal["SIGNAL_ONLY"] = Field("SIGNAL_ONLY", description="Signals only: tapewatch never trades.")
    universe_rescan_interval: float = Field(
        6,
        gt=0,
        le=24,
        # what error messages and the README's settings reference say is allowed (the bounds alone are not)
        json_schema_extra={
            "allowed": "a divisor of 24 hours (1, 2, 3, 4, 6, 8, 12 or 24) or, under 1 hour, of "
            "60 minutes (0.25 = 15 min, 0.5 = 30 min, ...)"
        },
        description="Hours between full universe rescans (a cron schedule aligned to midnight UTC: the "
        "interval must repeat evenly in a day, or an hour).",
    )
    min_24h_volume: float = Field(50_000_000, ge=0, description="Minimum 24h quote volume, USD.")
    min_open_interest: float = Field(10_000_000, ge=0, description="Minimum open interest, USD.")
    max_spread: float = Field(0.0002, gt=0, lt=1, description="Maximum relative spread (0.0002 = 0.02 %).")
    orderbook_imbalance_threshold: float = Field(0.28, gt=0, lt=1, description="|top-10 imbalance| needed.")
    min_large_trades: int = Field(3, ge=1, le=1000, description="Large trades needed in the trade window.")
    large_trade_size: float = Field(50_000, gt=0, description="Quote size (USD) from which a trade is large.")
    volume_confirmation_multiplier: float = Field(1.8, gt=0, le=100, description="Volume intensity needed.")
    primary_tf: PrimaryTimeframe = Field(
        "15m",
        description="Primary timeframe (RSI, ATR, levels, volume context): only 15m is supported; another value "
        "is refused at start.",
    )
    context_tf: ContextTimeframe = Field(
        "1h",
        description="Context timeframe: the length of the rolling VWAP window over trades (the feature keeps its "
        "name vwap_1h). At most 4h: every trade of the window is kept per symbol.",
    )
    max_daily_signals: int = Field(
        80, ge=0, le=10_000, description="Signals per UTC day (event time), all tiers."
    )
    max_concurrent_signals: int = Field(5, ge=0, le=1000, description="Open signals at once.")
    correlation_threshold: float = Field(0.6, ge=0, le=1, description="Reject above this return correlation.")

    # --- spec DATA_CONFIG ----------------------------------------------------------------------------
    orderbook_depth: int = Field(
        20,
        ge=1,
        le=1000,
        description="Book levels a side published with each symbol's live features in Redis (bids, asks; fewer "
        "when the book holds fewer: a polled book 50) and searched for walls (bid_walls, ask_walls: >= 5x the "
        "mean level size); the imbalance stays on the top 10 (spec 6.1).",
    )
    trade_history_window: int = Field(300, ge=1, le=86_400, description="Seconds of trades analysed.")
    kline_history_bars: int = Field(
        100,
        ge=1,
        le=1499,
        description="Closed 15m candles of context per symbol (at most 1499: the history request adds the "
        "forming one, and Binance answers at most 1500).",
    )
    update_frequency: Literal[100, 250, 500] = Field(100, description="Depth stream speed, ms.")

    # --- universe --------------------------------------------------------------------------------------
    universe_size: int = Field(30, ge=1, le=2000, description="Symbols kept after scoring.")
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Fixed universe (comma list); empty = chosen by score."
    )
    exchange_info_refresh: float = Field(
        3600,
        ge=0,
        le=86_400,
        description="Seconds between the realtime service's exchangeInfo fetches (tick sizes, listings); "
        "0 = at start and for unknown symbols only.",
    )

    # --- universe selection (issue 5: spec 4.1 score, rescans, quick and emergency checks) -------------------
    universe_weight_volume: float = Field(0.35, ge=0, le=1, description="Score weight of 24h volume (spec).")
    universe_weight_liquidity: float = Field(
        0.25, ge=0, le=1, description="Score weight of depth within 1 % of mid (spec)."
    )
    universe_weight_volatility: float = Field(
        0.20, ge=0, le=1, description="Score weight of ATR/price (spec)."
    )
    universe_weight_activity: float = Field(
        0.20,
        ge=0,
        le=1,
        description="Score weight of trades/s (spec). The score divides by the four weights' sum: they may not "
        "all be 0.",
    )
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
    universe_live_stale_after: float = Field(
        5,
        gt=0,
        le=3600,
        description="Live spread, depth and volume published longer ago than this (s) are ignored by the quick "
        "and emergency checks (no strike, no forgiving); above live_state_interval.",
    )

    # --- Dagster instance (issue 5) ----------------------------------------------------------------------
    dagster_host: str = Field(
        "127.0.0.1", min_length=1, description="Dagster webserver host (tapewatch dagster, rescan)."
    )
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
    capture_checkpoint_seconds: int = Field(
        3600,
        ge=0,
        le=3600,
        description="Seconds between book checkpoints in the capture (a divisor of 3600: each hour file starts "
        "with one; 0: none).",
    )

    @field_validator("capture_checkpoint_seconds")
    @classmethod
    def _check_checkpoint_period(cls, value: int) -> int:
        if value and 3600 % value:
            raise ValueError(
                "must divide 3600 (1, 2, 5, 60, 600, 3600 ...) so each hour file starts with one, or be 0"
            )
        return value

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

    @field_validator("primary_tf", mode="before")
    @classmethod
    def _check_primary_tf(cls, value: Any) -> Any:
        if value != PRIMARY_TF:
            raise ValueError(
                f"only {PRIMARY_TF} is supported: RSI, ATR and levels are read on {PRIMARY_TF} candles (DESIGN §4)"
            )
        return value

    @field_validator("context_tf", mode="before")
    @classmethod
    def _check_context_tf(cls, value: Any) -> Any:
        if value not in CONTEXT_TIMEFRAMES:
            raise ValueError(
                f"must be one of {', '.join(CONTEXT_TIMEFRAMES)}: it is the rolling VWAP window, and every trade "
                "of the window is kept per symbol"
            )
        return value

    @field_validator("universe_weight_activity")
    @classmethod
    def _check_weights_sum(cls, value: float, info: ValidationInfo) -> float:
        # the score divides by the weights' sum: all 0 made every rescan fail
        keys = ("universe_weight_volume", "universe_weight_liquidity", "universe_weight_volatility")
        others = [info.data.get(key) for key in keys]
        if value == 0 and all(w == 0 for w in others):
            raise ValueError(
                f"{', '.join(keys)} and universe_weight_activity are all 0: the universe score divides by their "
                "sum, so at least one must be above 0"
            )
        return value

    @field_validator("universe_rescan_interval")
    @classmethod
    def _check_rescan_interval(cls, value: float) -> float:
        # cron restarts its step at each midnight (or hour): 36 h would run daily, 7 h at 0, 7, 14, 21, 0
        minutes = value * 60
        whole = round(minutes)
        if abs(minutes - whole) > 1e-6 or whole <= 0:
            even = False
        elif whole < 60:
            even = 60 % whole == 0
        else:
            even = whole % 60 == 0 and 24 % (whole // 60) == 0
        if not even:
            # the rule itself follows as the field's "allowed" text (json_schema_extra), said once
            raise ValueError(f"universe_rescan_interval must repeat evenly in a cron schedule; got {value:g}")
        return value

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        # `TAPEWATCH_DATABASE_URL=` in a shell or a compose file means "not set": the embedded server
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return check_url(value, ("postgresql", "postgresql+psycopg", "postgres"))

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        return check_redis_url(value)

    @field_validator("var_dir", mode="before")
    @classmethod
    def _check_var_dir(cls, value: Any) -> Any:
        # Path("") is ".": TAPEWATCH_VAR_DIR= put the embedded servers and captures in the current directory
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a directory, like var or /srv/tapewatch; got an empty value")
        return value

    @field_validator("dagster_host")
    @classmethod
    def _check_dagster_host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("binance_rest_url")
    @classmethod
    def _check_rest_url(cls, value: str) -> str:
        return check_url(value, ("http", "https")) or value

    @field_validator("binance_ws_public_url", "binance_ws_market_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        return check_url(value, ("ws", "wss")) or value

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

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            # spaces around a name go (`BTCUSDT, ETHUSDT`); inside one it is a typo, refused as on the command line
            value = [s.strip() for s in value.split(",") if s.strip()]
        if isinstance(value, list | tuple):
            bad = [s for s in value if not (isinstance(s, str) and s.isalnum())]
            if bad:
                raise ValueError(f"symbols must be letters and digits, like BTCUSDT; got {bad!r}")
            return tuple(s.upper() for s in value)
        return value
