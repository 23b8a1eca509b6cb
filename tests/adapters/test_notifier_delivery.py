"""Notifier delivery across restarts and failures, and what the messages tell a trader: real PostgreSQL and real
HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.notifiers import (
    Deliveries,
    Notice,
    Notifications,
    NotifierWorker,
    TelegramNotifier,
    WebhookNotifier,
)
from tapewatch.adapters.notifiers.base import Status
from tapewatch.adapters.notifiers.telegram import MAX_TEXT, digest_parts, format_signal
from tapewatch.adapters.outbox import Outbox, OutboxRow
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.adapters.status import _dispatch_problems
from tapewatch.outcome_models import OutcomeParams
from tapewatch.signal import Signal, encode_published, make_exit_signal
from tests.adapters.http_sink import Answer, HttpSink
from tests.adapters.signal_builders import entries, entry, exit_of

SECRET = "s3cret-key"
TOKEN = "123456:ABC-token"


class Sleeps:
    async def __call__(self, seconds: float) -> None:
        await asyncio.sleep(0)


def _publish(db: Database, signals: list[Signal]) -> list[OutboxRow]:
    """Store ``signals`` and mark their outbox rows published now; the rows, in seq order."""
    SignalStore(db).save_signals(signals)
    rows = Outbox(db).unpublished()
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET published_at = now(), stream_id = seq || '-1'"))
    return rows


def _statuses(engine: Engine, notifier: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT signal_id::text, status FROM notifications WHERE notifier = :n"), {"n": notifier}
        )
        return {str(r[0]): str(r[1]) for r in rows}


def _webhook(server: HttpSink) -> WebhookNotifier:
    return WebhookNotifier(server.url, SECRET, sleep=Sleeps())


# --- order after a restart -------------------------------------------------------------------------------


class _SlowBacklog(Deliveries):
    """Reads the backlog only once the test has offered a live row (what a relay publishing while the backlog
    is read does), so the race is the same every run."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reading = threading.Event()
        self.go_on = threading.Event()

    def unnotified(self, notifier: str, max_age_s: float, limit: int = 1000) -> list[OutboxRow]:
        self.reading.set()
        assert self.go_on.wait(10)
        return super().unnotified(notifier, max_age_s, limit)


def test_an_exit_published_while_the_backlog_is_read_waits_for_its_entry(db: Database) -> None:
    opening = entry()
    closing = exit_of(opening, "STOP")
    (entry_row,) = _publish(db, [opening])  # published by the run that stopped before notifying it
    SignalStore(db).save_signals([closing])
    (exit_row,) = Outbox(db).unpublished()  # published by the relay of the new run, live
    with HttpSink() as server:

        async def restart() -> None:
            deliveries = _SlowBacklog(db)
            notifications = Notifications([NotifierWorker(_webhook(server), deliveries)], deliveries)
            task = asyncio.create_task(notifications.run())
            try:
                await asyncio.to_thread(deliveries.reading.wait, 10)
                notifications.offer([exit_row])  # the relay's callback, while the backlog is read
                deliveries.go_on.set()
                await asyncio.wait_for(notifications.join(), 10)
            finally:
                deliveries.go_on.set()
                task.cancel()
                await notifications.aclose()

        asyncio.run(restart())
    assert entry_row.seq < exit_row.seq
    assert [json.loads(r.body)["signal_id"] for r in server.requests] == [
        opening.signal_id,
        closing.signal_id,
    ]


# --- digests at a stop and a restart ---------------------------------------------------------------------


def test_a_stop_sends_the_held_digest(db: Database, engine: Engine) -> None:
    signals = entries(3)
    rows = _publish(db, signals)
    with HttpSink() as server:

        async def run_and_stop() -> None:
            deliveries = Deliveries(db)
            bot = TelegramNotifier(TOKEN, "-1", api_url=server.url, max_per_minute=1, sleep=Sleeps())
            notifications = Notifications([NotifierWorker(bot, deliveries)], deliveries)
            task = asyncio.create_task(notifications.run())
            await asyncio.sleep(0.2)  # the backlog is read (and offered) first
            notifications.offer(rows)
            await asyncio.wait_for(notifications.join(), 10)
            assert sorted(_statuses(engine, "telegram").values()) == ["folded", "folded", "sent"]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await notifications.aclose(grace=5)

        asyncio.run(run_and_stop())
        texts = [r.json()["text"] for r in server.requests]
    assert len(texts) == 2 and texts[1].startswith("📋 2 more signals")
    assert _statuses(engine, "telegram") == {s.signal_id: "sent" for s in signals}


def test_a_restart_re_offers_what_a_stop_left_folded_and_a_failed_delivery_once(
    db: Database, engine: Engine
) -> None:
    folded, failed, sent = entries(3)
    _publish(db, [folded, failed, sent])
    with db.begin() as conn:  # a process killed while holding a digest; a Telegram outage it gave up on
        for signal, status in ((folded, "folded"), (failed, "failed"), (sent, "sent")):
            conn.execute(
                sa.text(
                    "INSERT INTO notifications (signal_id, notifier, status) VALUES (:s, 'webhook', :st)"
                ),
                {"s": signal.signal_id, "st": status},
            )
    with HttpSink([Answer(200), Answer(400, b"bad")]) as server:

        async def restart() -> int:
            deliveries = Deliveries(db)
            notifications = Notifications([NotifierWorker(_webhook(server), deliveries)], deliveries)
            task = asyncio.create_task(notifications.run())
            while notifications.workers[0].stats.offered < 2:  # noqa: ASYNC110 - the backlog task offers
                await asyncio.sleep(0.01)
            await asyncio.wait_for(notifications.join(), 10)
            task.cancel()
            await notifications.aclose()
            return notifications.workers[0].stats.retried

        assert asyncio.run(restart()) == 2
        ids = [json.loads(r.body)["signal_id"] for r in server.requests]
        assert ids == [folded.signal_id, failed.signal_id]  # in outbox order; never the sent one
        assert _statuses(engine, "webhook") == {
            folded.signal_id: "sent",
            failed.signal_id: "failed",
            sent.signal_id: "sent",
        }

        async def again() -> int:
            deliveries = Deliveries(db)
            notifications = Notifications([NotifierWorker(_webhook(server), deliveries)], deliveries)
            offered = await notifications.offer_backlog()
            await notifications.aclose()
            return offered

        assert asyncio.run(again()) == 0  # a failed delivery is re-offered once only
        assert len(server.requests) == 2


def test_a_start_says_how_many_published_signals_are_too_old_to_notify(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _publish(db, entries(3))
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET published_at = now() - interval '1 hour'"))

    async def start() -> int:
        deliveries = Deliveries(db)
        notifications = Notifications(
            [NotifierWorker(WebhookNotifier("http://127.0.0.1:9/", SECRET), deliveries)],
            deliveries,
            max_age_s=900,
        )
        offered = await notifications.offer_backlog()
        await notifications.aclose()
        return offered

    with caplog.at_level(logging.INFO):
        assert asyncio.run(start()) == 0
    (record,) = [r for r in caplog.records if "older than notify_max_age" in r.getMessage()]
    assert record.levelno == logging.WARNING and "webhook: 3 signals" in record.getMessage()


# --- failures: said once, with what to fix; reported by status -------------------------------------------


def test_a_bad_telegram_token_is_one_error_with_the_setting_then_counted(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    signals = entries(3)
    _publish(db, signals)
    refused = Answer.json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    with HttpSink(lambda request: refused) as server:

        async def deliver() -> NotifierWorker:
            deliveries = Deliveries(db)
            bot = TelegramNotifier(TOKEN, "-1", api_url=server.url, sleep=Sleeps())
            worker = NotifierWorker(bot, deliveries)
            for signal in signals:
                await worker.handle(Notice(signal, encode_published(signal)))
            await bot.aclose()
            return worker

        with caplog.at_level(logging.INFO):
            worker = asyncio.run(deliver())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "TAPEWATCH_TELEGRAM_BOT_TOKEN" in message and "BTCUSDT" in message and TOKEN not in message
    assert worker.stats.failed == worker.stats.failing == 3
    metrics = {f"notify_telegram_{k}": v for k, v in vars_of(worker).items()}
    (problem,) = _dispatch_problems("realtime", metrics)
    assert "telegram notifier failed its last 3 deliveries" in problem
    assert "TAPEWATCH_TELEGRAM_CHAT_ID" in problem


def vars_of(worker: NotifierWorker) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(worker.stats)


def test_status_reports_a_notifier_only_while_its_last_deliveries_fail() -> None:
    healthy = {"notify_webhook_sent": 40, "notify_webhook_failed": 2, "notify_webhook_failing": 0}
    assert _dispatch_problems("realtime", healthy) == []
    (problem,) = _dispatch_problems("realtime", {**healthy, "notify_webhook_failing": 1})
    assert "webhook notifier failed its last 1 delivery" in problem and "TAPEWATCH_WEBHOOK_URL" in problem


# --- what a trader reads ---------------------------------------------------------------------------------


def test_an_entry_says_by_when_it_must_trigger() -> None:
    signal = entry()  # HIGH: 60 s
    text = format_signal(signal, rules=OutcomeParams())
    deadline = signal.event_time + 60_000
    from tapewatch.signal import iso_timestamp

    assert f"Trigger by {iso_timestamp(deadline)} (HIGH window 1m 0s)" in text


def test_exits_say_what_they_close_and_the_stop_in_force() -> None:
    opening = entry()
    entry_price, stop = (format_signal(opening).split("Entry ")[1].split(" · Stop ")[0], None)
    tp1 = format_signal(exit_of(opening, "TP1"))
    assert "close 50% of the position; the other 50% runs to TP2" in tp1
    assert f"move the stop to the entry {entry_price}" in tp1 and f"Stop now {entry_price} (was " in tp1
    kept = format_signal(exit_of(opening, "TP1"), rules=OutcomeParams(move_stop_to_entry=False))
    assert "move the stop" not in kept and "(unchanged)" in kept

    break_even = make_exit_signal(opening, "STOP", opening.entry_price, opening.event_time + 600_000)
    text = format_signal(break_even, tp1_hit=True)
    first, levels = text.splitlines()[:2]
    assert "close the rest (50% of the position)" in first and "break-even" in first
    assert levels.startswith(f"Entry {entry_price} · Stop {entry_price} (moved at TP1; was ")
    assert format_signal(break_even) == text  # tp1_hit unknown: a stop filled above the original one moved
    loss = format_signal(exit_of(opening, "STOP"), tp1_hit=False)
    assert "close the whole position" in loss and "moved" not in loss
    del stop


def test_the_webhook_adds_the_exit_plan_to_the_published_json() -> None:
    opening = entry()
    notices = [
        Notice(s, encode_published(s), tp1_hit=hit)
        for s, hit in (
            (exit_of(opening, "TP1"), None),
            (make_exit_signal(opening, "STOP", opening.entry_price, opening.event_time + 600_000), True),
        )
    ]
    with HttpSink() as server:

        async def send() -> None:
            hook = _webhook(server)
            for notice in notices:
                await hook.submit(notice)
            await hook.aclose()

        asyncio.run(send())
        bodies = [json.loads(r.body) for r in server.requests]
    published = json.loads(encode_published(notices[0].signal))
    assert {k: bodies[0][k] for k in published} == published  # every published field kept, unrenamed
    assert bodies[0]["closed_share"] == 0.5 and bodies[0]["stop_in_force"] == opening.entry_price
    assert bodies[0]["stop_moved_to_entry"] is True
    assert bodies[1]["stop_in_force"] == opening.entry_price and bodies[1]["closed_share"] == 0.5
    assert bodies[1]["stop_loss"] == opening.stop_loss  # the original, as before


def test_a_digest_lists_every_signal_in_messages_under_the_limit() -> None:
    signals = entries(60, symbol="1000SHIBUSDT")
    parts = digest_parts(signals, 20)
    assert len(parts) > 1 and sum(n for _, n in parts) == 60
    assert all(len(text) <= MAX_TEXT and "more\n" not in text[-10:] for text, _ in parts)
    listed = "\n".join(text for text, _ in parts)
    assert listed.count("• LONG 1000SHIBUSDT") == 60 and "… and" not in listed


def test_digest_parts_beyond_the_minute_s_slots_wait_for_the_next_minute() -> None:
    clock = [600.0 * 60 + 1]
    signals = entries(60, symbol="1000SHIBUSDT")
    with HttpSink() as server:

        async def burst() -> tuple[list[Status], list[Status]]:
            bot = TelegramNotifier(
                TOKEN, "-1", api_url=server.url, max_per_minute=1, clock=lambda: clock[0], sleep=Sleeps()
            )
            statuses = [d.status for s in signals for d in await bot.submit(Notice(s, encode_published(s)))]
            clock[0] += 60  # next minute: one slot, so one part of the digest
            first = [d.status for d in await bot.flush()]
            assert bot.due() is not None  # the rest is held
            clock[0] += 60
            first += [d.status for d in await bot.flush()]
            await bot.aclose()
            return statuses, first

        statuses, flushed = asyncio.run(burst())
        assert len(server.requests) == 3
    assert statuses.count("folded") == 59
    assert flushed == ["sent"] * 59


def test_a_late_digest_still_lists_every_signal_in_each_message() -> None:
    """A digest sent long after its signals (DELAYED labels on every line, and a banner) still fits each
    message whole: the split leaves room for the labels the parts are rendered with when sent."""
    signals = entries(60, symbol="1000SHIBUSDT")
    clock = [600.0 * 60 + 1]
    with HttpSink() as server:

        async def late() -> list[Status]:
            bot = TelegramNotifier(
                TOKEN, "-1", api_url=server.url, max_per_minute=1, clock=lambda: clock[0], sleep=Sleeps()
            )
            produced = clock[0] - 99 * 3600  # produced 99 hours before: every line says DELAYED 99h ...
            for s in signals:
                await bot.submit(Notice(s, encode_published(s), produced_at=produced))
            clock[0] += 60
            sent = [d.status for d in await bot.flush(force=True)]
            await bot.aclose()
            return sent

        sent = asyncio.run(late())
        texts = [json.loads(r.body)["text"] for r in server.requests]
    assert sent == ["sent"] * 59
    assert all(len(text) <= MAX_TEXT for text in texts)
    assert "DELAYED 99h" in texts[-1] and not any(text.endswith("…") for text in texts)
    assert "\n".join(texts).count("• LONG 1000SHIBUSDT") == 59  # the first went alone, the rest folded
