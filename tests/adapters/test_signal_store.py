"""SignalStore against a real PostgreSQL: idempotent signal+outbox writes, candidates, outcomes, readers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import StorageUnavailable
from tapewatch.outcome import OutcomeParams, OutcomeState, OutcomeTracker
from tapewatch.risk import DAY_MS, utc_day
from tapewatch.signal import TierHistory, encode_published
from tests.adapters.signal_builders import (
    MINUTE,
    T0,
    S,
    candidate,
    entries,
    entry,
    exit_of,
    loss,
    open_signal,
    triggered,
    win,
)


@pytest.fixture
def store(migrated_database_url: str) -> Iterator[SignalStore]:
    db = Database(migrated_database_url)
    yield SignalStore(db)
    db.dispose()


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


# --- signals and their outbox rows -------------------------------------------------------------------


def test_saving_the_same_signal_twice_writes_one_row_and_one_outbox_row(
    store: SignalStore, engine: Engine
) -> None:
    signal = entry()
    assert store.save_signal(signal) is True
    assert store.save_signal(signal) is False
    assert store.save_signals([signal, signal]) == [False, False]
    assert _count(engine, "SELECT count(*) FROM signals") == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq, signal_id::text, payload, published_at FROM outbox")).all()
    assert len(rows) == 1
    assert rows[0].signal_id == signal.signal_id and rows[0].published_at is None
    assert rows[0].payload == encode_published(signal).decode()  # the exact JSON that will be published
    assert store.get_signal(signal.signal_id) == signal


def test_every_spec_field_and_the_evidence_are_columns(store: SignalStore, engine: Engine) -> None:
    signal = entry()
    exit_signal = exit_of(signal, "TP1")
    assert store.save_signals([signal, exit_signal]) == [True, True]
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT *, extract(epoch FROM timestamp) * 1000 AS ts_ms FROM signals WHERE signal_id = :i"
            ),
            {"i": signal.signal_id},
        ).one()
        exit_row = conn.execute(
            sa.text("SELECT * FROM signals WHERE signal_id = :i"), {"i": exit_signal.signal_id}
        ).one()
    for name in (
        "symbol", "direction", "signal_type", "priority", "entry_price", "stop_loss", "take_profit_1",
        "take_profit_2", "quality_score", "orderbook_imbalance", "large_trades_count", "volume_intensity",
        "confidence", "suggested_position_size", "risk_reward_ratio", "expected_hold_time", "event_time",
    ):  # fmt: skip
        assert getattr(row, name) == getattr(signal, name), name
    assert int(row.ts_ms) == signal.event_time  # the ISO timestamp, exact to the millisecond
    assert row.reasons == signal.reasons and len(row.reasons) > 3
    assert row.data_quality == msgspec.to_builtins(signal.data_quality)
    assert row.payload["signal_id"] == signal.signal_id and row.exit_reason is None
    assert (exit_row.signal_type, exit_row.exit_reason) == ("EXIT", "TP1")
    assert str(exit_row.parent_signal_id) == signal.signal_id
    assert exit_row.exit_price == signal.take_profit_1
    assert store.get_signal(exit_signal.signal_id) == exit_signal


def test_a_batch_is_one_transaction(store: SignalStore, engine: Engine) -> None:
    orphan_exit = exit_of(entry("ETHUSDT"), "STOP")  # its ENTRY is not stored: the foreign key refuses it
    with pytest.raises(sa_exc.IntegrityError):
        store.save_signals([entry(), orphan_exit])
    assert _count(engine, "SELECT count(*) FROM signals") == 0
    assert _count(engine, "SELECT count(*) FROM outbox") == 0


def test_outbox_seq_follows_the_order_of_writes(store: SignalStore, engine: Engine) -> None:
    batch = entries(5)
    for signal in batch:
        store.save_signal(signal)
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT signal_id::text FROM outbox ORDER BY seq")).scalars().all()
    assert ids == [s.signal_id for s in batch]


def test_an_unreachable_server_is_storage_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    store = SignalStore(db)
    try:
        for call in (
            lambda: store.save_signal(entry()),
            lambda: store.save_candidates([candidate()]),
            lambda: store.save_outcome(win(entry())),
            store.open_signals,
            store.tier_history,
        ):
            with pytest.raises(StorageUnavailable, match=r"PostgreSQL at .* is unavailable"):
                call()
    finally:
        db.dispose()


# --- candidates --------------------------------------------------------------------------------------


def test_candidates_are_stored_once_with_features_conditions_quality_and_fate(
    store: SignalStore, engine: Engine
) -> None:
    first = [
        candidate("BTCUSDT", T0),
        candidate("ETHUSDT", T0, "correlation"),
        candidate("BTCUSDT", T0, short=True),
    ]
    assert store.save_candidates(first) == 3
    assert store.save_candidates([*first, candidate("BTCUSDT", T0 + 1, "cooldown")]) == 1
    assert store.save_candidates([]) == 0
    assert _count(engine, "SELECT count(*) FROM candidates") == 4
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM candidates WHERE symbol = 'ETHUSDT'")).one()
    c = first[1]
    assert (row.fate, row.fate_detail, row.signal_id) == ("correlation", "rejected: correlation", None)
    assert (row.quality_score, row.tier) == (c.quality.score, c.quality.tier)
    assert row.features == msgspec.to_builtins(c.features)
    assert {x["name"] for x in row.conditions} == {*c.conditions_met, *c.conditions_unmet}
    assert row.quality["score"] == c.quality.score


def test_one_candidate_per_symbol_direction_and_event_time(store: SignalStore, engine: Engine) -> None:
    c = candidate()
    forged = msgspec.structs.replace(c, candidate_id=str(uuid.uuid4()), fate="paused", signal_id=None)
    assert store.save_candidates([c]) == 1
    assert store.save_candidates([forged]) == 0  # same setup under another id: the unique key holds
    assert _count(engine, "SELECT count(*) FROM candidates") == 1


# --- outcomes ----------------------------------------------------------------------------------------


def test_outcomes_upsert_and_batch_beats_live(store: SignalStore) -> None:
    signal = entry()
    store.save_signal(signal)
    provisional, final = triggered(signal), win(signal)
    assert store.save_outcome(provisional) is True
    assert store.get_outcome(signal.signal_id) == (provisional, "live")
    assert store.save_outcome(final) is True
    assert store.save_outcome(provisional) is False  # older than what is stored: ignored
    assert store.get_outcome(signal.signal_id) == (final, "live")
    batch = loss(signal)
    assert store.save_outcome(batch, source="batch") is True
    assert store.save_outcome(final) is False  # live never replaces the authoritative batch outcome
    assert store.get_outcome(signal.signal_id) == (batch, "batch")
    with pytest.raises(ValueError, match="'live' or 'batch'"):
        store.save_outcome(final, source="replay")  # type: ignore[arg-type]


def test_open_signals_are_entries_without_a_final_outcome_and_resume(store: SignalStore) -> None:
    waiting, running, done = entry("BTCUSDT"), entry("ETHUSDT", T0 + 1), entry("SOLUSDT", T0 + 2)
    store.save_signals([waiting, running, done, exit_of(done, "TP1"), exit_of(done, "TP2")])
    store.save_outcome(triggered(running))
    store.save_outcome(win(done))
    opened = store.open_signals()
    assert [(o.signal, o.outcome) for o in opened] == [(waiting, None), (running, triggered(running))]
    # what a restarted tracker does with it: continue as if never stopped
    params = OutcomeParams.from_settings(S)
    outcome = opened[1].outcome
    assert outcome is not None
    resumed = OutcomeTracker.resume(outcome, params)
    fresh = OutcomeTracker(open_signal(running), params)
    for t, p in [(0, running.entry_price), (1000, running.entry_price), (MINUTE, running.take_profit_1)]:
        fresh.on_trade(running.event_time + t, p)
    resumed.on_trade(running.event_time + MINUTE, running.take_profit_1)
    assert resumed.outcome() == fresh.outcome() and resumed.state is OutcomeState.TP1


def test_tier_history_counts_tp1_hits_and_hold_times_of_finished_triggered_signals(
    store: SignalStore,
) -> None:
    wins, losses = entries(3, symbol="BTCUSDT"), entries(2, symbol="ETHUSDT")
    waiting = entry("SOLUSDT")
    store.save_signals([*wins, *losses, waiting])
    for s in wins:
        store.save_outcome(win(s))
    for i, s in enumerate(losses):
        store.save_outcome(loss(s, after=(i + 1) * MINUTE))
    store.save_outcome(triggered(waiting))  # not finished: not history
    assert all(s.priority == "HIGH" for s in [*wins, *losses])
    history = store.tier_history()
    assert set(history) == {"HIGH"}
    high = history["HIGH"]
    assert (high.tp1_hits, high.signals) == (3, 5)
    assert sorted(high.hold_ms) == sorted([10 * MINUTE] * 3 + [MINUTE, 2 * MINUTE])
    assert high.tp1 == [False, False, True, True, True]  # oldest first: the losses ended first
    last_two = store.tier_history(limit=2)["HIGH"]
    assert last_two.signals == 2  # the two that ended last (by exit time)


def test_a_restored_tier_history_goes_on_as_the_engine_s_own(store: SignalStore) -> None:
    """A restart reads the last TIER_HISTORY_LIMIT signals back; the engine that never stopped keeps the same
    window as signals finish, so both give the next signal the same confidence (the engine's counts once grew
    for good while a restart read the last 200: a restarted run disagreed with one that never stopped)."""
    from tapewatch.signal import TIER_HISTORY_LIMIT
    from tapewatch.signal_follow import learn

    made = entries(TIER_HISTORY_LIMIT + 12, symbol="BTCUSDT")
    # 40 wins (out after 10 min) end before every loss (stopped after 20 min): the hits are the oldest
    outcomes = [win(s) if i < 40 else loss(s, after=20 * MINUTE) for i, s in enumerate(made)]
    outcomes.sort(key=lambda o: o.exit_time or 0)  # the order they finish in, as the engine learns them
    store.save_signals(made)
    live: dict[str, TierHistory] = {}
    for outcome in outcomes[:-1]:
        store.save_outcome(outcome)
        learn(live, outcome)  # type: ignore[arg-type]
    restored: dict[str, TierHistory] = dict(store.tier_history())  # type: ignore[arg-type]
    assert live["HIGH"] == restored["HIGH"]
    assert (live["HIGH"].signals, live["HIGH"].tp1_hits) == (TIER_HISTORY_LIMIT, 40 - 11)
    learn(live, outcomes[-1])  # type: ignore[arg-type]
    learn(restored, outcomes[-1])  # type: ignore[arg-type]
    assert live["HIGH"] == restored["HIGH"] and live["HIGH"].tp1_hits == 40 - 12


def test_a_shard_restores_the_tier_history_of_its_own_symbols(store: SignalStore) -> None:
    """A shard's engine learns from the signals of the symbols it owns only: its restart reads those back."""
    btc, eth = entries(3, symbol="BTCUSDT"), entries(2, symbol="ETHUSDT", start=T0 + 10_000)
    store.save_signals([*btc, *eth])
    for s in btc:
        store.save_outcome(win(s))
    for s in eth:
        store.save_outcome(loss(s))
    mine = store.tier_history(owns=lambda symbol: symbol == "ETHUSDT")["HIGH"]
    assert (mine.tp1_hits, mine.signals, mine.tp1) == (0, 2, [False, False])
    assert store.tier_history()["HIGH"].signals == 5
    assert store.tier_history(limit=1, owns=lambda symbol: symbol == "BTCUSDT")["HIGH"].signals == 1
    with pytest.raises(ValueError, match="limit"):
        store.tier_history(limit=0)


def test_signal_counts_per_tier_on_a_utc_day_of_event_time(store: SignalStore) -> None:
    day = utc_day(T0)
    midnight = day * DAY_MS
    before, first, last, after = (
        entry("BTCUSDT", midnight - 1),
        entry("BTCUSDT", midnight),
        entry("ETHUSDT", midnight + DAY_MS - 1),
        entry("ETHUSDT", midnight + DAY_MS),
    )
    low = entry("SOLUSDT", midnight + 5, imbalance_top10=0.29, large_buys=3)  # a weaker setup: lower tier
    store.save_signals([before, first, last, after, low, exit_of(first, "STOP")])
    counts = store.signal_counts(day)
    assert low.priority != "HIGH"
    assert counts == {"HIGH": 2, "MEDIUM": 0, "LOW": 0, low.priority: 1}  # EXITs and other days do not count
    assert store.signal_counts(day + 5) == {"HIGH": 0, "MEDIUM": 0, "LOW": 0}


def test_stop_outs_rebuild_cooldowns(store: SignalStore) -> None:
    stopped, won = entry("BTCUSDT"), entry("ETHUSDT")
    store.save_signals([stopped, won])
    store.save_outcome(loss(stopped))
    store.save_outcome(win(won))
    exit_time = stopped.event_time + 3 * MINUTE
    store.save_candidates(
        [
            candidate("BTCUSDT", exit_time + 1000, "cooldown"),
            candidate("BTCUSDT", exit_time - 1000, "cooldown"),
        ]
    )
    assert store.stop_outs(since_ms=T0) == {"BTCUSDT": (exit_time, 1)}
    assert store.stop_outs(since_ms=exit_time + 1) == {}


def test_recent_signals_newest_first(store: SignalStore) -> None:
    batch = [*entries(3, symbol="BTCUSDT"), *entries(2, symbol="ETHUSDT", start=T0 + 10)]
    store.save_signals(batch)
    assert [s.event_time for s in store.recent_signals(limit=2)] == [T0 + 2000, T0 + 1010]
    assert {s.symbol for s in store.recent_signals(symbol="ETHUSDT")} == {"ETHUSDT"}
