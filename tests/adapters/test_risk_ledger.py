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
from tapewatch.errors import StorageUnavailable
from tapewatch.risk import DAY_MS, Candidate, RiskParams

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
        # within the window: refused at once, with the reason and when it is tried again
        now[0] += 9.0
        with pytest.raises(StorageUnavailable, match="not retried for 10 s"):
            ledger.release(cand("AUSDT").signal_id, T0 + HOUR)
        assert ledger.refused == 1
        # after it: tried again (and fails again, opening a new window)
        now[0] += 1.5
        with pytest.raises(StorageUnavailable, match="is unavailable"):
            ledger.reserve(cand("AUSDT"), T0 + HOUR, no_corr)
        assert ledger.refused == 1
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
