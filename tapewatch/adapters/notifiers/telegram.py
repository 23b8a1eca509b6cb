"""The Telegram notifier: one message per signal through the Bot API, folded into a digest during bursts.

``POST <telegram_api_url>/bot<token>/sendMessage`` with ``{"chat_id", "text"}`` (plain text, so nothing in a
reason can break Markdown). Telegram limits bots to about 20 messages a minute in a group, so at most
``telegram_max_per_minute`` messages are sent per clock minute; the signals beyond it are **folded** into
one digest, sent when the minute is over (it takes the first slot of the minute it is sent in), so a
burst never floods the chat: every minute carries at most the cap, digest included. A digest lists every
signal: when they do not fit one message (4096 characters) it is split into parts, each taking a slot; parts
beyond the minute's slots stay held for the next minute. At a stop the held digest is sent at once
(``flush(force=True)``, within the stop's grace); what a stop still leaves ``folded`` is re-offered at the
next start.

A 429 answer's ``parameters.retry_after`` (or ``Retry-After`` header) is honoured: wait that long, then
retry (up to ``telegram_retry_after_max`` s, beyond which the message fails). 5xx, timeouts and connection
errors are retried with exponential backoff; other errors (a bad token, a chat the bot cannot post to) fail
at once, with what to fix (``Delivery.fix``: the settings to check), which the worker logs once at ERROR.
Up to ``telegram_max_attempts`` requests per message. The token is never logged.

An ENTRY says by when it must trigger (its priority's response window); an EXIT says what it closes and the
stop then in force (TP1: half closed, the stop moved to the entry; a STOP after TP1: at the entry, break-even):
see ``notifiers.plan``.

A message sent over ``notify_late_after`` seconds after its signal was produced starts with a
``⚠️ DELAYED 10m 5s: …; check the price before acting`` line (measured at each attempt); in a digest, each late
signal's line ends with its delay and the digest starts with the longest (see ``notifiers.base``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

import httpx
import msgspec

from tapewatch.adapters.notifiers.base import (
    Clock,
    Delivery,
    Notice,
    Sleep,
    delayed_banner,
    format_delay,
    late_by,
)
from tapewatch.adapters.notifiers.plan import exit_plan, trigger_by_ms
from tapewatch.outcome_models import OutcomeParams
from tapewatch.settings import Settings
from tapewatch.signal import NOT_TRIGGERED, Signal, iso_timestamp

log = logging.getLogger(__name__)

#: Telegram's limit on a message's text.
MAX_TEXT = 4096
#: What to fix when Telegram refuses the bot or the chat (401, 403, 404, 400 "chat not found").
FIX_TOKEN = "check TAPEWATCH_TELEGRAM_BOT_TOKEN (the bot's token from @BotFather)"
FIX_CHAT = (
    "check TAPEWATCH_TELEGRAM_CHAT_ID and that the bot is a member of that chat allowed to post (an admin of a "
    "channel)"
)


class _Parameters(msgspec.Struct):
    retry_after: float | None = None


class _Answer(msgspec.Struct):
    ok: bool = False
    error_code: int | None = None
    description: str = ""
    parameters: _Parameters | None = None


class _RedactToken(logging.Filter):
    """Masks a bot token in httpx's request log lines (the Bot API puts the token in the URL path)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(self.token in str(a) for a in record.args):
            record.args = tuple(
                str(a).replace(self.token, "<token>") if self.token in str(a) else a for a in record.args
            )
        return True


def _redact_in_http_logs(token: str) -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactToken) and f.token == token for f in logger.filters):
            logger.addFilter(_RedactToken(token))


def _num(value: float) -> str:
    """A price as a trader types it: 10 significant digits, plain decimals (``0.000012345``, never
    ``1.2345e-05``)."""
    return format(Decimal(f"{value:.10g}"), "f")


def _share(share: float) -> str:
    return f"{share:.0%}"


def _exit_lines(signal: Signal, rules: OutcomeParams, tp1_hit: bool | None) -> list[str]:
    """An EXIT: what it closes and the stop then in force (never the original stop once it moved)."""
    price = _num(signal.exit_price) if signal.exit_price is not None else "?"
    plan = exit_plan(signal, rules, tp1_hit)
    entry, stop = _num(signal.entry_price), _num(signal.stop_loss)
    targets = f"TP1 {_num(signal.take_profit_1)} · TP2 {_num(signal.take_profit_2)}"
    if NOT_TRIGGERED in signal.reasons:
        what = "not triggered (the entry never filled: no position)"
        levels = f"Entry {entry} · Stop {stop} · {targets}"
    elif signal.exit_reason == "TP1":
        rest = f"the other {_share(plan.open_share)} runs to TP2 {_num(signal.take_profit_2)}"
        what = f"close {_share(plan.closed_share)} of the position; {rest}"
        if plan.stop_moved:
            what += f"; move the stop to the entry {entry}"
            levels = f"Entry {entry} · Stop now {entry} (was {stop}) · {targets}"
        else:
            levels = f"Entry {entry} · Stop {stop} (unchanged) · {targets}"
    elif plan.tp1_hit:
        what = f"close the rest ({_share(plan.closed_share)} of the position)"
        if signal.exit_reason == "STOP" and plan.stop_moved:
            what += f" at the stop moved to the entry {entry} after TP1: break-even on the rest"
        if plan.stop_moved:
            levels = f"Entry {entry} · Stop {entry} (moved at TP1; was {stop}) · {targets}"
        else:
            levels = f"Entry {entry} · Stop {stop} · {targets}"
    else:
        what = "close the whole position"
        levels = f"Entry {entry} · Stop {stop} · {targets}"
    return [
        f"⚪ EXIT {signal.exit_reason} · {signal.direction} {signal.symbol} at {price} · {what}",
        levels,
        f"{signal.timestamp} · {signal.signal_id} (entry {signal.parent_signal_id})",
    ]


def _trigger_line(signal: Signal, rules: OutcomeParams) -> str:
    window = rules.response_ms[signal.priority] / 1000
    return (
        f"Trigger by {iso_timestamp(trigger_by_ms(signal, rules))} ({signal.priority} window "
        f"{format_delay(window)}): not filled by then = no trade"
    )


def format_signal(
    signal: Signal,
    delayed_s: float | None = None,
    *,
    rules: OutcomeParams | None = None,
    tp1_hit: bool | None = None,
) -> str:
    """The message of one signal: direction, symbol, tier and quality; the trade plan and by when it must
    trigger; the reasons (an EXIT: what it closes and the stop in force, ``tp1_hit`` as ``notifiers.plan``).
    Sent ``delayed_s`` seconds after the signal was produced (over the threshold): a DELAYED line on top."""
    rules = rules or OutcomeParams()
    if signal.signal_type == "EXIT":
        lines = _exit_lines(signal, rules, tp1_hit)
    else:
        mark = "🟢" if signal.direction == "LONG" else "🔴"
        lines = [
            f"{mark} {signal.direction} {signal.symbol} · {signal.priority} · quality {signal.quality_score}",
            f"Entry {_num(signal.entry_price)} · Stop {_num(signal.stop_loss)} · TP1 "
            f"{_num(signal.take_profit_1)} · TP2 {_num(signal.take_profit_2)}",
            f"R:R {signal.risk_reward_ratio:.2f} · confidence {signal.confidence:.0%} · size "
            f"{signal.suggested_position_size:.2%} of capital · hold ~{signal.expected_hold_time}",
            _trigger_line(signal, rules),
            *(["Why: " + "; ".join(signal.reasons)] if signal.reasons else []),
            f"{signal.timestamp} · {signal.signal_id}",
        ]
    if delayed_s is not None:
        lines.insert(0, delayed_banner(delayed_s))
    return _clip("\n".join(lines))


def _one_line(
    signal: Signal,
    delayed_s: float | None = None,
    rules: OutcomeParams | None = None,
    tp1_hit: bool | None = None,
) -> str:
    rules = rules or OutcomeParams()
    late = "" if delayed_s is None else f" · DELAYED {format_delay(delayed_s)}"
    if signal.signal_type == "EXIT":
        price = _num(signal.exit_price) if signal.exit_price is not None else "?"
        plan = exit_plan(signal, rules, tp1_hit)
        if NOT_TRIGGERED in signal.reasons:
            what = "not triggered"
        elif signal.exit_reason == "TP1":
            what = f"close {_share(plan.closed_share)}" + (
                f", stop to entry {_num(signal.entry_price)}" if plan.stop_moved else ""
            )
        elif plan.tp1_hit:
            what = "close the rest" + (
                " (break-even stop)" if plan.stop_moved and signal.exit_reason == "STOP" else ""
            )
        else:
            what = "close all"
        return f"• EXIT {signal.exit_reason} {signal.direction} {signal.symbol} at {price} · {what}{late}"
    return (
        f"• {signal.direction} {signal.symbol} {signal.priority} q{signal.quality_score} · entry "
        f"{_num(signal.entry_price)} stop {_num(signal.stop_loss)} TP1 {_num(signal.take_profit_1)} "
        f"TP2 {_num(signal.take_profit_2)} · by {iso_timestamp(trigger_by_ms(signal, rules))[11:19]}Z{late}"
    )


#: The most a DELAYED label adds to a digest line (`` · DELAYED 999h 59m``): the room each line is sized with.
LATE_ROOM = len(f" · DELAYED {format_delay(999 * 3600 + 59 * 60)}")


def digest_parts(
    signals: Sequence[Signal],
    cap: int,
    delays: Sequence[float | None] | None = None,
    *,
    rules: OutcomeParams | None = None,
    tp1_hits: Sequence[bool | None] | None = None,
) -> list[tuple[str, int]]:
    """The messages of the signals folded in a minute, every signal on a line of its own, split so that each
    message fits Telegram's length limit: (text, how many signals it lists), in order. ``delays``: each
    signal's delay when sent late (None when not); a part with a late one has a DELAYED line on top with its
    longest delay, and each late line says its delay."""
    tp1 = tp1_hits or [None] * len(signals)
    plain = [_one_line(s, None, rules, tp1[i]) for i, s in enumerate(signals)]
    lines = [_one_line(s, delays[i], rules, tp1[i]) for i, s in enumerate(signals)] if delays else plain
    # Each line is sized with room for the longest DELAYED label: a part is rendered again at each attempt
    # to send it, with the delays then (a retry's wait can make any line late), and must still fit whole.
    groups: list[list[int]] = []
    size = 0
    for i, line in enumerate(plain):
        width = len(line) + LATE_ROOM + 1
        if not groups or size + width > MAX_TEXT - 300:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += width
    parts: list[tuple[str, int]] = []
    for n, group in enumerate(groups, start=1):
        late = [d for i in group if delays and (d := delays[i]) is not None]
        parts.append(
            (
                _digest_text(len(signals), cap, [lines[i] for i in group], late, _part_note(n, len(groups))),
                len(group),
            )
        )
    return parts


def _part_note(n: int, of: int) -> str:
    """Which part of a digest split in ``of`` messages this is ("" when it is not split)."""
    return f" (part {n}/{of})" if of > 1 else ""


def _digest_text(total: int, cap: int, lines: Sequence[str], late: Sequence[float], note: str = "") -> str:
    head = f"📋 {total} more signals in the last minute (over the cap of {cap} messages a minute){note}:"
    return _clip("\n".join([*([delayed_banner(max(late))] if late else []), head, *lines]))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class TelegramNotifier:
    """Posts notices to one Telegram chat (see the module docstring)."""

    name = "telegram"

    def __init__(
        self,
        token: str,
        chat_id: str,
        *,
        api_url: str = "https://api.telegram.org",
        max_per_minute: int = 20,
        max_attempts: int = 5,
        retry_after_max: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
        late_after: float = 90.0,
        rules: OutcomeParams | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not token or not chat_id:
            raise ValueError("Telegram needs a bot token and a chat id")
        if max_per_minute < 1 or max_attempts < 1:
            raise ValueError(
                f"max_per_minute and max_attempts must be >= 1; got {max_per_minute}, {max_attempts}"
            )
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        _redact_in_http_logs(token)
        self._api_url = api_url
        self.chat_id = chat_id
        self.max_per_minute = max_per_minute
        self.max_attempts = max_attempts
        self.retry_after_max = retry_after_max
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.late_after = late_after
        self.rules = rules or OutcomeParams()
        self.messages = 0  # messages Telegram accepted, digests included
        self.digests = 0
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._clock = clock
        self._sleep = sleep
        self._minute = -1
        self._sent_in_minute = 0
        self._folded: list[Notice] = []
        self._folded_minute = -1

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep
    ) -> TelegramNotifier:
        """The Telegram notifier of ``settings``; ValueError when the token or the chat id is unset."""
        if settings.telegram_bot_token is None or not settings.telegram_chat_id:
            raise ValueError("telegram_bot_token and telegram_chat_id must both be set")
        return cls(
            settings.telegram_bot_token.get_secret_value(),
            settings.telegram_chat_id,
            api_url=settings.telegram_api_url,
            max_per_minute=settings.telegram_max_per_minute,
            max_attempts=settings.telegram_max_attempts,
            retry_after_max=settings.telegram_retry_after_max,
            timeout=settings.telegram_timeout,
            late_after=settings.notify_late_after,
            rules=OutcomeParams.from_settings(settings),
            clock=clock,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"TelegramNotifier({self._api_url!r}, chat {self.chat_id!r})"  # never the token

    # --- the per-minute cap ------------------------------------------------------------------------------
    def _take_slot(self) -> bool:
        """Use one message of the current minute; False when the cap is reached."""
        minute = math.floor(self._clock() / 60)
        if minute != self._minute:
            self._minute, self._sent_in_minute = minute, 0
        if self._sent_in_minute >= self.max_per_minute:
            return False
        self._sent_in_minute += 1
        return True

    def due(self) -> float | None:
        """When the held digest may go: the start of the minute after the one its signals were folded in."""
        return None if not self._folded else (self._folded_minute + 1) * 60.0

    async def submit(self, notice: Notice) -> list[Delivery]:
        done = await self.flush()  # a digest of an earlier minute goes before anything newer
        if not self._take_slot():
            if not self._folded:
                self._folded_minute = self._minute
            self._folded.append(notice)
            return [
                *done,
                Delivery(notice.signal_id, "folded", 0, "over the per-minute cap: in the next digest"),
            ]
        ok, attempts, detail, at = await self._send(
            lambda now: format_signal(
                notice.signal, self._late(notice, now), rules=self.rules, tp1_hit=notice.tp1_hit
            )
        )
        late = self._late(notice, at) if ok else None
        fix = "" if ok else _fix(detail)
        return [*done, Delivery(notice.signal_id, "sent" if ok else "failed", attempts, detail, late, fix)]

    def _late(self, notice: Notice, now: float) -> float | None:
        return late_by(notice, now, self.late_after)

    async def flush(self, *, force: bool = False) -> list[Delivery]:
        """Send the held digest when due (all of it now when ``force``: at a stop). Its parts beyond the
        minute's free slots stay held for the next minute (never when forced)."""
        due = self.due()
        if due is None or (not force and self._clock() < due):
            return []
        folded, self._folded = self._folded, []
        signals = [n.signal for n in folded]
        hits = [n.tp1_hit for n in folded]
        parts = digest_parts(signals, self.max_per_minute, rules=self.rules, tp1_hits=hits)
        deliveries: list[Delivery] = []
        start = 0
        for index, (_, count) in enumerate(parts):
            # The first part counts in the minute it is sent in and takes that minute's first slot, since
            # submit flushes before sending anything in a new minute; later parts need a free slot.
            if not self._take_slot() and index > 0 and not force:
                self._folded = folded[start:]
                self._folded_minute = self._minute
                break
            held = folded[start : start + count]
            deliveries += await self._send_digest(held, len(folded), _part_note(index + 1, len(parts)))
            start += count
        return deliveries

    async def _send_digest(self, held: list[Notice], total: int, note: str) -> list[Delivery]:
        """Send one digest message listing ``held`` (of ``total`` folded; ``note``: which part)."""

        def render(now: float) -> str:
            delays = [self._late(n, now) for n in held]
            lines = [_one_line(n.signal, d, self.rules, n.tp1_hit) for n, d in zip(held, delays, strict=True)]
            late = [d for d in delays if d is not None]
            return _digest_text(total, self.max_per_minute, lines, late, note)

        ok, attempts, detail, at = await self._send(render)
        if ok:
            self.digests += 1
            detail = f"in a digest of {total}"
        fix = "" if ok else _fix(detail)
        return [
            Delivery(
                n.signal_id,
                "sent" if ok else "failed",
                attempts,
                detail,
                self._late(n, at) if ok else None,
                fix,
            )
            for n in held
        ]

    # --- the Bot API ------------------------------------------------------------------------------------
    async def _send(self, render: Callable[[float], str]) -> tuple[bool, int, str, float]:
        """POST one message, its text rendered at each attempt for the clock time then (a DELAYED label
        follows the retries' waits); (accepted, requests made, what happened, clock time of the last attempt)."""
        error = ""
        now = self._clock()
        for attempt in range(1, self.max_attempts + 1):
            pause = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            now = self._clock()
            body = {"chat_id": self.chat_id, "text": render(now), "disable_web_page_preview": True}
            try:
                response = await self._client.post(self._url, json=body)
            except httpx.TimeoutException:
                error = "timed out"
            except httpx.TransportError as exc:
                error = type(exc).__name__  # the message would contain the URL, and with it the token
            else:
                answer = _answer(response)
                if response.status_code == 200 and answer.ok:
                    self.messages += 1
                    return True, attempt, "sent", now
                error = f"HTTP {response.status_code}: {answer.description or response.text[:200]}".strip()
                if response.status_code == 429:
                    wait = _retry_after(response, answer)
                    if wait > self.retry_after_max:
                        return False, attempt, f"{error} (retry_after {wait:g} s is over the maximum)", now
                    pause = wait
                elif response.status_code < 500:
                    return False, attempt, error, now
            log.info(
                "Telegram attempt %d/%d failed (%s)",
                attempt,
                self.max_attempts,
                error,
                extra={"notifier": self.name},
            )
            if attempt < self.max_attempts:
                await self._sleep(pause)
        return False, self.max_attempts, error, now

    async def aclose(self) -> None:
        await self._client.aclose()


def _fix(detail: str) -> str:
    """What the operator must fix after a failure retrying cannot fix ("" when it may pass by itself)."""
    if detail.startswith(("HTTP 401", "HTTP 404")):
        return FIX_TOKEN
    lowered = detail.lower()
    if detail.startswith("HTTP 403") or (detail.startswith("HTTP 400") and "chat" in lowered):
        return FIX_CHAT
    return ""


def _answer(response: httpx.Response) -> _Answer:
    try:
        return msgspec.json.decode(response.content, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Answer()


def _retry_after(response: httpx.Response, answer: _Answer) -> float:
    """Seconds Telegram asks us to wait: ``parameters.retry_after``, else ``Retry-After``, else 1."""
    if answer.parameters is not None and answer.parameters.retry_after is not None:
        value = answer.parameters.retry_after
    else:
        try:
            value = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            value = 1.0
    return value if math.isfinite(value) and value >= 0 else 1.0
