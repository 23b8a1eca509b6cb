"""The universe's history in PostgreSQL: full rescans, exclusions as new versions, diffs, reads, errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence

import pytest
import sqlalchemy as sa

from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.universe_store import (
    EmptyUniverseRefused,
    Rescan,
    current_universe,
    exclude,
    exclusions,
    members,
    publish_current,
    recent_rescans,
    rescan_by_run,
    save_rescan,
)
from tapewatch.errors import StorageUnavailable
from tapewatch.universe import Minimums, Reason, SymbolStats, select_universe
from tapewatch.universe_checks import Exclusion

MINS = Minimums(min_24h_volume=50e6, min_open_interest=10e6, max_spread=0.0002)


def stats(symbol: str, volume: float, **extra: float | None) -> SymbolStats:
    base: dict[str, float | None] = {
        "open_interest_usd": 20e6,
        "spread": 0.0001,
        "depth_1pct_usd": 1e6,
        "atr_ratio": 0.01,
        "trades_per_second": 5.0,
        "last_price": 3.0,
    }
    base.update(extra)
    return SymbolStats(symbol, quote_volume_24h=volume, **base)  # type: ignore[arg-type]


def test_empty_history_reads_as_none_and_empty_lists(db: Database) -> None:
    assert current_universe(db) is None
    assert recent_rescans(db) == [] and exclusions(db) == [] and members(db, 12345) == []
    assert rescan_by_run(db, "no-such-run") is None
    # excluding before any rescan changes nothing
    assert exclude(db, [Exclusion("AUSDT", Reason.SPREAD_TOO_WIDE, "wide")], source="emergency") is None


def test_an_exclusion_never_stores_an_empty_universe(db: Database) -> None:
    first = save_rescan(
        db, select_universe([stats(s, v) for s, v in [("AUSDT", 9e8), ("BUSDT", 5e8)]], 5, MINS).decisions
    )
    every = [Exclusion(s, Reason.SPREAD_TOO_WIDE, "live spread wide") for s in ("AUSDT", "BUSDT")]
    with pytest.raises(EmptyUniverseRefused, match="would leave the universe empty"):
        exclude(db, every, source="quick_check")
    assert current_universe(db) == first and exclusions(db) == []
    # one at a time (an emergency run per symbol): the first goes, the last one stays
    assert exclude(db, every[:1], source="emergency") is not None
    with pytest.raises(EmptyUniverseRefused):
        exclude(db, every[1:], source="emergency")
    after = current_universe(db)
    assert after is not None and after.symbols == ("BUSDT",)
    assert [e.symbol for e in exclusions(db)] == ["AUSDT"]


def test_a_full_rescan_is_stored_with_every_symbol_its_stats_and_reason(db: Database) -> None:
    candidates = [
        stats("AUSDT", 900e6),
        stats("BUSDT", 300e6),
        stats("CUSDT", 90e6),
        stats("THINUSDT", 5e6),
        SymbolStats("BROKENUSDT", quote_volume_24h=80e6, errors=("depth: HTTP 503",)),
    ]
    sel = select_universe(candidates, 2, MINS)
    saved = save_rescan(db, sel.decisions, run_id="run-1", params={"universe_size": 2})
    assert saved.kind == "full" and saved.symbols == ("AUSDT", "BUSDT") and saved.run_id == "run-1"
    assert saved.added == ("AUSDT", "BUSDT") and saved.removed == ()
    assert saved.candidates == 5 and saved.params == {"universe_size": 2}
    assert saved.reason_counts == {
        "selected": 2,
        "rank_beyond_size": 1,
        "below_min_volume": 1,
        "missing_statistic": 1,
    }
    rows = members(db, saved.rescan_id)
    assert [(m.symbol, m.rank, m.reason) for m in rows] == [
        ("AUSDT", 1, Reason.SELECTED),
        ("BUSDT", 2, Reason.SELECTED),
        ("CUSDT", 3, Reason.RANK_BEYOND_SIZE),
        ("BROKENUSDT", None, Reason.MISSING_STATISTIC),
        ("THINUSDT", None, Reason.BELOW_MIN_VOLUME),
    ]
    a = rows[0]
    assert a.stats == candidates[0] and a.score == pytest.approx(sel.decisions[0].score)
    assert a.volume_score == 1.0 and a.liquidity_score == 0.5
    broken = rows[3]
    assert broken.score is None and broken.stats.errors == ("depth: HTTP 503",)
    assert current_universe(db) == saved == rescan_by_run(db, "run-1")


def test_exclusions_make_new_versions_and_diffs_follow_the_history(db: Database) -> None:
    first = save_rescan(
        db, select_universe([stats(s, v) for s, v in [("AUSDT", 9e8), ("BUSDT", 5e8)]], 5, MINS).decisions
    )
    second = save_rescan(
        db,
        select_universe(
            [stats(s, v) for s, v in [("AUSDT", 9e8), ("BUSDT", 5e8), ("CUSDT", 3e8)]], 5, MINS
        ).decisions,
        run_id="run-2",
    )
    assert second.added == ("CUSDT",) and second.removed == ()
    wide = Exclusion(
        "BUSDT", Reason.SPREAD_TOO_WIDE, "live spread 0.1000% > 0.0200%", {"spread": 0.001, "strikes": 3.0}
    )
    ghost = Exclusion("ZZZUSDT", Reason.SPREAD_TOO_WIDE, "not in the universe")
    third = exclude(db, [wide, ghost], source="emergency", run_id="run-3")
    assert third is not None
    assert third.kind == "emergency" and third.symbols == ("AUSDT", "CUSDT") and third.removed == ("BUSDT",)
    rows = {m.symbol: m for m in members(db, third.rescan_id)}
    assert rows["BUSDT"].reason is Reason.SPREAD_TOO_WIDE and not rows["BUSDT"].selected
    assert rows["BUSDT"].rank is None and rows["BUSDT"].stats.quote_volume_24h == 5e8
    assert rows["CUSDT"].rank == 2 and "emergency" in rows["CUSDT"].detail
    # the same exclusion again (a repeated sensor run): nothing to do
    assert exclude(db, [wide], source="emergency") is None
    recorded = exclusions(db)
    assert [(e.symbol, e.source, e.reason, e.rescan_id, e.run_id) for e in recorded] == [
        ("BUSDT", "emergency", Reason.SPREAD_TOO_WIDE, third.rescan_id, "run-3")
    ]
    assert recorded[0].values == {"spread": 0.001, "strikes": 3.0}
    quick = exclude(db, [Exclusion("AUSDT", Reason.BELOW_MIN_VOLUME, "24h volume low")], source="quick_check")
    assert quick is not None and quick.kind == "quick" and quick.symbols == ("CUSDT",)
    history = recent_rescans(db, limit=10)
    assert [r.rescan_id for r in history] == [
        quick.rescan_id,
        third.rescan_id,
        second.rescan_id,
        first.rescan_id,
    ]
    assert [r.removed for r in history] == [("AUSDT",), ("BUSDT",), (), ()]
    assert [r.kind for r in recent_rescans(db, kind="full")] == ["full", "full"]
    assert [e.symbol for e in exclusions(db, symbol="ausdt")] == ["AUSDT"]
    assert current_universe(db) == quick
    with pytest.raises(ValueError, match="at least 1"):
        recent_rescans(db, limit=0)


def version(db: Database, *symbols: str) -> Rescan:
    """A full rescan selecting ``symbols`` (decreasing volume), stored."""
    candidates = [stats(s, 9e8 - i * 1e8) for i, s in enumerate(symbols)]
    return save_rescan(db, select_universe(candidates, 5, MINS).decisions)


def test_a_late_publish_of_an_older_write_publishes_the_newest_version(
    db: Database, redis_state: RedisState
) -> None:
    assert publish_current(db, redis_state, source="test") is None  # nothing stored yet: nothing published
    assert redis_state.read_control().universe is None
    older = version(db, "AUSDT", "BUSDT")
    newer = version(db, "AUSDT", "CUSDT")
    # the run that stored the newer version publishes first; the slow run of the older one publishes last
    assert publish_current(db, redis_state, source="newer run") == newer
    assert publish_current(db, redis_state, source="older run") == newer
    assert older.rescan_id < newer.rescan_id
    assert redis_state.read_control().universe == ("AUSDT", "CUSDT")
    last = redis_state.last_rescan()
    assert last is not None and last.info["rescan_id"] == newer.rescan_id and last.info["added"] == "CUSDT"


class PausedState(RedisState):
    """The real RedisState, paused just before it writes the universe (to interleave two runs exactly)."""

    def __init__(self, base: RedisState) -> None:
        super().__init__(base.client, keys=base.keys)
        self.reached, self.go = threading.Event(), threading.Event()

    def set_universe(self, symbols: Sequence[str] | None, *, source: str) -> None:
        self.reached.set()
        assert self.go.wait(60), "the test never let the publish go on"
        super().set_universe(symbols, source=source)


def lock_waiters(db: Database) -> int:
    with db.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
        )


def test_a_version_stored_while_an_older_one_is_being_published_is_published_after_it(
    db: Database, redis_state: RedisState
) -> None:
    # run A has read the newest version (v1) and is about to write it to Redis when run B stores v2 and
    # publishes it; A's write must not land after B's
    version(db, "AUSDT", "BUSDT")
    paused = PausedState(redis_state)
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    a = run(lambda: publish_current(db, paused, source="run A"))
    assert paused.reached.wait(60)
    b = run(lambda: (version(db, "AUSDT", "CUSDT"), publish_current(db, redis_state, source="run B")))
    # B either waits for A's lock (the fix) or gets through at once (the race): wait for one of the two
    for _ in range(600):
        if not b.is_alive() or lock_waiters(db):
            break
        b.join(0.05)
    paused.go.set()
    a.join(60)
    b.join(60)
    assert not errors and not a.is_alive() and not b.is_alive()
    newest = current_universe(db)
    assert newest is not None and newest.symbols == ("AUSDT", "CUSDT")
    assert redis_state.read_control().universe == newest.symbols
    last = redis_state.last_rescan()
    assert last is not None and last.info["rescan_id"] == newest.rescan_id


def test_the_schema_refuses_bad_rows(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO universe_rescans (kind, symbols, candidates) VALUES ('weekly', '{}', 0)")
        )
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO universe_exclusions (symbol, reason, source) VALUES ('AUSDT', 'selected', 'emergency')"
            )
        )


def test_postgres_down_is_storage_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable):
            current_universe(down)
        with pytest.raises(StorageUnavailable):
            save_rescan(down, [])
    finally:
        down.dispose()
