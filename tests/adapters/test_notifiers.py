"""Webhook and Telegram notifiers against real HTTP servers on 127.0.0.1; workers isolated, at most once."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.notifiers import (
    Deliveries,
    Delivery,
    Notice,
    Notifications,
    NotifierWorker,
    TelegramNotifier,
    WebhookNotifier,
    notifiers_from_settings,
    sign,
    verify_signature,
)
from tapewatch.adapters.notifiers.webhook import webhook_body
from tapewatch.adapters.outbox import Outbox, OutboxRelay, OutboxRow
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import ConfigError
from tapewatch.outcome_models import OutcomeParams
from tapewatch.settings import load_settings
from tapewatch.signal import Signal, encode
from tests.adapters.http_sink import Answer, HttpSink, Request
from tests.adapters.signal_builders import entries, entry, exit_of

SECRET = "s3cret-key"
TOKEN = "123456:ABC-token"


class Sleeps:
    """An injected sleep that records the pauses and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _notice(signal: Signal) -> Notice:
    return Notice(signal, encode(signal))


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- signatures ------------------------------------------------------------------------------------------


def test_the_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"signal_id":"x"}'
    # reference value: printf '{"signal_id":"x"}' | openssl dgst -sha256 -hmac s3cret-key
    import hashlib
    import hmac

    assert sign(SECRET, body) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, body, sign(SECRET, body))
    assert not verify_signature(SECRET, body + b" ", sign(SECRET, body))
    assert not verify_signature("other", body, sign(SECRET, body))
    assert not verify_signature(SECRET, body, None)


# --- webhook ---------------------------------------------------------------------------------------------


def test_webhook_posts_the_signed_payload_and_retries_5xx_with_backoff() -> None:
    signal = entry()
    sleeps = Sleeps()
    answers = [Answer(500), Answer(503, b"busy"), Answer(200)]
    with HttpSink(answers) as server:

        async def send() -> list[Delivery]:
            hook = WebhookNotifier(server.url + "/hook", SECRET, backoff_base=0.5, sleep=sleeps)
            try:
                return await hook.submit(_notice(signal))
            finally:
                await hook.aclose()

        assert _run(send()) == [Delivery(signal.signal_id, "sent", 3, "HTTP 200")]
    assert sleeps.pauses == [0.5, 1.0]
    assert len(server.requests) == 3
    for request in server.requests:  # what the receiver checks: the signature of the raw body
        assert request.path == "/hook"
        assert verify_signature(SECRET, request.body, request.headers["x-tapewatch-signature"])
        assert request.headers["x-tapewatch-signal-id"] == signal.signal_id
        assert request.headers["content-type"] == "application/json"
        assert request.body == webhook_body(_notice(signal), OutcomeParams())
        # the published JSON, byte for byte, then the added fields (backward compatible: none renamed)
        assert request.body.startswith(encode(signal)[:-1] + b",")
        body = json.loads(request.body)
        assert body["trigger_by_ms"] == signal.event_time + 60_000 and body["response_window_s"] == 60


def test_webhook_retries_a_timeout_and_honours_retry_after_on_429() -> None:
    signal = entry()
    sleeps = Sleeps()
    answers = [Answer(200, delay=1.0), Answer(429, headers={"Retry-After": "7"}), Answer(204, b"")]
    with HttpSink(answers) as server:

        async def send() -> list[Delivery]:
            hook = WebhookNotifier(server.url, SECRET, timeout=0.2, backoff_base=0.5, sleep=sleeps)
            try:
                return await hook.submit(_notice(signal))
            finally:
                await hook.aclose()

        [delivery] = _run(send())  # type: ignore[misc]
    assert (delivery.status, delivery.attempts) == ("sent", 3)
    assert sleeps.pauses == [0.5, 7.0]


@pytest.mark.parametrize(
    ("answers", "attempts", "detail"),
    [
        ([Answer(400, b"bad request")], 1, "HTTP 400: bad request"),  # retrying cannot fix a 4xx
        ([Answer(301, b"", {"Location": "/elsewhere"})], 1, "HTTP 301:"),  # never followed
        ([Answer(502, b"bad gateway")], 4, "HTTP 502: bad gateway"),  # gives up after max_attempts
    ],
)
def test_webhook_gives_up_with_the_reason(answers: list[Answer], attempts: int, detail: str) -> None:
    signal = entry()
    with HttpSink(answers) as server:

        async def send() -> list[Delivery]:
            hook = WebhookNotifier(server.url, SECRET, max_attempts=4, sleep=Sleeps())
            try:
                return await hook.submit(_notice(signal))
            finally:
                await hook.aclose()

        [delivery] = _run(send())  # type: ignore[misc]
    assert (delivery.status, delivery.attempts, delivery.detail) == ("failed", attempts, detail)
    assert len(server.requests) == attempts


def test_webhook_to_a_closed_port_fails_after_its_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def send() -> list[Delivery]:
        hook = WebhookNotifier(f"http://127.0.0.1:{port}/", SECRET, max_attempts=3, sleep=Sleeps())
        try:
            return await hook.submit(_notice(entry()))
        finally:
            await hook.aclose()

    [delivery] = _run(send())  # type: ignore[misc]
    assert (delivery.status, delivery.attempts) == ("failed", 3) and "ConnectError" in delivery.detail


# --- Telegram --------------------------------------------------------------------------------------------


def _telegram(server: HttpSink, **kwargs: object) -> TelegramNotifier:
    return TelegramNotifier(TOKEN, "-100123", api_url=server.url, **kwargs)  # type: ignore[arg-type]


def test_telegram_sends_one_message_per_signal_and_honours_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signal, closing = entry(), exit_of(entry(), "TP1")
    sleeps = Sleeps()
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests",
        "parameters": {"retry_after": 3},
    }
    answers = [Answer.json(429, too_many), Answer(200)]
    with HttpSink(answers) as server:

        async def send() -> list[Delivery]:
            bot = _telegram(server, sleep=sleeps, clock=Clock(600.0))
            try:
                return [*await bot.submit(_notice(signal)), *await bot.submit(_notice(closing))]
            finally:
                await bot.aclose()

        with caplog.at_level(logging.INFO):
            deliveries = _run(send())
    assert deliveries == [
        Delivery(signal.signal_id, "sent", 2, "sent"),
        Delivery(closing.signal_id, "sent", 1, "sent"),
    ]
    assert sleeps.pauses == [3.0]  # exactly what Telegram asked for
    assert [r.path for r in server.requests] == [f"/bot{TOKEN}/sendMessage"] * 3
    first, _, second = (r.json() for r in server.requests)
    assert first["chat_id"] == "-100123"
    assert "LONG BTCUSDT · HIGH · quality" in first["text"] and signal.signal_id in first["text"]
    assert f"Entry {signal.entry_price:.10g}" in first["text"] and "Why: " in first["text"]
    assert second["text"].startswith(f"⚪ EXIT TP1 · LONG BTCUSDT at {signal.take_profit_1:.10g}")
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (
            Answer.json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
            "HTTP 401: Unauthorized",
        ),
        (
            Answer.json(
                429, {"ok": False, "description": "Too Many Requests", "parameters": {"retry_after": 9999}}
            ),
            "over the maximum",
        ),
    ],
)
def test_telegram_fails_at_once_on_a_bad_token_or_an_endless_retry_after(answer: Answer, detail: str) -> None:
    signal = entry()
    with HttpSink([answer]) as server:

        async def send() -> list[Delivery]:
            bot = _telegram(server, sleep=Sleeps(), retry_after_max=300)
            try:
                return await bot.submit(_notice(signal))
            finally:
                await bot.aclose()

        [delivery] = _run(send())  # type: ignore[misc]
    assert (delivery.status, delivery.attempts) == ("failed", 1) and detail in delivery.detail
    assert TOKEN not in delivery.detail and len(server.requests) == 1


def test_telegram_folds_a_burst_into_one_digest_per_minute() -> None:
    clock = Clock(60 * 1000 + 5.0)  # 5 s into a minute
    burst = entries(10, symbol="BTCUSDT") + [entry(f"C{i}USDT") for i in range(4)]
    sent_at: list[float] = []

    def record(request: Request) -> Answer:
        sent_at.append(clock.now)
        return Answer()

    with HttpSink(record) as server:

        async def send() -> list[list[Delivery]]:
            bot = _telegram(server, max_per_minute=3, clock=clock, sleep=Sleeps())
            results = [await bot.submit(_notice(s)) for s in burst[:10]]
            assert bot.due() == 60 * 1001  # the digest waits for the minute to end
            assert await bot.flush() == []
            clock.now = 60 * 1001 + 1.0
            results.append(await bot.flush())  # the digest of the 7 folded signals
            results += [await bot.submit(_notice(s)) for s in burst[10:]]  # 2 more messages fit, then fold
            clock.now = 60 * 1002
            results.append(await bot.flush())
            assert bot.due() is None and bot.digests == 2
            await bot.aclose()
            return results

        results: list[list[Delivery]] = _run(send())  # type: ignore[assignment]
    flat = [d for batch in results for d in batch]
    assert [d.status for d in flat[:10]] == ["sent"] * 3 + ["folded"] * 7
    digest = results[10]
    assert [d.signal_id for d in digest] == [s.signal_id for s in burst[3:10]]
    assert {(d.status, d.detail) for d in digest} == {("sent", "in a digest of 7")}
    texts = [r.json()["text"] for r in server.requests]
    assert len(texts) == 3 + 1 + 2 + 1
    assert texts[3].startswith("📋 7 more signals in the last minute (over the cap of 3 messages a minute):")
    assert texts[3].count("• LONG BTCUSDT HIGH") == 7
    assert "C2USDT" in texts[6] and "C3USDT" in texts[6] and texts[6].startswith("📋 2 more signals")
    per_minute: dict[int, int] = {}
    for t in sent_at:
        per_minute[int(t // 60)] = per_minute.get(int(t // 60), 0) + 1
    assert max(per_minute.values()) <= 3  # the chat never gets more than the cap, digests included


# --- workers: at most once, isolated ---------------------------------------------------------------------


def test_a_worker_delivers_each_signal_at_most_once_across_restarts(db: Database, engine: Engine) -> None:
    signal = entry()
    SignalStore(db).save_signal(signal)
    deliveries = Deliveries(db)
    with HttpSink() as server:

        async def deliver_twice() -> None:
            for _ in range(2):  # a second process, after a restart, gets the same notice
                hook = WebhookNotifier(server.url, SECRET, sleep=Sleeps())
                worker = NotifierWorker(hook, deliveries)
                await worker.handle(_notice(signal))
                await worker.handle(_notice(signal))
                await hook.aclose()

        _run(deliver_twice())
    assert len(server.requests) == 1
    assert deliveries.get(signal.signal_id, "webhook") == ("sent", 1, "HTTP 200")


def test_a_failing_notifier_does_not_block_or_break_the_other(db: Database, engine: Engine) -> None:
    signals = entries(4)
    SignalStore(db).save_signals(signals)
    rows = Outbox(db).unpublished()

    class Broken:
        """A notifier with a bug: it raises."""

        name = "broken"

        async def submit(self, notice: Notice) -> list[Delivery]:
            raise RuntimeError("bug")

        def due(self) -> float | None:
            return None

        async def flush(self, *, force: bool = False) -> list[Delivery]:
            return []

        async def aclose(self) -> None:
            pass

    with HttpSink([Answer(500)]) as failing, HttpSink() as telegram:

        async def service() -> tuple[bool, Notifications]:
            release = asyncio.Event()

            async def stuck_sleep(_: float) -> None:
                await release.wait()  # the webhook is stuck in its backoff until released

            deliveries = Deliveries(db)
            workers = [
                NotifierWorker(
                    WebhookNotifier(failing.url, SECRET, max_attempts=2, sleep=stuck_sleep), deliveries
                ),
                NotifierWorker(_telegram(telegram, sleep=Sleeps()), deliveries),
                NotifierWorker(Broken(), deliveries),
            ]
            notifications = Notifications(workers, deliveries)
            task = asyncio.create_task(notifications.run())
            try:
                notifications.offer(rows)  # never waits
                await asyncio.wait_for(asyncio.gather(workers[1].join(), workers[2].join()), 10)
                webhook_done_first = workers[0].unhandled == 0
                release.set()
                await asyncio.wait_for(notifications.join(), 10)
                return webhook_done_first, notifications
            finally:
                task.cancel()
                await notifications.aclose()

        webhook_done_first, notifications = _run(service())  # type: ignore[misc]
    assert not webhook_done_first  # Telegram and the broken one finished while the webhook was stuck
    assert len(telegram.requests) == 4 and len(failing.requests) == 4 * 2
    webhook_stats, telegram_stats, broken_stats = (w.stats for w in notifications.workers)
    assert (webhook_stats.sent, webhook_stats.failed) == (0, 4)
    assert telegram_stats.sent == 4 and broken_stats.errors == 4
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.text("SELECT notifier, array_agg(DISTINCT status) FROM notifications GROUP BY notifier")
            ).all()
        )
    assert statuses == {"webhook": ["failed"], "telegram": ["sent"], "broken": ["failed"]}


def test_a_cancel_that_arrives_with_a_notice_stops_the_worker(db: Database) -> None:
    """A worker holding a digest waits for a notice with a deadline. Cancelled in the same step as a notice
    arrives (the service stopping while its last signals are relayed), it ends and leaves the notice unsent.
    With ``asyncio.wait_for`` on Python 3.11 the wait returned the notice, swallowing the cancel, and the
    worker ran on forever."""

    class Holding:
        """A notifier that holds a digest due in 30 s, and records what it is asked to send."""

        name = "holding"

        def __init__(self) -> None:
            self.submitted: list[str] = []

        async def submit(self, notice: Notice) -> list[Delivery]:
            self.submitted.append(notice.signal_id)
            return [Delivery(notice.signal_id, "sent", 1, "ok")]

        def due(self) -> float | None:
            return clock.now + 30.0

        async def flush(self, *, force: bool = False) -> list[Delivery]:
            return []

        async def aclose(self) -> None:
            pass

    clock = Clock(1_000.0)
    notifier = Holding()
    signal = entry()

    async def scenario() -> tuple[bool, bool, int]:
        worker = NotifierWorker(notifier, Deliveries(db), clock=clock)
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.05)  # the worker is waiting for a notice, with the digest's deadline
            worker.offer(_notice(signal))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            return task in done, task.cancelled(), worker.unhandled
        finally:
            task.cancel()

    assert _run(scenario()) == (True, True, 1)
    assert notifier.submitted == []


def test_relay_to_notifiers_end_to_end_and_the_backlog_after_a_restart(
    db: Database, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    store = SignalStore(db)
    store.save_signals(entries(3))
    with HttpSink() as server:

        def notifications() -> Notifications:
            deliveries = Deliveries(db)
            hook = WebhookNotifier(server.url, SECRET, sleep=Sleeps())
            return Notifications([NotifierWorker(hook, deliveries)], deliveries, max_age_s=600)

        async def first_run() -> None:
            client: redis.asyncio.Redis = AsyncRedisState.from_url(redis_url).client
            relay = OutboxRelay(
                Outbox(db), client, keys=redis_keys
            )  # published, then "killed" before notifying
            await relay.publish_pending()
            store.save_signals(entries(2, symbol="ETHUSDT"))
            live = notifications()
            relay.on_published = live.offer
            task = asyncio.create_task(live.workers[0].run())
            await relay.publish_pending()
            await live.join()
            task.cancel()
            await live.aclose()
            await client.aclose()

        _run(first_run())
        assert len(server.requests) == 2  # only the rows published with notifiers attached
        with engine.begin() as conn:  # one published row is too old to be worth notifying after a restart
            conn.execute(
                sa.text(
                    "UPDATE outbox SET published_at = now() - interval '1 hour' WHERE seq = (SELECT min(seq) FROM outbox)"
                )
            )

        async def restart() -> int:
            again = notifications()
            task = asyncio.create_task(again.run())
            while again.workers[0].stats.offered == 0:  # noqa: ASYNC110 - the backlog is read on another task
                await asyncio.sleep(0.01)
            await again.join()
            task.cancel()
            await again.aclose()
            return again.workers[0].stats.offered

        assert _run(restart()) == 2
    ids = [json.loads(r.body)["signal_id"] for r in server.requests]
    assert len(ids) == len(set(ids)) == 4
    assert entries(3)[0].signal_id not in ids


def test_notifiers_from_settings_hide_their_secrets() -> None:
    assert notifiers_from_settings(load_settings()) == []
    settings = load_settings(
        webhook_url="https://example.org/hook",
        webhook_secret=SECRET,
        telegram_bot_token=TOKEN,
        telegram_chat_id="42",
        telegram_max_per_minute=7,
    )
    hook, bot = notifiers_from_settings(settings)
    assert isinstance(hook, WebhookNotifier) and isinstance(bot, TelegramNotifier)
    assert bot.max_per_minute == 7 and bot.chat_id == "42"
    assert SECRET not in repr(hook) and TOKEN not in repr(bot) and SECRET not in repr(settings)
    assert TOKEN not in str(settings)


def test_a_bad_outbox_payload_is_counted_and_skipped(db: Database) -> None:
    deliveries = Deliveries(db)

    async def offer() -> Notifications:
        worker = NotifierWorker(WebhookNotifier("http://127.0.0.1:9/", SECRET), deliveries)
        notifications = Notifications([worker], deliveries)
        notifications.offer([OutboxRow(1, "x", "{not json"), OutboxRow(2, "y", '{"signal_id": "y"}')])
        await notifications.aclose()
        return notifications

    notifications: Notifications = _run(offer())  # type: ignore[assignment]
    assert notifications.bad_payloads == 2 and notifications.workers[0].stats.offered == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webhook_url": "https://example.org/hook"}, "set webhook_secret too"),
        (
            {"webhook_url": "ftp://example.org/hook", "webhook_secret": SECRET},
            "expected a URL starting with http",
        ),
        ({"telegram_bot_token": TOKEN}, "set both telegram_bot_token and telegram_chat_id"),
        ({"telegram_chat_id": "42"}, "set both telegram_bot_token and telegram_chat_id"),
        ({"telegram_max_per_minute": 0}, "telegram_max_per_minute"),
    ],
)
def test_incomplete_notifier_settings_are_refused_with_the_key(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(**overrides)
    assert TOKEN not in str(caught.value)


class _RefusingDeliveries(Deliveries):
    """The backlog query fails with a real database error that is not a disconnect (as a missing grant does)."""

    def unnotified(self, notifier: str, max_age_s: float, limit: int = 1000) -> list[OutboxRow]:
        with self.db.begin() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table_for_the_backlog"))
        return []


def test_a_backlog_the_database_refuses_is_logged_and_dispatch_goes_on(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = _RefusingDeliveries(db)

    async def run() -> None:
        worker = NotifierWorker(WebhookNotifier("http://127.0.0.1:9/", SECRET), deliveries)
        notifications = Notifications([worker], deliveries)
        task = asyncio.create_task(notifications.run())
        await asyncio.sleep(0.5)
        assert not task.done()  # the workers run: the backlog failure did not end the notifications
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await notifications.aclose()

    with caplog.at_level(logging.WARNING):
        _run(run())
    assert any("could not read the notification backlog" in r.getMessage() for r in caplog.records)


# --- what a trader reads ---------------------------------------------------------------------------------


def test_prices_are_plain_decimals_a_trader_can_type() -> None:
    from tapewatch.adapters.notifiers.telegram import _num

    assert _num(0.000012345) == "0.000012345"  # not 1.2345e-05
    assert _num(60300.7) == "60300.7" and _num(99.09900000000001) == "99.099"  # float noise trimmed
    assert _num(2.0) == "2"


def test_an_exit_of_a_signal_that_never_triggered_says_so() -> None:
    from tapewatch.adapters.notifiers.telegram import format_signal
    from tapewatch.signal import NOT_TRIGGERED, make_exit_signal

    signal = entry()
    untriggered = make_exit_signal(
        signal, "EXPIRED", signal.entry_price * 0.99, signal.event_time + 60_000, triggered=False
    )
    assert NOT_TRIGGERED in untriggered.reasons
    assert "not triggered (the entry never filled: no position)" in format_signal(untriggered).splitlines()[0]
    filled = make_exit_signal(signal, "EXPIRED", signal.entry_price, signal.event_time + 60_000)
    assert NOT_TRIGGERED not in filled.reasons and "not triggered" not in format_signal(filled)


# --- late notifications: labelled DELAYED, counted and logged ------------------------------------------------

NOW = 1_900_000_000.0  # the wall clock at send; the signals' event times (2024, or a sim clock) play no part


def test_telegram_labels_a_late_message_and_not_a_prompt_one() -> None:
    held, prompt = entry(), entry("ETHUSDT")  # both with an event time of 2024: far from the wall clock
    with HttpSink() as server:

        async def send() -> list[Delivery]:
            bot = _telegram(server, late_after=60.0, clock=Clock(NOW), sleep=Sleeps())
            try:
                return [
                    *await bot.submit(Notice(held, encode(held), produced_at=NOW - 605.2)),
                    *await bot.submit(Notice(prompt, encode(prompt), produced_at=NOW - 2.0)),
                    *await bot.submit(_notice(entry("SOLUSDT"))),  # production time unknown: no label
                ]
            finally:
                await bot.aclose()

        sent: list[Delivery] = _run(send())  # type: ignore[assignment]
    late, on_time, unknown = sent
    assert late.status == "sent" and late.late_s == pytest.approx(605.2)
    assert on_time.late_s is None and unknown.late_s is None
    late_text, prompt_text, unknown_text = (r.json()["text"] for r in server.requests)
    first, second = late_text.splitlines()[:2]
    assert first == "⚠️ DELAYED 10m 5s: sent late after an outage; check the price before acting"
    assert second.startswith("🟢 LONG BTCUSDT")
    assert "DELAYED" not in prompt_text and prompt_text.startswith("🟢 LONG ETHUSDT")
    assert "DELAYED" not in unknown_text


def test_telegram_measures_the_delay_when_it_sends_after_waiting_for_retry_after() -> None:
    """A prompt message that Telegram makes wait past the threshold is labelled at the attempt that goes."""
    signal = entry()
    clock = Clock(NOW)

    def answer(request: Request) -> Answer:
        if len(server.requests) == 1:
            clock.now += 120.0  # the 429's wait
            return Answer.json(429, {"ok": False, "parameters": {"retry_after": 120}})
        return Answer()

    with HttpSink(answer) as server:

        async def send() -> list[Delivery]:
            bot = _telegram(server, late_after=60.0, clock=clock, sleep=Sleeps())
            try:
                return await bot.submit(Notice(signal, encode(signal), produced_at=NOW - 1.0))
            finally:
                await bot.aclose()

        sent: list[Delivery] = _run(send())  # type: ignore[assignment]
    [delivery] = sent
    first, second = (r.json()["text"] for r in server.requests)
    assert "DELAYED" not in first and second.startswith("⚠️ DELAYED 2m 1s: ")
    assert delivery.late_s == pytest.approx(121.0)


def test_a_digest_names_its_late_signals() -> None:
    clock = Clock(60 * 1000 + 5.0)
    late, prompt = entry("BTCUSDT"), entry("ETHUSDT")
    with HttpSink() as server:

        async def send() -> list[Delivery]:
            bot = _telegram(server, max_per_minute=1, late_after=60.0, clock=clock, sleep=Sleeps())
            try:
                await bot.submit(_notice(entry("SOLUSDT")))  # the minute's one message
                await bot.submit(Notice(late, encode(late), produced_at=clock.now - 300))  # folded
                await bot.submit(Notice(prompt, encode(prompt), produced_at=clock.now))  # folded
                clock.now = 60 * 1001
                return await bot.flush()
            finally:
                await bot.aclose()

        digest: list[Delivery] = _run(send())  # type: ignore[assignment]
    assert [(d.status, d.late_s) for d in digest] == [("sent", 355.0), ("sent", None)]
    lines = server.requests[-1].json()["text"].splitlines()
    assert lines[0].startswith("⚠️ DELAYED 5m 55s: ") and lines[1].startswith("📋 2 more signals")
    assert lines[2].startswith("• LONG BTCUSDT") and lines[2].endswith(" · DELAYED 5m 55s")
    assert lines[3].startswith("• LONG ETHUSDT") and "DELAYED" not in lines[3]


def test_webhook_marks_a_late_request_in_a_header_and_keeps_the_signed_body() -> None:
    held, prompt = entry(), entry("ETHUSDT")
    with HttpSink() as server:

        async def send() -> list[Delivery]:
            hook = WebhookNotifier(server.url, SECRET, late_after=60.0, clock=Clock(NOW), sleep=Sleeps())
            try:
                return [
                    *await hook.submit(Notice(held, encode(held), produced_at=NOW - 605.2)),
                    *await hook.submit(Notice(prompt, encode(prompt), produced_at=NOW - 2.0)),
                ]
            finally:
                await hook.aclose()

        sent: list[Delivery] = _run(send())  # type: ignore[assignment]
    late, on_time = sent
    assert late.late_s == pytest.approx(605.2) and on_time.late_s is None
    late_request, prompt_request = server.requests
    assert late_request.headers["x-tapewatch-delayed"] == "605"
    assert "x-tapewatch-delayed" not in prompt_request.headers
    assert late_request.body == webhook_body(Notice(held, encode(held)), OutcomeParams())
    assert verify_signature(SECRET, late_request.body, late_request.headers["x-tapewatch-signature"])


def test_a_worker_counts_and_logs_a_late_send_dated_by_the_outbox_after_a_restart(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A notice this process did not produce (published before a restart) is dated by its outbox row."""
    held, prompt = entry(), entry("ETHUSDT")
    SignalStore(db).save_signals([held, prompt])  # outbox rows stored now (PostgreSQL's clock)
    clock = Clock(time.time() + 600)  # notified ten minutes later
    with HttpSink() as server:

        async def deliver() -> NotifierWorker:
            bot = _telegram(server, late_after=60.0, clock=clock, sleep=Sleeps())
            worker = NotifierWorker(bot, Deliveries(db), clock=clock)
            await worker.handle(_notice(held))  # no production time: the outbox row's
            await worker.handle(Notice(prompt, encode(prompt), produced_at=clock.now - 1))
            await bot.aclose()
            return worker

        with caplog.at_level(logging.WARNING):
            worker: NotifierWorker = _run(deliver())  # type: ignore[assignment]
    assert worker.stats.sent == 2 and worker.stats.late == 1
    texts = [r.json()["text"] for r in server.requests]
    assert texts[0].startswith("⚠️ DELAYED 10m ") and "DELAYED" not in texts[1]
    (record,) = [r for r in caplog.records if "labelled DELAYED" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.symbol == "BTCUSDT" and record.signal_id == held.signal_id  # type: ignore[attr-defined]
    assert 595 < record.delay_s < 610  # type: ignore[attr-defined]
    assert f"signal {held.signal_id} (BTCUSDT) sent 10m " in record.getMessage()


def test_late_after_is_a_positive_setting_the_notifiers_follow() -> None:
    settings = load_settings(
        webhook_url="https://example.org/hook",
        webhook_secret=SECRET,
        telegram_bot_token=TOKEN,
        telegram_chat_id="42",
        notify_late_after=30,
    )
    assert [n.late_after for n in notifiers_from_settings(settings)] == [30, 30]  # type: ignore[attr-defined]
    assert load_settings().notify_late_after == 90
    with pytest.raises(ConfigError, match="notify_late_after"):
        load_settings(notify_late_after=0)


def test_the_delay_runs_from_the_hand_over_not_from_the_outbox_row(db: Database) -> None:
    """While PostgreSQL is down a signal is held in memory and its outbox row is written only when it
    returns: the delay is measured from when the service handed the signal over (``produced``)."""
    held = entry()
    handed_over = Clock(NOW - 300)
    SignalStore(db).save_signal(held)  # the row is written later than the hand-over (now, after the outage)
    rows = Outbox(db).unpublished()
    with HttpSink() as server:

        async def notify() -> None:
            deliveries = Deliveries(db)
            bot = _telegram(server, late_after=60.0, clock=Clock(NOW), sleep=Sleeps())
            notifications = Notifications([NotifierWorker(bot, deliveries)], deliveries, clock=handed_over)
            task = asyncio.create_task(notifications.run())
            try:
                notifications.produced([held])
                notifications.offer(rows)
                await asyncio.wait_for(notifications.join(), 10)
            finally:
                task.cancel()
                await notifications.aclose()

        _run(notify())
    (request,) = server.requests
    assert request.json()["text"].startswith("⚠️ DELAYED 5m 0s: ")
