"""The outbox relay: publishes stored signals to the Redis signal stream exactly once, in order.

:meth:`SignalStore.save_signal <tapewatch.adapters.signal_store.SignalStore.save_signal>` writes each signal
with an ``outbox`` row in one transaction. The relay reads the unpublished rows in ``seq`` order, ``XADD`` s
each to ``Keyspace.signals_stream`` with the explicit stream id ``<seq>-1`` and the fields ``signal_id``,
``signal_type``, ``symbol``, ``seq`` and ``payload`` (the signal's JSON), then marks the row published.

Exactly once, whatever dies when:

- killed between the ``XADD`` and the ``UPDATE`` (or the ``XADD`` reply lost): the next relay's ``XADD`` of
  the same id fails with "equal or smaller than the target stream top item"; the relay reads the entry at
  that id, finds the same ``signal_id`` and only marks the row. A *different* signal at that id means the
  stream belongs to another database (PostgreSQL was reset, Redis was not): the row is not marked, the
  relay stops and says so (``conflicts``), rather than lose signals silently;
- Redis down: rows stay unpublished (``redis_errors``, one log line per outage) and are published in order
  when it returns, retried with a growing pause up to ``retry_max`` seconds, at most :data:`RETRY_CAP` (2 s:
  held signals reach the stream within seconds of the return; a probe of a server that is down costs little);
- PostgreSQL down, or answering with an error (a read-only server after a failover, a missing grant): nothing
  can be read or marked; the same retry (``storage_errors``). No database error ends the relay.

Rows are published strictly in ``seq`` order and a pass stops at the first failure, since a later id once in
the stream would make an earlier one impossible to add. Writers commit outbox rows in ``seq`` order (an
advisory lock in the store), so a row never appears behind one already published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
import redis.asyncio
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from tapewatch.adapters.cancels import cancel_requests, honouring_cancel
from tapewatch.adapters.db import Database
from tapewatch.adapters.db_errors import as_outage
from tapewatch.adapters.redis_keys import KEYS, Keyspace
from tapewatch.errors import FatalError, StorageUnavailable
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
#: The longest pause (s) between two passes while Redis or PostgreSQL fails: the signals waiting are published
#: at most this long after it is back (``outbox_retry_max`` may only shorten it).
RETRY_CAP = 2.0
#: Redis's answer to an XADD whose id is not above the stream's last id.
_NOT_ABOVE_TOP = "equal or smaller"


def stream_id_for(seq: int) -> str:
    """The Redis stream id of outbox row ``seq``: ``<seq>-1``."""
    if seq < 1:
        raise ValueError(f"outbox seq starts at 1; got {seq}")
    return f"{seq}-1"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row: its order, the signal id and the exact JSON to publish."""

    seq: int
    signal_id: str
    payload: str
    attempts: int = 0

    @property
    def stream_id(self) -> str:
        return stream_id_for(self.seq)


class Outbox:
    """The ``outbox`` table (synchronous; the relay calls it through ``asyncio.to_thread``). Every method
    raises StorageUnavailable when PostgreSQL cannot be reached."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def unpublished(self, limit: int = 100) -> list[OutboxRow]:
        """The oldest ``limit`` unpublished rows, in ``seq`` order."""
        query = sa.text(
            "SELECT seq, signal_id::text, payload, attempts FROM outbox "
            "WHERE published_at IS NULL ORDER BY seq LIMIT :limit"
        )
        with self.db.begin() as conn:
            return [OutboxRow(*row) for row in conn.execute(query, {"limit": limit})]

    def pending(self) -> int:
        """How many rows wait to be published."""
        with self.db.begin() as conn:
            return int(
                conn.execute(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()
            )

    def mark_published(self, seq: int, stream_id: str) -> bool:
        """Record that row ``seq`` is in the stream under ``stream_id``; False when it was marked already."""
        query = sa.text(
            "UPDATE outbox SET published_at = now(), stream_id = :sid, attempts = attempts + 1, last_error = NULL "
            "WHERE seq = :seq AND published_at IS NULL"
        )
        with self.db.begin() as conn:
            return conn.execute(query, {"seq": seq, "sid": stream_id}).rowcount == 1

    def record_error(self, seq: int, error: str) -> None:
        """Count a failed attempt at publishing row ``seq`` and keep its reason."""
        query = sa.text("UPDATE outbox SET attempts = attempts + 1, last_error = :e WHERE seq = :seq")
        with self.db.begin() as conn:
            conn.execute(query, {"seq": seq, "e": error[:1000]})


@dataclass(slots=True)
class RelayStats:
    """Counters since start. ``already_published``: rows found in the stream by a re-XADD (the previous
    relay died between XADD and UPDATE); ``conflicts``: a different signal under the row's stream id;
    ``storage_errors``: passes failed on PostgreSQL (unreachable, or any database error)."""

    passes: int = 0
    published: int = 0
    already_published: int = 0
    redis_errors: int = 0
    storage_errors: int = 0
    refused: int = 0
    conflicts: int = 0
    outages: int = 0


class PublishRefused(FatalError):
    """Redis answers but refuses the XADD (the key holds another type, a read-only replica, ...)."""


class StreamConflict(PublishRefused):
    """The stream holds another signal under an outbox row's stream id (see the module docstring)."""


class _RedisDown(Exception):
    """Internal: the StorageUnavailable came from Redis, not from PostgreSQL."""


class OutboxRelay:
    """Moves outbox rows to the Redis signal stream; call :meth:`wake` after saving signals."""

    def __init__(
        self,
        outbox: Outbox,
        client: redis.asyncio.Redis,
        *,
        keys: Keyspace = KEYS,
        on_published: Callable[[Sequence[OutboxRow]], None] | None = None,
        batch: int = 100,
        poll_interval: float = 1.0,
        retry_base: float = 0.5,
        retry_max: float = RETRY_CAP,
        maxlen: int | None = 100_000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1; got {batch}")
        self.outbox = outbox
        self.client = client
        self.stream = keys.signals_stream
        self.on_published = on_published
        self.batch = batch
        self.poll_interval = poll_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.maxlen = maxlen
        self.stats = RelayStats()
        self.last_error: str | None = None
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._failures = 0  # consecutive failed passes; 0 = healthy
        self._outage_published = 0

    @classmethod
    def from_settings(
        cls,
        outbox: Outbox,
        client: redis.asyncio.Redis,
        settings: Settings,
        *,
        keys: Keyspace = KEYS,
        on_published: Callable[[Sequence[OutboxRow]], None] | None = None,
    ) -> OutboxRelay:
        return cls(
            outbox,
            client,
            keys=keys,
            on_published=on_published,
            batch=settings.outbox_batch,
            poll_interval=settings.outbox_poll_interval,
            retry_max=min(settings.outbox_retry_max, RETRY_CAP),
            maxlen=settings.signals_stream_maxlen,
        )

    @property
    def healthy(self) -> bool:
        """False from a failed pass until the next successful one."""
        return self._failures == 0

    def wake(self, *_: object) -> None:
        """Publish now rather than at the next poll (accepts and ignores arguments, to serve as a callback)."""
        self._wake.set()

    async def xadd(self, row: OutboxRow) -> bool:
        """Put ``row`` in the stream under its id; True when added now, False when it was there already.
        Raises StorageUnavailable when Redis cannot be reached, PublishRefused (StreamConflict: see the module
        docstring) when it refuses."""
        fields = {
            "signal_id": row.signal_id,
            "seq": str(row.seq),
            "payload": row.payload,
            **_summary(row.payload),
        }
        try:
            kwargs: dict[str, Any] = {"id": row.stream_id}
            if self.maxlen is not None:
                kwargs.update(maxlen=self.maxlen, approximate=True)
            await honouring_cancel(self.client.xadd(self.stream, fields, **kwargs))  # type: ignore[arg-type]
            return True
        except redis.ResponseError as exc:
            if _NOT_ABOVE_TOP not in str(exc):
                raise PublishRefused(f"Redis refused XADD to {self.stream}: {exc}") from exc
        except redis.RedisError as exc:
            raise StorageUnavailable(f"Redis is unavailable ({type(exc).__name__}: {exc})") from exc
        return await self._check_present(row)

    async def _check_present(self, row: OutboxRow) -> bool:
        try:
            entries = await honouring_cancel(
                self.client.xrange(self.stream, min=row.stream_id, max=row.stream_id, count=1)
            )
        except redis.RedisError as exc:
            raise StorageUnavailable(f"Redis is unavailable ({type(exc).__name__}: {exc})") from exc
        fields = (entries[0][1] or {}) if entries else {}
        found = _text(fields.get("signal_id", fields.get(b"signal_id")))
        if found == row.signal_id:
            return False
        what = f"signal {found}" if entries else "no entry (trimmed or deleted)"
        raise StreamConflict(
            f"{self.stream} already has ids up to or past {row.stream_id}, and at {row.stream_id} {what} instead "
            f"of signal {row.signal_id}: the stream was written from another database. Publishing is stopped; "
            f"delete the stream (DEL {self.stream}) or use another redis_prefix, then restart"
        )

    async def publish_pending(self) -> int:
        """Publish every unpublished row, in order, until none is left or a step fails (the failure is
        counted, logged and kept as ``last_error``; the rest waits for the next pass). Returns the number of
        rows published in this pass."""
        self.stats.passes += 1
        done = 0
        try:
            while True:
                rows = await asyncio.to_thread(self.outbox.unpublished, self.batch)
                if not rows:
                    break
                published: list[OutboxRow] = []
                try:
                    for row in rows:
                        await self._publish(row)
                        published.append(row)
                finally:
                    done += len(published)
                    self._notify(published)
        except _RedisDown as exc:
            await self._failed(exc.args[0], "redis")
            return done
        except StorageUnavailable as exc:
            await self._failed(exc, "postgresql")
            return done
        except sa_exc.SQLAlchemyError as exc:
            # reachable but failing (read-only after a failover, a missing grant, a lock timeout): a failed
            # pass like any other; an exception here would end the relay and leave the signals unpublished.
            # Unlike the storage buffer the relay has no row to skip: every database error is an outage here.
            await self._failed(as_outage(exc), "postgresql")
            return done
        except PublishRefused as exc:
            await self._failed(exc, "refused")
            return done
        self._recovered()
        return done

    async def _publish(self, row: OutboxRow) -> None:
        try:
            added = await self.xadd(row)
        except StorageUnavailable as exc:
            await self._record_error(row, exc)
            raise _RedisDown(exc) from exc
        except PublishRefused as exc:
            await self._record_error(row, exc)
            raise
        await asyncio.to_thread(self.outbox.mark_published, row.seq, row.stream_id)
        if added:
            self.stats.published += 1
        else:
            self.stats.already_published += 1
            log.info(
                "signal %s was in the stream already (a relay stopped after XADD): marked published",
                row.signal_id,
                extra={"signal_id": row.signal_id, "seq": row.seq},
            )

    async def _record_error(self, row: OutboxRow, exc: Exception) -> None:
        # PostgreSQL may be down or failing too; the relay's own log says what happened
        with contextlib.suppress(StorageUnavailable, sa_exc.SQLAlchemyError):
            await asyncio.to_thread(self.outbox.record_error, row.seq, str(exc))

    def _notify(self, rows: list[OutboxRow]) -> None:
        if rows and self.on_published is not None:
            try:
                self.on_published(rows)
            except Exception:
                log.exception("the on_published callback failed (the signals are published)")

    async def _failed(self, exc: Exception, kind: str) -> None:
        self.last_error = str(exc)
        if kind == "refused":
            self.stats.conflicts += isinstance(exc, StreamConflict)
            self.stats.refused += 1
            log.error("%s", exc)
        elif kind == "postgresql":
            self.stats.storage_errors += 1
        else:
            self.stats.redis_errors += 1
        if self._failures == 0:
            self.stats.outages += 1
            self._outage_published = self.stats.published
            waiting = await self._pending_or_none()
            log.warning(
                "cannot publish signals (%s); %s signals wait in the outbox and will be published when it "
                "is resolved",
                exc,
                "some" if waiting is None else waiting,
            )
        self._failures += 1

    async def _pending_or_none(self) -> int | None:
        try:
            return await asyncio.to_thread(self.outbox.pending)
        except (StorageUnavailable, sa_exc.SQLAlchemyError):
            return None

    def _recovered(self) -> None:
        if self._failures:
            log.warning(
                "publishing again after %d failed passes: %d signals published from the outbox",
                self._failures,
                self.stats.published - self._outage_published,
            )
        self._failures = 0
        self.last_error = None

    async def run(self) -> None:
        """Publish as signals are saved (:meth:`wake`) and every ``poll_interval`` seconds; after a failure
        retry after ``retry_base`` seconds, doubling up to ``retry_max`` (:data:`RETRY_CAP` by default). Runs
        until cancelled."""
        delay = self.retry_base
        cancels = cancel_requests()
        while True:
            # a cancel some library swallowed during the last pass (see tapewatch.adapters.cancels) ends the relay here
            if cancel_requests() > cancels:
                raise asyncio.CancelledError
            self._wake.clear()
            await self.publish_pending()
            if self.healthy:
                delay = self.retry_base
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives as the
                # wake does (it returns the result instead), and the relay would then run on forever
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
            else:
                await self._sleep(delay)
                delay = min(self.retry_max, delay * 2)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


class _Head(msgspec.Struct):
    signal_type: str = ""
    symbol: str = ""


def _summary(payload: str) -> dict[str, str]:
    """``signal_type`` and ``symbol`` of a payload, as stream fields consumers can filter on."""
    try:
        head = msgspec.json.decode(payload, type=_Head)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {}
    return {"signal_type": head.signal_type, "symbol": head.symbol}
