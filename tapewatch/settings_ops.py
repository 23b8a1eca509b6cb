"""The settings of operations: scale-out, dispatch (storage buffer, outbox, notifiers), the live state in
Redis, health sensors, archive and tuning, the dashboard, the simulator and logging.

A pydantic mixin of :class:`tapewatch.settings.Settings`, after :class:`~tapewatch.settings_market.MarketSettings`
(its validators may read market fields validated before them); the field order here is the README's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator

from tapewatch.settings_types import check_host, check_url


class OperationsSettings(BaseModel):
    """Settings of scale-out, dispatch, live state, health, the dashboard, the simulator and logging."""

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
        2,
        gt=0,
        le=3600,
        description="Longest wait (s) between retries of the outbox relay (Redis or PostgreSQL failing) and of the "
        "storage buffer (PostgreSQL down); capped at 2 s, so held signals go out within about 2 s of the return.",
    )
    signals_stream_maxlen: int = Field(
        100_000, ge=1000, le=100_000_000, description="Entries kept in the Redis signal stream (approx.)."
    )
    notify_queue_size: int = Field(1000, ge=1, le=1_000_000, description="Signals queued per notifier.")
    notify_max_age: float = Field(
        900, ge=0, le=86_400, description="At start, notify published signals at most this old (s)."
    )
    notify_late_after: float = Field(
        90,
        gt=0,
        le=86_400,
        description="A notification sent more than this long (s) after the service produced its signal "
        "(wall clock) is labelled DELAYED and counted as late.",
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

    @field_validator(
        "webhook_url",
        "webhook_secret",
        "telegram_bot_token",
        "telegram_chat_id",
        "dashboard_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `TAPEWATCH_TELEGRAM_BOT_TOKEN=` meant "off" to the pair check but "on" to the notifiers, which then
        # failed at start; an empty value of these optional strings is now unset, as their checks read it.
        # A Telegram chat id is a number (a group's is negative): YAML reads it as one
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return None if value == "" else value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        return check_url(value, ("http", "https"))

    @field_validator("telegram_api_url")
    @classmethod
    def _check_telegram_api_url(cls, value: str) -> str:
        return check_url(value, ("http", "https")) or value

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

    @field_validator("live_state_interval")
    @classmethod
    def _check_live_state_interval(cls, value: float, info: ValidationInfo) -> float:
        # every value published would look stale at once: the universe checks would judge nobody
        bound = info.data.get("universe_live_stale_after")
        if bound is not None and value >= bound:
            raise ValueError(f"must be below universe_live_stale_after ({bound})")
        return value

    loop_lag_warn: float = Field(
        0.5, gt=0, le=60, description="Event-loop lag (s) above which a late wake-up is logged and counted."
    )
    processing_lag_warn: float = Field(
        1.0,
        gt=0,
        le=600,
        description="Receive-to-processed time (s) of a frame above which it is counted and logged (behind the feed).",
    )

    # --- health sensors (spec 11.1 HEALTH_CHECKS), market-data archive, monthly tuning (issue 5) ----------
    timeout_threshold: int = Field(
        5, ge=1, le=1000, description="Consecutive failed connectivity checks before the backup feed."
    )
    api_recovery_checks: int = Field(
        2, ge=1, le=1000, description="Consecutive good connectivity checks before the primary feed again."
    )
    backup_min_dwell: float = Field(
        300,
        ge=0,
        le=86_400,
        description="Least time (s) the connectivity sensor's backup feed stays on before the switch back; doubled after each failed switch back (0: none).",
    )
    backup_max_dwell: float = Field(
        3600,
        ge=0,
        le=86_400,
        description="The longest (s) the backup feed's minimum dwell grows to by doubling.",
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
        80,
        gt=0,
        le=100,
        description="Host CPU use (%, averaged over the last 60 s) above which the universe shrinks.",
    )
    memory_threshold: float = Field(
        85, gt=0, le=100, description="Memory use (%) above which the universe shrinks."
    )
    # None: unset, replaced by _default_restore_threshold (validate_default) before the type is checked. (A
    # default_factory reading the trip threshold adds an error line of its own to every other invalid setting.)
    cpu_restore_threshold: float = Field(
        None,  # type: ignore[assignment]
        ge=0,
        lt=100,
        description="A shrunk universe is restored only while host CPU (%, 60 s average) stays at or below "
        "this; below cpu_threshold. Unset: cpu_threshold - 10 (70 with the defaults).",
    )
    memory_restore_threshold: float = Field(
        None,  # type: ignore[assignment]
        ge=0,
        lt=100,
        description="A shrunk universe is restored only while memory use (%) stays at or below this; below "
        "memory_threshold. Unset: memory_threshold - 10 (75 with the defaults).",
    )

    @field_validator("cpu_restore_threshold", "memory_restore_threshold", mode="before")
    @classmethod
    def _default_restore_threshold(cls, value: Any, info: ValidationInfo) -> Any:
        # a fixed default (70 / 75) made a lower trip threshold (TAPEWATCH_CPU_THRESHOLD=65, valid before the
        # restore thresholds existed) an error at the start of every process: the default follows the trip
        if value is not None:
            return value
        bound = info.data.get((info.field_name or "").replace("_restore", ""))
        return max(0.0, bound - 10) if bound is not None else 0.0  # no bound: its own error is reported

    @field_validator("cpu_restore_threshold", "memory_restore_threshold")
    @classmethod
    def _check_restore_threshold(cls, value: float, info: ValidationInfo) -> float:
        name = (info.field_name or "").replace("_restore", "")
        bound = info.data.get(name)
        if bound is not None and value >= bound:
            raise ValueError(
                f"must be below {name} ({bound:g}): else the load that just shrank the universe counts as calm "
                f"enough to restore it, and the universe flaps (unset, it is {name} - 10)"
            )
        return value

    performance_trip_checks: int = Field(
        6,
        ge=1,
        le=1000,
        description="Consecutive overloaded checks (30 s apart: 6 = 3 min) before the universe shrinks (again).",
    )
    performance_clear_checks: int = Field(
        10,
        ge=1,
        le=1000,
        description="Consecutive checks below the restore thresholds before the universe cap is lifted; "
        "doubled after each failed restore.",
    )
    performance_max_clear_checks: int = Field(
        None,  # type: ignore[assignment]  # unset: replaced by _default_max_clear_checks
        ge=1,
        le=100_000,
        description="The most performance_clear_checks grows to by doubling (120 = 1 h at 30 s); at least "
        "performance_clear_checks. Unset: the larger of 120 and performance_clear_checks.",
    )
    performance_relapse_within: float = Field(
        1800,
        ge=0,
        le=86_400,
        description="A new shrink this soon (s) after a restore means the restore failed: the next restore "
        "waits twice as many calm checks (0: never).",
    )

    @field_validator("performance_max_clear_checks", mode="before")
    @classmethod
    def _default_max_clear_checks(cls, value: Any, info: ValidationInfo) -> Any:
        # a fixed 120 made TAPEWATCH_PERFORMANCE_CLEAR_CHECKS above 120 (valid before) an error at every start
        if value is not None:
            return value
        return max(120, info.data.get("performance_clear_checks") or 0)

    @field_validator("performance_max_clear_checks")
    @classmethod
    def _check_max_clear_checks(cls, value: int, info: ValidationInfo) -> int:
        bound = info.data.get("performance_clear_checks")
        if bound is not None and value < bound:
            raise ValueError(f"must be at least performance_clear_checks ({bound})")
        return value

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
        "tapewatch",
        min_length=1,
        pattern=r"^[^:]+$",
        description="Basic-auth user name of the dashboard (with the password); no ':' (basic auth's separator).",
    )
    dashboard_password: SecretStr | None = Field(
        None, description="Basic-auth password; required when dashboard_host is not 127.0.0.1/localhost."
    )
    dashboard_refresh: float = Field(
        1.0, ge=0.2, le=2, description="Seconds between the dashboard's live updates (at most 2)."
    )
    dashboard_stale_after: float = Field(
        10,
        gt=0,
        le=3600,
        description="Realtime figures published longer ago than this (s) are greyed as stale, not shown as "
        "live; above live_state_interval.",
    )

    @field_validator("dashboard_stale_after")
    @classmethod
    def _check_dashboard_stale_after(cls, value: float, info: ValidationInfo) -> float:
        # below the publish interval, every figure would flicker between live and stale
        interval = info.data.get("live_state_interval")
        if interval is not None and value <= interval:
            raise ValueError(f"must be above live_state_interval ({interval})")
        return value

    # --- simulator and logging -------------------------------------------------------------------------
    sim_host: str = Field("127.0.0.1", min_length=1, description="Simulated exchange host.")
    sim_port: int = Field(8765, ge=1, le=65535, description="Simulated exchange port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")

    @field_validator("dashboard_host", "sim_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        from tapewatch.sharding import parse_shard

        return parse_shard(value).label
