"""The value types and environment names of the settings: what Binance accepts, and which ``TAPEWATCH_*``
variables are not settings. Split from :mod:`tapewatch.settings` (which re-exports every name here)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

#: Kline intervals Binance USD-M accepts.
TIMEFRAMES: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
Timeframe = Literal[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"
]
#: Length of each timeframe of :data:`TIMEFRAMES` up to a week, ms (``1M`` has none: months differ).
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
    "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
    "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
}  # fmt: skip
#: The one primary timeframe (``primary_tf``): RSI, ATR, levels and the volume context are read on its candles,
#: which the streams, the REST history, the simulator and the stored features (``atr_15m``) all assume.
PRIMARY_TF = "15m"
PrimaryTimeframe = Literal["15m"]
#: The context timeframes (``context_tf``, the rolling VWAP window): every trade of the window is kept per
#: symbol, so it stops at 4 h.
CONTEXT_TIMEFRAMES: tuple[str, ...] = ("15m", "30m", "1h", "2h", "4h")
ContextTimeframe = Literal["15m", "30m", "1h", "2h", "4h"]
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


#: A secret in a URL's query: libpq's ``password=``/``sslpassword=``, an API ``token=``, ``key=``, ``secret=``.
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:pass|pwd|secret|token|key)[^=&#]*=)[^&#]*")
#: ``scheme://user:password@``: the password runs to the last ``@`` (SQLAlchemy reads ``/`` and ``@`` in it too).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):.*@", re.DOTALL)
#: what a masked secret is shown as
MASK = "***"


def mask_url(url: str) -> str:
    """``url`` with its password (``user:***@host``) and the values of secret-looking query parameters
    (``?password=***``) masked, for messages and logs; anything else unchanged, also a URL that does not parse.
    Over-masks rather than leaks: with ``user:`` before an ``@`` that urllib cannot read as userinfo, all
    up to the last ``@`` goes."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises when the "port" is the start of a password holding a / (u:ab/cd@h)
        plain = parts.password is None
    except ValueError:
        plain = False
    if not plain:
        url = _USERINFO.sub(rf"\1:{MASK}@", url, count=1)
    return _SECRET_QUERY.sub(rf"\1{MASK}", url)


def _why_not_a_host(value: str) -> str | None:
    """What is wrong with ``value`` as a host name or address (spaces), or None when nothing is."""
    if not value.strip():
        return f"got {'only spaces' if value else 'nothing'}"
    if any(c.isspace() for c in value):
        return f"got {value!r}, with a space"
    return None


def check_host(value: str) -> str:
    """``value`` unchanged when it can name a host (not empty, no spaces), else ValueError: a host of spaces
    (``TAPEWATCH_DASHBOARD_HOST="  "``) passed and failed only at the socket, with an obscure error."""
    why = _why_not_a_host(value)
    if why is not None:
        raise ValueError(f"must name a host without spaces, like 127.0.0.1, localhost or 0.0.0.0; {why}")
    return value


def check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    """``value`` unchanged when it is None or a URL of one of ``schemes`` whose port, if any, is a number
    from 0 to 65535 and whose host, if any, has no spaces; else ValueError naming what is allowed (the drivers
    would fail later, with a traceback). Messages show the URL with :func:`mask_url`, never its password."""
    if value is None:
        return None
    shown = mask_url(value)
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise ValueError(f"{shown!r} is not a URL: {exc}") from None
    if parts.scheme not in schemes or not (parts.netloc or parts.path or parts.query):
        raise ValueError(
            f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}; got {shown!r}"
        )
    try:
        parts.port  # noqa: B018 -- read for its check: urlsplit parses the port only when asked
    except ValueError:
        raise ValueError(
            f"the port of {shown!r} must be a number from 0 to 65535 (like host:5432), "
            "or left out for the default"
        ) from None
    why = _why_not_a_host(parts.hostname) if parts.hostname else None
    if why is not None:
        raise ValueError(
            f"the host of {shown!r} must be a name or address without spaces, like localhost; {why}"
        )
    return value


def check_redis_url(value: str | None) -> str | None:
    """``value`` unchanged when it is None or a Redis URL redis-py reads as written: ``check_url``, a database
    number (the path of redis:// and rediss://, ``?db=``) that is a whole number. redis-py ignores a path
    like ``/abc`` and silently uses database 0; ``?db=abc`` fails at the first connection."""
    value = check_url(value, ("redis", "rediss", "unix"))
    if value is None:
        return None
    shown = mask_url(value)
    parts = urlsplit(value)
    # a unix:// path is the socket's; redis-py reads the database as the path unquoted, slashes dropped
    db_path = unquote(parts.path).replace("/", "") if parts.scheme != "unix" else ""
    if db_path != "" and not re.fullmatch(r"[0-9]+", db_path):
        raise ValueError(
            f"the path of {shown!r} must be empty or a database number, like redis://host:6379/0; "
            f"got {db_path!r}"
        )
    for db in parse_qs(parts.query).get("db", []):
        if not re.fullmatch(r"[0-9]+", db):
            raise ValueError(f"db= of {shown!r} must be a database number, like ?db=0; got {db!r}")
    return value
