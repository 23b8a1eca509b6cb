"""The stored-only ``created_after_agg_id`` of a signal against a real PostgreSQL: its column, its round trip
to the readers the live tracker and the batch outcome use, and its absence from the published JSON."""

from __future__ import annotations

import json

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assets.outcomes import batch_signal
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import entries_to_settle
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.signal import STORED_ONLY, decode_signal, encode, encode_published
from tests.adapters.signal_builders import T0, entry, exit_of

DAY0 = T0 - T0 % 86_400_000


def test_the_last_agg_id_at_creation_round_trips_and_is_not_published(db: Database, engine: Engine) -> None:
    recorded = msgspec.structs.replace(entry("BTCUSDT", T0), created_after_agg_id=7_123_456_789)
    older = entry("ETHUSDT", T0 + 1000)  # stored before the id was recorded (or on the @trade stream)
    store = SignalStore(db)
    assert store.save_signals([recorded, older, exit_of(recorded, "TP1")]) == [True, True, True]
    with engine.connect() as conn:
        rows = {
            str(r[0]): r[1]
            for r in conn.execute(sa.text("SELECT symbol || signal_type, created_after_agg_id FROM signals"))
        }
        published = {
            str(r[0]): str(r[1]) for r in conn.execute(sa.text("SELECT signal_id::text, payload FROM outbox"))
        }
    assert rows == {"BTCUSDTENTRY": 7_123_456_789, "ETHUSDTENTRY": None, "BTCUSDTEXIT": None}
    # read back with it: the stored signal, the open signals the live tracker resumes, the batch's input
    assert store.get_signal(recorded.signal_id) == recorded
    assert [e.signal.created_after_agg_id for e in store.open_signals()] == [7_123_456_789, None]
    pending = entries_to_settle(db, DAY0, DAY0 + 86_400_000)
    assert [batch_signal(p.signal).created_after_agg_id for p in pending] == [7_123_456_789, None]
    # the published JSON (outbox: Redis stream, webhook, Telegram) is spec 8.2 plus the evidence, as before
    payload = published[recorded.signal_id]
    assert set(STORED_ONLY).isdisjoint(json.loads(payload))
    assert payload == encode_published(recorded).decode()
    assert payload == encode(msgspec.structs.replace(recorded, created_after_agg_id=None)).decode().replace(
        ',"created_after_agg_id":null', ""
    )
    assert decode_signal(payload) == msgspec.structs.replace(recorded, created_after_agg_id=None)


def test_an_old_row_without_the_column_value_reads_as_unknown(db: Database, engine: Engine) -> None:
    """A row stored before migration 0010: NULL column, a payload without the key."""
    old = entry("BTCUSDT", T0)
    SignalStore(db).save_signal(old)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE signals SET created_after_agg_id = NULL, payload = payload - 'created_after_agg_id'"
            )
        )
        assert conn.execute(sa.text("SELECT payload ? 'created_after_agg_id' FROM signals")).scalar() is False
    [pending] = entries_to_settle(db, DAY0, DAY0 + 86_400_000)
    assert pending.signal == old and batch_signal(pending.signal).created_after_agg_id is None
