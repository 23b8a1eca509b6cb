"""The global risk ledger: limits hold across shards, atomically, and restarts count nothing twice."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from tapewatch.adapters.db import Database
from tapewatch.adapters.risk_ledger import _LOCK_KEY as LOCK_KEY
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.engine_restore import _risk_candidate
from tapewatch.errors import StorageUnavailable
from tapewatch.risk import DAY_MS, Candidate, RiskParams
from tests.adapters.signal_builders import entry, win

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS + 3_600_000  # 01:00 UTC of some day
HOUR = 3_600_000


def cand(symbol: str, t: int = T0, *, direction: str = "LONG", tier: str = "MEDIUM") -> Candidate:
    return Candidate(
        signal_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{symbol}{direction}{t}")),
        symbol=symbol,
        direction=direction,  # type: ignore[arg-type]
        tier=tier,  # type: ignore[arg-type]
        event_time=t,
    )


def no_corr(a: str, b: str) -> float | None:
    return None


def test_concurrency_cap_counts_every_shard(db: Database) -> None:
    a, b = RiskLedger(db, RiskParams(), shard="0/2"), RiskLedger(db, RiskParams(), shard="1/2")
    for i in range(5):
        ledger = a if i % 2 else b
        assert ledger.reserve(cand(f"S{i}USDT", T0 + i), T0 + HOUR, no_corr).passed
    sixth = a.reserve(cand("S9USDT", T0 + 10), T0 + HOUR, no_corr)
    assert (
        sixth.rule == "concurrency" and "5/5" in (sixth.reason or "") and "all shards" in (sixth.reason or "")
    )
    # a release (by either shard) frees a slot
    assert b.release(cand("S0USDT", T0).signal_id, T0 + 20)
    assert not b.release(cand("S0USDT", T0).signal_id, T0 + 21)  # already released
    assert a.reserve(cand("S9USDT", T0 + 30), T0 + HOUR, no_corr).passed


def test_a_dead_shards_reservations_stop_counting_at_their_expiry(db: Database) -> None:
    ledger = RiskLedger(db, RiskParams(max_concurrent_signals=1))
    assert ledger.reserve(cand("AUSDT"), T0 + HOUR, no_corr).passed
    assert ledger.reserve(cand("BUSDT", T0 + HOUR - 1), T0 + 2 * HOUR, no_corr).rule == "concurrency"
    assert ledger.reserve(cand("BUSDT", T0 + HOUR), T0 + 2 * HOUR, no_corr).passed


def test_daily_caps_per_tier_and_total(db: Database) -> None:
    params = RiskParams(
        max_daily={"HIGH": 2, "MEDIUM": 1, "LOW": 5}, max_daily_signals=3, max_concurrent_signals=100
    )
    ledger = RiskLedger(db, params)
    assert ledger.reserve(cand("AUSDT", tier="HIGH"), T0 + 1, no_corr).passed
    assert ledger.reserve(cand("BUSDT", tier="HIGH"), T0 + 1, no_corr).passed
    assert ledger.reserve(cand("CUSDT", tier="HIGH"), T0 + 1, no_corr).rule == "tier_daily_cap"
    assert ledger.reserve(cand("DUSDT", tier="MEDIUM"), T0 + 1, no_corr).passed
    assert ledger.reserve(cand("EUSDT", tier="LOW"), T0 + 1, no_corr).rule == "daily_cap"
    # the next UTC day starts from zero
    assert ledger.reserve(cand("EUSDT", T0 + DAY_MS, tier="LOW"), T0 + DAY_MS + 1, no_corr).passed
    counts = ledger.counts(T0 + DAY_MS, (T0 + DAY_MS) // DAY_MS)
    assert counts.day == {"LOW": 1}


def test_correlation_against_other_shards_open_signals(db: Database) -> None:
    ledger = RiskLedger(db, RiskParams())
    assert ledger.reserve(cand("ETHUSDT"), T0 + HOUR, no_corr).passed

    def corr(a: str, b: str) -> float | None:
        return 0.9 if {a, b} == {"BTCUSDT", "ETHUSDT"} else 0.0

    rejected = ledger.reserve(cand("BTCUSDT", T0 + 5), T0 + HOUR, corr)
    assert rejected.rule == "correlation" and "ETHUSDT r=0.90" in (rejected.reason or "")
    # the opposite direction is not compared
    assert ledger.reserve(cand("BTCUSDT", T0 + 6, direction="SHORT"), T0 + HOUR, corr).passed


def test_a_restart_re_reserving_the_same_signal_counts_it_once(db: Database) -> None:
    ledger = RiskLedger(db, RiskParams(max_concurrent_signals=1))
    c = cand("AUSDT")
    assert ledger.reserve(c, T0 + HOUR, no_corr).passed
    assert ledger.reserve(c, T0 + HOUR, no_corr).passed  # the same id again: still its slot
    assert len(ledger.counts(T0 + 1, c.day).open) == 1
    assert ledger.counts(T0 + 1, c.day).day == {"MEDIUM": 1}


def test_two_shards_racing_for_the_last_slot_never_both_win(migrated_database_url: str) -> None:
    params = RiskParams(max_concurrent_signals=5)
    setup = Database(migrated_database_url)
    try:
        for i in range(4):
            assert RiskLedger(setup, params).reserve(cand(f"S{i}USDT", T0 + i), T0 + HOUR, no_corr).passed
    finally:
        setup.dispose()
    for round_ in range(10):
        results = _race(migrated_database_url, params, round_)
        assert sorted(results) == [False, True], f"round {round_}: {results}"
        # free the 5th slot again for the next round
        check = Database(migrated_database_url)
        try:
            ledger = RiskLedger(check, params)
            open_ = ledger.counts(T0 + 200, T0 // DAY_MS).open
            assert len(open_) == 5
            newest = max(open_, key=lambda c: c.event_time)
            assert ledger.release(newest.signal_id, T0 + 100 + round_)
        finally:
            check.dispose()


def _race(url: str, params: RiskParams, round_: int) -> list[bool]:
    """Two shards, each on its own connection pool, reserve a different candidate at the same moment."""
    start = threading.Barrier(2)
    results: list[bool] = []
    dbs = [Database(url) for _ in range(2)]

    def race(k: int) -> None:
        ledger = RiskLedger(dbs[k], params, shard=f"{k}/2")
        c = cand(f"R{round_}X{k}USDT", T0 + 100 + round_)
        start.wait()
        results.append(ledger.reserve(c, T0 + HOUR, no_corr).passed)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in dbs:
        d.dispose()
    return results


def test_an_unreachable_database_fails_closed() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    try:
        with pytest.raises(StorageUnavailable):
            RiskLedger(db, RiskParams()).reserve(cand("AUSDT"), T0 + HOUR, no_corr)
    finally:
        db.dispose()


def test_an_unreachable_database_fails_fast_until_the_retry_window_ends() -> None:
    now = [100.0]
    db = Database("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    ledger = RiskLedger(db, RiskParams(), retry_after_s=10.0, clock=lambda: now[0])
    try:
        with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1:1"):
            ledger.reserve(cand("AUSDT"), T0 + HOUR, no_corr)
        assert ledger.refused == 0
        # within the window: a reservation is refused at once, with the reason and when it is tried again
        now[0] += 9.0
        with pytest.raises(StorageUnavailable, match="not retried for 10 s"):
            ledger.reserve(cand("BUSDT"), T0 + HOUR, no_corr)
        assert ledger.refused == 1
        # a release is not refused: not tried on the event loop either, but kept for the upkeep to write
        with pytest.raises(StorageUnavailable, match="kept and retried"):
            ledger.release(cand("AUSDT").signal_id, T0 + HOUR)
        assert ledger.refused == 1 and ledger.releases_deferred == 1
        assert ledger.pending_releases == {cand("AUSDT").signal_id: T0 + HOUR}
        # after it: tried again (and fails again, opening a new window); the release is still kept
        now[0] += 1.5
        with pytest.raises(StorageUnavailable, match="is unavailable"):
            ledger.reserve(cand("AUSDT"), T0 + HOUR, no_corr)
        assert ledger.refused == 1
        with pytest.raises(StorageUnavailable, match="is unavailable"):
            ledger.upkeep()  # tried whatever the window (it runs in a thread, off the event loop)
        assert ledger.pending_releases == {cand("AUSDT").signal_id: T0 + HOUR}
    finally:
        db.dispose()


def test_a_ledger_lock_held_too_long_fails_closed_instead_of_blocking(
    db: Database, migrated_database_url: str
) -> None:
    holder = Database(migrated_database_url)
    ledger = RiskLedger(db, RiskParams(), statement_timeout_s=0.3, retry_after_s=0.0)
    try:
        with holder.begin() as conn:
            # another shard stuck inside its reservation transaction
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
            t = time.monotonic()
            with pytest.raises(StorageUnavailable):
                ledger.reserve(cand("BUSDT"), T0 + HOUR, no_corr)
            assert time.monotonic() - t < 5
        # the lock released, the same candidate passes
        assert ledger.reserve(cand("BUSDT"), T0 + HOUR, no_corr).passed
    finally:
        holder.dispose()


# --- the lock is held for the ledger's rows only ----------------------------------------------------------


def _open_other_shards_longs(db: Database, symbols: list[str]) -> None:
    ledger = RiskLedger(db, RiskParams(), shard="1/2")
    for i, symbol in enumerate(symbols):
        assert ledger.reserve(cand(symbol, T0 + i), T0 + HOUR, no_corr).passed


def test_the_ledger_lock_is_not_held_while_correlations_are_read(
    db: Database, migrated_database_url: str
) -> None:
    # shard 1 holds two open LONGs; shard 0's LONG candidate needs their correlations (another shard's closes,
    # read from Redis), and that read hangs until shard 1 has reserved and released
    _open_other_shards_longs(db, ["BBBUSDT", "CCCUSDT"])
    reading, other_done = threading.Event(), threading.Event()
    asked: list[tuple[str, str]] = []

    def slow_corr(a: str, b: str) -> float | None:
        asked.append((a, b))
        reading.set()
        other_done.wait(10)
        return 0.1

    result: list[bool] = []
    a = RiskLedger(Database(migrated_database_url), RiskParams(), shard="0/2", statement_timeout_s=1.0)
    b = RiskLedger(Database(migrated_database_url), RiskParams(), shard="1/2", statement_timeout_s=1.0)
    try:
        reader = threading.Thread(
            target=lambda: result.append(a.reserve(cand("AAAUSDT", T0 + 10), T0 + HOUR, slow_corr).passed)
        )
        reader.start()
        assert reading.wait(10)
        t = time.monotonic()
        # the other shard is not kept waiting for the lock (it was cut at the 1 s lock timeout before)
        assert b.reserve(cand("ZZZUSDT", T0 + 11, direction="SHORT"), T0 + HOUR, no_corr).passed
        assert b.release(cand("BBBUSDT", T0).signal_id, T0 + 12)
        assert time.monotonic() - t < 0.9
        other_done.set()
        reader.join(20)
        assert result == [True]
        # the correlations asked: the LONGs open when shard 0 looked (BBBUSDT was released meanwhile, harmless)
        assert sorted(asked) == [("AAAUSDT", "BBBUSDT"), ("AAAUSDT", "CCCUSDT")]
    finally:
        other_done.set()
        a.db.dispose()
        b.db.dispose()


def test_a_signal_opened_while_correlations_were_read_is_correlated_before_reserving(db: Database) -> None:
    _open_other_shards_longs(db, ["BBBUSDT"])
    other = RiskLedger(db, RiskParams(), shard="1/2")
    asked: list[str] = []

    def corr(a: str, b: str) -> float | None:
        asked.append(b)
        if b == "BBBUSDT":  # while this is read, shard 1 opens a LONG on a symbol that moves with ours
            assert other.reserve(cand("CCCUSDT", T0 + 5), T0 + HOUR, no_corr).passed
        return 0.9 if b == "CCCUSDT" else 0.1

    ledger = RiskLedger(db, RiskParams(), shard="0/2")
    decision = ledger.reserve(cand("AAAUSDT", T0 + 10), T0 + HOUR, corr)
    assert decision.rule == "correlation" and "CCCUSDT r=0.90" in (decision.reason or "")
    assert asked == ["BBBUSDT", "CCCUSDT"]  # each read once, outside the lock
    assert len(ledger.counts(T0 + 10, T0 // DAY_MS).open) == 2  # nothing reserved for AAAUSDT


# --- releases that failed are kept and written later ------------------------------------------------------


def _five_open(db: Database, ledger: RiskLedger) -> list[Candidate]:
    held = [cand(f"S{i}USDT", T0 + i) for i in range(5)]
    for c in held:
        assert ledger.reserve(c, T0 + HOUR, no_corr).passed
    return held


def _fail_once(ledger: RiskLedger, holder: Database) -> None:
    """A blip: another session holds the ledger's lock past the statement timeout; ``ledger``'s reservation
    fails (and opens its fail-fast window)."""
    with holder.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        with pytest.raises(StorageUnavailable):
            ledger.reserve(cand("XUSDT", T0 + 50), T0 + HOUR, no_corr)


def _kept_release(db: Database, url: str, shard0: RiskLedger) -> list[Candidate]:
    """Five signals open on ``shard0``, which then fails a call (its fail-fast window opens): PostgreSQL is fine
    again, but the release of the first one's end (at T0 + 60) is kept, not lost. Returns the five."""
    held = _five_open(db, shard0)
    holder = Database(url)
    try:
        _fail_once(shard0, holder)
    finally:
        holder.dispose()
    with pytest.raises(StorageUnavailable, match="kept and retried"):
        shard0.release(held[0].signal_id, T0 + 60)
    return held


def test_a_release_in_the_fail_fast_window_is_kept_and_written_by_the_upkeep(
    db: Database, migrated_database_url: str
) -> None:
    shard0 = RiskLedger(db, RiskParams(), shard="0/2", statement_timeout_s=0.3)
    shard1 = RiskLedger(db, RiskParams(), shard="1/2")
    held = _kept_release(db, migrated_database_url, shard0)
    late = shard1.reserve(cand("YUSDT", T0 + 70, direction="SHORT"), T0 + HOUR, no_corr)
    assert late.rule == "concurrency" and "(5/5)" in (late.reason or "")
    assert shard0.upkeep() == 1  # what the service runs each second, off its event loop
    assert shard0.pending_releases == {}
    assert shard1.reserve(cand("YUSDT", T0 + 71, direction="SHORT"), T0 + HOUR, no_corr).passed
    with db.begin() as conn:
        released_at = conn.execute(
            sa.text("SELECT released_at FROM risk_reservations WHERE signal_id = CAST(:s AS uuid)"),
            {"s": held[0].signal_id},
        ).scalar()
    assert released_at == T0 + 60  # at the signal's end, not when it was finally written


def test_a_kept_release_is_written_before_the_shards_next_reservation(
    db: Database, migrated_database_url: str
) -> None:
    now = [0.0]
    shard0 = RiskLedger(
        db, RiskParams(), shard="0/2", statement_timeout_s=0.3, retry_after_s=10.0, clock=lambda: now[0]
    )
    _kept_release(db, migrated_database_url, shard0)
    now[0] += 11.0  # no upkeep ran (a replay, or before its first tick): the next reservation writes it first
    assert shard0.reserve(cand("YUSDT", T0 + 70), T0 + HOUR, no_corr).passed
    assert shard0.pending_releases == {}


# --- a restarted shard settles what its earlier run left -----------------------------------------------------


def test_a_restarted_shard_releases_its_finished_signals_and_deletes_those_never_stored(db: Database) -> None:
    store = SignalStore(db)
    finished, still_open, unstored = entry("AAAUSDT", T0), entry("BBBUSDT", T0 + 1), entry("CCCUSDT", T0 + 2)
    others = entry("DDDUSDT", T0 + 3)  # shard 1's, never stored: not shard 0's to judge
    before = RiskLedger(db, RiskParams(), shard="0/2")
    for s in (finished, still_open, unstored):
        assert before.reserve(_risk_candidate(s), T0 + HOUR, no_corr).passed
    assert (
        RiskLedger(db, RiskParams(), shard="1/2").reserve(_risk_candidate(others), T0 + HOUR, no_corr).passed
    )
    store.save_signals([finished, still_open])
    done = win(finished)
    store.save_outcome(done)
    # the process was killed before it wrote `unstored` or released `finished`; the restarted one settles
    after = RiskLedger(db, RiskParams(), shard="0/2", unstored_grace_s=0.0)
    new = entry("EEEUSDT", T0 + 4)  # reserved by the new process, its write still queued: never touched
    assert after.reserve(_risk_candidate(new), T0 + HOUR, no_corr).passed
    settled = after.settle()
    assert (settled.released, settled.deleted) == (1, 1)
    with db.begin() as conn:
        rows: dict[str, int | None] = {
            str(symbol): released_at
            for symbol, released_at in conn.execute(
                sa.text("SELECT symbol, released_at FROM risk_reservations")
            )
        }
    assert rows == {"AAAUSDT": done.exit_time, "BBBUSDT": None, "DDDUSDT": None, "EEEUSDT": None}
    counts = after.counts(T0 + 10, T0 // DAY_MS)
    assert {c.symbol for c in counts.open} == {"BBBUSDT", "DDDUSDT", "EEEUSDT"}
    assert sum(counts.day.values()) == 4  # the signal nobody received no longer counts in its day
    again = after.settle()
    assert (again.released, again.deleted) == (0, 0)


def test_a_reservation_younger_than_the_grace_is_settled_only_once_the_grace_has_passed(db: Database) -> None:
    # a predecessor of this shard still writing (a restart overlapping it): its fresh reservation is left alone
    RiskLedger(db, RiskParams(), shard="0/2").reserve(cand("AAAUSDT"), T0 + HOUR, no_corr)
    now = [0.0]
    ledger = RiskLedger(db, RiskParams(), shard="0/2", unstored_grace_s=1.0, clock=lambda: now[0])
    assert ledger.upkeep() == 0
    assert len(ledger.counts(T0 + 1, T0 // DAY_MS).open) == 1
    time.sleep(1.1)
    now[0] += 1.1
    assert ledger.upkeep() == 1  # the grace has passed: it was never stored, so it goes
    assert ledger.counts(T0 + 1, T0 // DAY_MS).day == {}
    # settled: later upkeeps only write kept releases
    RiskLedger(db, RiskParams(), shard="0/2").reserve(cand("BUSDT"), T0 + HOUR, no_corr)
    time.sleep(1.1)
    now[0] += 1.1
    assert ledger.upkeep() == 0
