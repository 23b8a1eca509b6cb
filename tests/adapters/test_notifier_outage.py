"""A notifier whose PostgreSQL refuses its claim or its record (a real server, a grant missing) retries, or counts
and logs, and never crashes; a notifier that does crash is counted in the metrics and named in the log.

(A server that is down or read-only is StorageUnavailable, which the worker always held and retried; any other
database error used to escape the worker as a crash, losing the notice with no counter.)"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.notifiers import Deliveries, Delivery, Notice, Notifications, NotifierWorker
from tapewatch.adapters.outbox import Outbox, OutboxRelay
from tapewatch.adapters.pending_writes import PendingWrites
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.signal import Signal, encode
from tests.adapters.signal_builders import entry


class Role:
    """The notifier's own PostgreSQL role, whose grants the test takes away and gives back (as a deploy that
    forgets a grant, then its fix, does): a refused statement is a plain database error, not a disconnect.
    ``db`` connects as the role; ``admin`` is the superuser's engine on the same database."""

    def __init__(self, url: str, admin: Engine) -> None:
        self.name = f"twt_notifier_{uuid.uuid4().hex[:10]}"
        self.admin = admin
        self._run(
            f'CREATE ROLE "{self.name}" LOGIN',
            f'GRANT SELECT, INSERT, UPDATE ON signals, outbox, notifications TO "{self.name}"',
        )
        role_url = sa.make_url(url).set(username=self.name).render_as_string(hide_password=False)
        self.db = Database(role_url, application_name="tapewatch-notifier-test")

    def _run(self, *statements: str) -> None:
        with self.admin.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))

    def revoke(self, privilege: str) -> None:
        self._run(f'REVOKE {privilege} ON notifications FROM "{self.name}"')

    def grant(self, privilege: str) -> None:
        self._run(f'GRANT {privilege} ON notifications TO "{self.name}"')

    def drop(self) -> None:
        self.db.dispose()
        self._run(f'DROP OWNED BY "{self.name}"', f'DROP ROLE "{self.name}"')


@pytest.fixture
def role(migrated_database_url: str, engine: Engine) -> Iterator[Role]:
    notifier_role = Role(migrated_database_url, engine)
    yield notifier_role
    notifier_role.drop()


class Recording:
    """A notifier that sends at once and remembers what it sent; ``during_send`` runs while it sends."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.during_send: Callable[[], None] = lambda: None

    async def submit(self, notice: Notice) -> list[Delivery]:
        self.during_send()
        self.sent.append(notice.signal_id)
        return [Delivery(notice.signal_id, "sent", 1, "ok")]

    def due(self) -> float | None:
        return None

    async def flush(self, *, force: bool = False) -> list[Delivery]:
        return []

    async def aclose(self) -> None:
        pass


def _notice(signal: Signal) -> Notice:
    return Notice(signal, encode(signal), produced_at=None)


def _status(engine: Engine, signal: Signal, notifier: str) -> tuple[str, int] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, attempts FROM notifications WHERE signal_id = :s AND notifier = :n"),
            {"s": signal.signal_id, "n": notifier},
        ).first()
    return None if row is None else (str(row[0]), int(row[1]))


async def _deliver(notifications: Notifications, notice: Notice) -> None:
    """Run the notifications (supervised workers) until ``notice`` is handled by every worker."""
    task = asyncio.create_task(notifications.run())
    try:
        await asyncio.sleep(0)
        for worker in notifications.workers:
            worker.offer(notice)
        await asyncio.wait_for(notifications.join(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_claim_the_database_refuses_is_retried_and_the_notice_goes_once_it_accepts(
    role: Role, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to escape the worker as a crash: the notice was lost, nothing counted but ``offered``."""
    signal = entry()
    SignalStore(role.db).save_signal(signal)
    notifier = Recording()
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            role.grant("INSERT")  # the grant is fixed during the second pause
        await asyncio.sleep(0)

    worker = NotifierWorker(notifier, Deliveries(role.db), sleep=pause)
    notifications = Notifications([worker], worker.deliveries, restart_pause=0.05)
    role.revoke("INSERT")
    with caplog.at_level(logging.WARNING):
        asyncio.run(_deliver(notifications, _notice(signal)))
    assert notifier.sent == [signal.signal_id]
    assert pauses == [0.5, 1.0]  # a growing pause between the claims
    stats = worker.stats
    assert (stats.offered, stats.sent, stats.storage_errors, stats.crashes) == (1, 1, 2, 0)
    assert _status(engine, signal, "recording") == ("sent", 1)
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]


def test_a_claim_refused_every_time_gives_the_notice_up_counted_and_logged(
    role: Role, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    signal = entry()
    SignalStore(role.db).save_signal(signal)
    notifier = Recording()

    async def pause(_: float) -> None:
        await asyncio.sleep(0)

    worker = NotifierWorker(notifier, Deliveries(role.db), claim_attempts=3, sleep=pause)
    notifications = Notifications([worker], worker.deliveries, restart_pause=0.05)
    role.revoke("INSERT")
    with caplog.at_level(logging.WARNING):
        asyncio.run(_deliver(notifications, _notice(signal)))
    assert notifier.sent == []  # never sent without a claim: it could be sent twice
    assert (worker.stats.storage_errors, worker.stats.crashes) == (3, 0)
    assert _status(engine, signal, "recording") is None
    (given_up,) = [r for r in caplog.records if "not notified" in r.getMessage()]
    assert given_up.levelno == logging.ERROR and signal.signal_id in given_up.getMessage()
    assert "permission denied for table notifications" in given_up.getMessage()
    assert given_up.notifier == "recording"  # type: ignore[attr-defined]


def test_a_record_the_database_refuses_is_counted_and_the_claim_keeps_the_signal_from_a_second_send(
    role: Role, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The grant goes while the notifier sends: what became of the notice cannot be written. It used to crash
    the worker after the send, with no counter."""
    signal = entry()
    SignalStore(role.db).save_signal(signal)
    notifier = Recording()
    notifier.during_send = lambda: role.revoke("UPDATE")
    worker = NotifierWorker(notifier, Deliveries(role.db))
    notifications = Notifications([worker], worker.deliveries, restart_pause=0.05)
    with caplog.at_level(logging.WARNING):
        asyncio.run(_deliver(notifications, _notice(signal)))
    assert notifier.sent == [signal.signal_id]
    assert (worker.stats.sent, worker.stats.storage_errors, worker.stats.crashes) == (1, 1, 0)
    assert _status(engine, signal, "recording") == ("sending", 0)  # claimed; its final status unknown
    (unrecorded,) = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert signal.signal_id in unrecorded.getMessage() and "permission denied" in unrecorded.getMessage()

    notifier.during_send = lambda: None
    role.grant("UPDATE")
    again = NotifierWorker(notifier, Deliveries(role.db))  # after a restart, the same notice is offered again
    asyncio.run(_deliver(Notifications([again], again.deliveries), _notice(signal)))
    assert notifier.sent == [signal.signal_id]  # never sent twice
    assert again.stats.skipped == 1


def test_a_crashing_notifier_is_counted_in_the_metrics_named_in_the_log_and_restarted(
    db: Database, redis_url: str, redis_keys: Keyspace, caplog: pytest.LogCaptureFixture
) -> None:
    signal = entry()
    SignalStore(db).save_signal(signal)

    class Buggy(Recording):
        name = "buggy"

        def __init__(self) -> None:
            super().__init__()
            self.bugs = 1

        def due(self) -> float | None:
            if self.bugs:
                self.bugs -= 1
                raise RuntimeError("a bug in due()")
            return None

    notifier = Buggy()
    deliveries = Deliveries(db)
    worker = NotifierWorker(notifier, deliveries)
    notifications = Notifications([worker], deliveries, restart_pause=0.05)

    async def scenario() -> dict[str, int]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await _deliver(notifications, _notice(signal))
            store = SignalStore(db)
            relay = OutboxRelay(Outbox(db), client, keys=redis_keys)
            return Dispatch(store, PendingWrites(store), relay, notifications).metrics()
        finally:
            await client.aclose()

    with caplog.at_level(logging.ERROR):
        metrics = asyncio.run(scenario())
    assert notifier.sent == [signal.signal_id]  # delivered by the restarted worker
    assert metrics["notify_buggy_crashes"] == 1 and metrics["notify_buggy_sent"] == 1
    (crash,) = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert "notifier buggy crashed (1 times since start)" in crash.getMessage()
    assert crash.notifier == "buggy" and crash.exc_info is not None  # type: ignore[attr-defined]
