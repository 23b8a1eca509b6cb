"""The webhook notifier: each published signal is POSTed as JSON to a URL, signed with HMAC-SHA256.

Request: ``POST <webhook_url>``, body = the signal's JSON exactly as published to the Redis stream (spec
8.2 field names), followed by a few added fields (never renaming one; see ``notifiers.plan``): an ENTRY's
``trigger_by`` (ISO UTC), ``trigger_by_ms`` and ``response_window_s`` (it must trigger by then, else it expires),
an EXIT's ``closed_share`` and ``open_share`` (of the original position), ``stop_in_force``,
``stop_moved_to_entry`` and ``tp1_hit`` (after TP1 the stop in force is the entry, not ``stop_loss``). Headers ``Content-Type: application/json``, ``X-Tapewatch-Signal-Id: <signal_id>`` (the
same on every retry: receivers de-duplicate on it) and ``X-Tapewatch-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw body under ``webhook_secret``. A receiver checks it with :func:`verify_signature`
(or the same three lines in its own language) before trusting the body.

Any 2xx is success. 5xx, 408, 429 (its ``Retry-After`` honoured), timeouts and connection errors are retried
with exponential backoff (``webhook_backoff_base`` doubling up to ``webhook_backoff_max``, which also caps a
``Retry-After``) until
``webhook_max_attempts``; other answers (4xx, redirects) fail at once: retrying cannot fix them.

A request sent over ``notify_late_after`` seconds after the signal was produced (an outage held it) carries
``X-Tapewatch-Delayed: <whole seconds>``; the body stays the same (and signed).

Answers retrying cannot fix (4xx but 408/429, redirects) fail with what to check (``Delivery.fix``: the URL
and the receiver), logged once at ERROR by the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import httpx
import msgspec

from tapewatch import __version__
from tapewatch.adapters.notifiers.base import Clock, Delivery, Notice, Sleep, late_by
from tapewatch.adapters.notifiers.plan import webhook_fields
from tapewatch.outcome_models import OutcomeParams
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Tapewatch-Signature"
SIGNAL_ID_HEADER = "X-Tapewatch-Signal-Id"
DELAYED_HEADER = "X-Tapewatch-Delayed"
_RETRYABLE = frozenset({408, 429})
FIX = "check TAPEWATCH_WEBHOOK_URL and that the receiver accepts the request (its answer is in the detail)"


def webhook_body(notice: Notice, rules: OutcomeParams) -> bytes:
    """The request body: the published JSON of ``notice`` (byte for byte) with the added fields at its end."""
    extra = msgspec.json.encode(webhook_fields(notice.signal, rules, notice.tp1_hit))
    payload = notice.payload.rstrip()
    if not payload.endswith(b"}") or payload == b"{}":
        return notice.payload
    return payload[:-1] + b"," + extra[1:]


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Tapewatch-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret`` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookNotifier:
    """POSTs each notice to one URL (see the module docstring)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        late_after: float = 90.0,
        rules: OutcomeParams | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret to sign its requests")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {max_attempts}")
        self.url = url
        self._secret = secret
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.late_after = late_after
        self.rules = rules or OutcomeParams()
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep
    ) -> WebhookNotifier:
        """The webhook of ``settings``; ValueError when ``webhook_url`` or ``webhook_secret`` is unset."""
        if not settings.webhook_url or settings.webhook_secret is None:
            raise ValueError("webhook_url and webhook_secret must both be set")
        return cls(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value(),
            timeout=settings.webhook_timeout,
            max_attempts=settings.webhook_max_attempts,
            backoff_base=settings.webhook_backoff_base,
            backoff_max=settings.webhook_backoff_max,
            late_after=settings.notify_late_after,
            rules=OutcomeParams.from_settings(settings),
            clock=clock,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"  # never the secret

    def backoff(self, attempt: int) -> float:
        """Pause after failed attempt ``attempt`` (1-based): base, 2·base, 4·base, ... at most backoff_max."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    async def submit(self, notice: Notice) -> list[Delivery]:
        body = webhook_body(notice, self.rules)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"tapewatch/{__version__}",
            SIGNAL_ID_HEADER: notice.signal_id,
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            pause = self.backoff(attempt)
            late = late_by(notice, self._clock(), self.late_after)
            if late is not None:
                headers[DELAYED_HEADER] = str(int(late))
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.TimeoutException:
                error = "timed out"
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return [Delivery(notice.signal_id, "sent", attempt, f"HTTP {status}", late)]
                error = f"HTTP {status}: {response.text[:200]}".strip()
                if status < 500 and status not in _RETRYABLE:
                    return [Delivery(notice.signal_id, "failed", attempt, error, fix=FIX)]
                pause = max(pause, min(self.backoff_max, _retry_after(response) or 0.0))
            log.info(
                "webhook attempt %d/%d for %s failed (%s)",
                attempt,
                self.max_attempts,
                notice.signal_id,
                error,
                extra={"notifier": self.name, "symbol": notice.signal.symbol},
            )
            if attempt < self.max_attempts:
                await self._sleep(pause)
        return [Delivery(notice.signal_id, "failed", self.max_attempts, error)]

    def due(self) -> float | None:
        return None

    async def flush(self, *, force: bool = False) -> list[Delivery]:
        return []

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if 0 <= value <= 3600 else None
