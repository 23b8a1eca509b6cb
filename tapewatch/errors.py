"""The tapewatch exception tree.

Every error is either *retryable* (the operation may succeed if tried again later: a feed dropped, a
server answered 5xx, a database restarted) or *fatal* (retrying cannot help: a bad setting, a ban, a
programming error). Callers catch the family they can act on.
"""

from __future__ import annotations


class TapewatchError(Exception):
    """Base of every error tapewatch raises on purpose."""


class RetryableError(TapewatchError):
    """The operation failed for a passing reason; trying again later may succeed."""


class FatalError(TapewatchError):
    """Retrying cannot help; an operator has to change something."""


class ConfigError(FatalError):
    """A setting is missing or out of its allowed range; the message names the key and the range."""


class FeedError(RetryableError):
    """The market-data feed (websocket or REST) failed: connection lost, timeout, server error."""


class RateLimited(FeedError):
    """Binance answered 429: too many requests. Wait `retry_after` seconds before the next request."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IpBanned(FatalError):
    """Binance answered 418: this IP is banned until `until_ms` (epoch ms). The client stops until then."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message)
        self.until_ms = until_ms


class BinanceRequestError(FatalError):
    """Binance rejected a request (4xx other than 429/418): a bad symbol or parameter."""

    def __init__(self, message: str, status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BookOutOfSync(RetryableError):
    """An order book was read while not synced or stale; it must be resynced before use."""


class StorageUnavailable(RetryableError):
    """PostgreSQL or Redis cannot be reached right now."""


class CaptureError(TapewatchError):
    """A capture file cannot be read (missing, not gzip, not JSON Lines)."""


class MigrationError(FatalError):
    """A database migration cannot be applied: a bad file in sql/, an applied migration edited afterwards,
    a failing statement, or another process holding the migration lock for too long."""
