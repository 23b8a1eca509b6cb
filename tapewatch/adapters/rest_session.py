"""The HTTP side of the Binance REST client: weight reservation, retries and the error mapping.

Every GET reserves its request weight in a :class:`~tapewatch.adapters.weight_budget.WeightBudget`
before it is sent, and the ``X-MBX-USED-WEIGHT-1M`` header of the answer corrects the budget. Failures
map onto the tapewatch error tree:

- ``429`` -> every caller pauses ``Retry-After`` seconds, then the call is retried (at most
  ``max_retries`` times, then :class:`~tapewatch.errors.RateLimited`);
- ``403`` -> Binance's web application firewall refused the request (a rate or security rule): treated as a
  429 without ``Retry-After`` (every caller pauses :data:`WAF_PAUSE` seconds, then the call is retried, then
  :class:`~tapewatch.errors.RateLimited`), counted in ``waf_blocked``;
- ``418`` -> the IP is banned: nothing is sent until the ban ends, callers get
  :class:`~tapewatch.errors.IpBanned`;
- ``5xx``, ``408`` (Binance's backend timed out), timeouts, connection errors -> retried with exponential
  backoff and full jitter, then :class:`~tapewatch.errors.FeedError`;
- other ``4xx`` (400 bad parameter or symbol, 404) -> :class:`~tapewatch.errors.BinanceRequestError` with
  Binance's ``code``/``msg``, no retry;
- a 2xx body that is not the expected JSON -> :class:`~tapewatch.errors.FeedError`, counted in ``malformed``
  (a list answer with a few bad rows keeps its good rows: the bad ones are counted in ``dropped_rows``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlencode

import httpx
import msgspec

from tapewatch import __version__
from tapewatch.adapters.weight_budget import Clock, Sleep, WeightBudget
from tapewatch.adapters.weight_log import Pool
from tapewatch.errors import BinanceRequestError, FeedError, IpBanned, RateLimited

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class BodyDecoder(Protocol[T_co]):
    """What :meth:`RestSession.decode` decodes with: a msgspec decoder, or a row-tolerant one
    (:class:`tapewatch.events.RowsDecoder`)."""

    def decode(self, buf: bytes) -> T_co: ...


USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: Pause after a 429 that carries no usable Retry-After: the rest of a weight window.
DEFAULT_RATE_LIMIT_PAUSE = 60.0
#: Pause after a 403 (a WAF rule violated) without Retry-After: as long as a 429's, Binance states no length.
WAF_PAUSE = DEFAULT_RATE_LIMIT_PAUSE
#: 4xx answers that are Binance's side, not the request's: retried like a 5xx (408: "a timeout has occurred
#: while waiting for a response from the backend server", USD-M General Info).
RETRIED_4XX = frozenset({408})
#: Ban assumed after a 418 that states no length (Binance's shortest ban is 2 minutes).
DEFAULT_BAN_SECONDS = 120.0
_BANNED_UNTIL = re.compile(rb"banned until (\d{10,16})")


@dataclass(frozen=True, slots=True)
class RestResponse:
    """One answered request: the exact path and query sent, status, raw body bytes, server weight count."""

    path_and_query: str
    status: int
    body: bytes
    used_weight: int | None

    @property
    def stream(self) -> str:
        """The capture stream name, e.g. ``rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000``."""
        return "rest:" + self.path_and_query


@dataclass(slots=True)
class RestStats:
    """Cumulative counters of one client. ``requests`` is keyed by (endpoint, HTTP status or error kind)."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    dropped_rows: Counter[str] = field(default_factory=Counter)  # bad rows left out of a kept answer
    rate_limited: int = 0
    waf_blocked: int = 0  # 403 answers (Binance's web application firewall)
    banned: int = 0
    backoff_seconds: float = 0.0
    callback_errors: int = 0


class _BinanceError(msgspec.Struct, frozen=True):
    code: int | None = None
    msg: str = ""


_DEC_ERROR = msgspec.json.Decoder(_BinanceError)


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        log.warning("ignoring unparsable %s header %r", name, value)
        return None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds of the ``Retry-After`` header (Binance sends whole seconds); None when absent or bad."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 1e7 else None


def _binance_error(body: bytes) -> tuple[int | None, str]:
    """Binance's ``{"code": -1121, "msg": "Invalid symbol."}``; the start of the body when it is not that."""
    try:
        err = _DEC_ERROR.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, body[:200].decode("utf-8", "replace").strip()
    return err.code, err.msg


class RestSession:
    """GETs against one REST base URL, paced by a (shared) weight budget. Use as ``async with``.

    ``on_response`` is called with every 2xx response whose body decoded, e.g. to capture it; an
    exception in it is logged and counted, never raised into the call.
    """

    def __init__(
        self,
        base_url: str,
        budget: WeightBudget,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
        rng: random.Random | None = None,
        on_response: Callable[[RestResponse], None] | None = None,
        max_connections: int = 50,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0; got {max_retries}")
        self.budget = budget
        self.stats = RestStats()
        self.on_response = on_response
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        # trust_env=False: no module reads the environment on its own (and no proxy for 127.0.0.1 in tests).
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": f"tapewatch/{__version__}", "Accept": "application/json"},
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def metrics(self) -> dict[str, Any]:
        """Counters of this client and its budget, JSON-friendly (``"endpoint status": count``)."""
        s = self.stats
        return {
            "requests": {f"{ep} {status}": n for (ep, status), n in sorted(s.requests.items())},
            "retries": dict(s.retries),
            "malformed": dict(s.malformed),
            "dropped_rows": dict(s.dropped_rows),
            "rate_limited": s.rate_limited,
            "waf_blocked": s.waf_blocked,
            "banned": s.banned,
            "backoff_seconds": s.backoff_seconds,
            "callback_errors": s.callback_errors,
            "budget": self.budget.snapshot(),
        }

    async def get(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str | int | None],
        weight: int,
        *,
        pool: Pool = "general",
    ) -> RestResponse:
        """GET ``path`` with ``params`` (None values left out, order kept) once the budget allows.

        ``endpoint`` labels the counters. Returns the 2xx response; retries and raises as the module
        docstring says.
        """
        query = urlencode([(k, v) for k, v in params.items() if v is not None])
        path_and_query = f"{path}?{query}" if query else path
        extra = {"endpoint": endpoint, "symbol": params.get("symbol"), "stream": "rest:" + path_and_query}
        attempt = 0
        while True:
            reservation = await self.budget.acquire(weight, pool=pool)
            response: httpx.Response | None = None
            failure: httpx.RequestError | None = None
            try:
                response = await self._http.get(path_and_query)
            except httpx.RequestError as exc:
                failure = exc
            finally:  # also on cancellation: the weight stays counted, the reservation is closed
                used = None if response is None else _header_int(response.headers, USED_WEIGHT_HEADER)
                self.budget.settle(reservation, used)

            if response is None:
                kind = "timeout" if isinstance(failure, httpx.TimeoutException) else "connection_error"
                self.stats.requests[(endpoint, kind)] += 1
                if attempt >= self._max_retries:
                    raise FeedError(
                        f"GET {path_and_query}: {kind} on all {attempt + 1} attempts: {failure!r}"
                    ) from failure
                await self._backoff(endpoint, attempt, f"{kind} ({failure!r})", extra)
                attempt += 1
                continue

            status = response.status_code
            self.stats.requests[(endpoint, str(status))] += 1
            body = response.content
            if 200 <= status < 300:
                return RestResponse(path_and_query, status, body, used)
            if status == 429 or status == 403:
                pause = self._pause_all(path_and_query, response, extra)
                if attempt >= self._max_retries:
                    raise RateLimited(f"GET {path_and_query}: {status} on all {attempt + 1} attempts", pause)
                self.stats.retries[endpoint] += 1
                attempt += 1
                continue
            if status == 418:
                raise self._banned(path_and_query, response, extra)
            code, msg = _binance_error(body)
            if status >= 500 or status in RETRIED_4XX:
                if attempt >= self._max_retries:
                    raise FeedError(
                        f"GET {path_and_query}: HTTP {status} on all {attempt + 1} attempts: {msg}"
                    )
                await self._backoff(endpoint, attempt, f"HTTP {status} {msg}", extra)
                attempt += 1
                continue
            if 400 <= status < 500:
                raise BinanceRequestError(
                    f"GET {path_and_query}: HTTP {status}, code {code}: {msg}", status, code
                )
            raise FeedError(f"GET {path_and_query}: unexpected HTTP {status}: {msg}")

    def decode(self, endpoint: str, resp: RestResponse, dec: BodyDecoder[T]) -> T:
        """Decode a 2xx body, or raise FeedError (counted in ``malformed``); then call ``on_response``."""
        try:
            value = dec.decode(resp.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.malformed[endpoint] += 1
            # ValidationError subclasses DecodeError: valid JSON of the wrong shape or with a bad value
            what = "unexpected body" if isinstance(exc, msgspec.ValidationError) else "malformed JSON body"
            raise FeedError(f"GET {resp.path_and_query}: {what} ({exc}); starts {resp.body[:80]!r}") from exc
        if self.on_response is not None:
            try:
                self.on_response(resp)
            except Exception:
                # A broken capture must not fail the call that produced good data.
                self.stats.callback_errors += 1
                log.exception("on_response failed for %s", resp.stream, extra={"stream": resp.stream})
        return value

    def _pause_all(self, path_and_query: str, response: httpx.Response, extra: dict[str, Any]) -> float:
        """Pause every caller after a 429 (a rate limit: ``Retry-After`` seconds) or a 403 (the WAF refused the
        request: :data:`WAF_PAUSE` seconds unless ``Retry-After`` says otherwise)."""
        pause = _retry_after(response.headers)
        if response.status_code == 429:
            self.stats.rate_limited += 1
            pause = DEFAULT_RATE_LIMIT_PAUSE if pause is None else pause
            log.warning("GET %s: 429, every caller pauses %.0f s", path_and_query, pause, extra=extra)
        else:
            self.stats.waf_blocked += 1
            pause = WAF_PAUSE if pause is None else pause
            _, msg = _binance_error(response.content)
            log.warning(
                "GET %s: 403, Binance's firewall (WAF) refused the request (%s); every caller pauses %.0f s. "
                "Lower the request rate (rest_weight_limit); if 403s persist the IP or its region is blocked: "
                "move the service to another host",
                path_and_query, msg[:120] or "no detail", pause, extra=extra,
            )  # fmt: skip
        self.budget.pause(pause)
        return pause

    def _banned(self, path_and_query: str, response: httpx.Response, extra: dict[str, Any]) -> IpBanned:
        """Start the ban a 418 announces and return the error to raise."""
        code, msg = _binance_error(response.content)
        match = _BANNED_UNTIL.search(response.content)
        until_ms = int(match.group(1)) if match else None
        seconds = _retry_after(response.headers)
        if seconds is None:
            now_ms = self._wall_clock() * 1000
            seconds = (until_ms - now_ms) / 1000 if until_ms and until_ms > now_ms else DEFAULT_BAN_SECONDS
        self.stats.banned += 1
        self.budget.ban(seconds, until_ms)
        log.error("GET %s: 418, IP banned for %.0f s: %s", path_and_query, seconds, msg, extra=extra)
        return IpBanned(
            f"GET {path_and_query}: Binance banned this IP (418, code {code}: {msg}); "
            f"no REST request is sent for {seconds:.0f} s",
            self.budget.banned_until_ms,
        )

    async def _backoff(self, endpoint: str, attempt: int, reason: str, extra: dict[str, Any]) -> None:
        # Full jitter: spreads out the retries of many callers that failed together.
        ceiling = min(self._backoff_max, self._backoff_base * 2**attempt)
        delay = self._rng.uniform(0, ceiling)
        self.stats.retries[endpoint] += 1
        self.stats.backoff_seconds += delay
        log.warning(
            "%s failed: %s; retry %d/%d in %.2f s", endpoint, reason, attempt + 1, self._max_retries, delay,
            extra=extra,
        )  # fmt: skip
        await self._sleep(delay)
