"""The dashboard's reads on real PostgreSQL: server-side paging with whitelisted sort/filter, finished
signals, rejections, the operator-action log, and an unreachable server."""

from __future__ import annotations

import pytest

from tapewatch.adapters import dashboard_queries as q
from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import StorageUnavailable
from tests.adapters.signal_builders import T0
from tests.dashboard.support import DAY, closed_url, many_entries, seed_signals


def test_pages_cover_every_row_once_in_a_stable_order(db: Database) -> None:
    SignalStore(db).save_signals(list(many_entries(250)))
    ids: list[str] = []
    for start in range(0, 250, 100):
        page = q.signal_page(db, start, start + 100)
        assert page.total == 250
        ids += [row["signal_id"] for row in page.rows]
    assert len(ids) == len(set(ids)) == 250
    first = q.signal_page(db, 0, 3).rows
    assert [r["event_time"] for r in first] == sorted((r["event_time"] for r in first), reverse=True)
    assert first[0]["event_time"] == T0 + 249 * 1000
    assert first[0]["state"] == "WAITING"  # no outcome yet


def test_sort_and_filter_run_in_sql(db: Database) -> None:
    seed_signals(db)
    page = q.signal_page(
        db,
        0,
        10,
        sort_model=[{"colId": "pnl_r", "sort": "desc"}],
        filter_model={"symbol": {"filterType": "text", "type": "equals", "filter": "BTCUSDT"}},
    )
    assert page.total == 2
    assert {r["symbol"] for r in page.rows} == {"BTCUSDT"}
    assert all(r["state"] == "TP2" and r["pnl_r"] > 0 for r in page.rows)
    losers = q.signal_page(
        db, 0, 10, filter_model={"pnl_r": {"filterType": "number", "type": "lessThan", "filter": 0}}
    )
    assert [r["symbol"] for r in losers.rows] == ["ETHUSDT"]
    either = q.signal_page(
        db,
        0,
        10,
        filter_model={
            "symbol": {
                "operator": "OR",
                "conditions": [
                    {"filterType": "text", "type": "startsWith", "filter": "sol"},
                    {"filterType": "text", "type": "contains", "filter": "ETH"},
                ],
            }
        },
    )
    assert sorted(r["symbol"] for r in either.rows) == ["ETHUSDT", "SOLUSDT"]
    # a LIKE wildcard typed by the user is a character, not a pattern
    assert (
        q.signal_page(
            db, 0, 10, filter_model={"symbol": {"filterType": "text", "type": "contains", "filter": "%"}}
        ).total
        == 0
    )


@pytest.mark.parametrize(
    ("sort_model", "filter_model", "message"),
    [
        ([{"colId": "payload; DROP TABLE signals", "sort": "asc"}], None, "unknown column"),
        ([{"colId": "symbol", "sort": "sideways"}], None, "asc or desc"),
        (None, {"symbol": {"filterType": "number", "type": "equals", "filter": 1}}, "is text"),
        (None, {"pnl_r": {"filterType": "number", "type": "lessThan", "filter": "abc"}}, "needs a number"),
        (None, {"pnl_r": {"filterType": "date", "type": "equals", "filter": 1}}, "unsupported filter"),
        (None, {"symbol": {"filterType": "text", "type": "regex", "filter": "."}}, "unknown text filter"),
    ],
)
def test_bad_grid_requests_are_refused_with_a_reason(
    db: Database, sort_model, filter_model, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        q.signal_page(db, 0, 10, sort_model=sort_model, filter_model=filter_model)


def test_page_bounds_are_checked(db: Database) -> None:
    with pytest.raises(ValueError, match="start < end"):
        q.signal_page(db, 10, 10)
    with pytest.raises(ValueError, match="at most"):
        q.signal_page(db, 0, q.MAX_PAGE + 1)


def test_signal_counts(db: Database) -> None:
    seed_signals(db)
    assert q.signal_counts(db, 0) == {"total": 4, "finished": 3, "open": 1}
    assert q.signal_counts(db, T0 + DAY) == {"total": 0, "finished": 0, "open": 0}
    assert q.signal_counts(db, 0, T0 - 1) == {"total": 0, "finished": 0, "open": 0}  # none by then


def test_recently_finished(db: Database) -> None:
    assert q.recently_finished(db, 0) == []
    made = seed_signals(db)  # three finished (TP2 at +10 min, TP2, STOPPED at +3 min), one still open
    rows = q.recently_finished(db, 0)
    assert [(r["symbol"], r["state"]) for r in rows] == [
        ("ETHUSDT", "STOPPED"),
        ("BTCUSDT", "TP2"),
        ("BTCUSDT", "TP2"),
    ]
    assert rows[0]["signal_id"] == made["loss"].signal_id and rows[0]["realised_r"] < 0
    assert rows[0]["last_price"] == made["loss"].stop_loss  # the exit price
    # since: by exit time; limit: the last to finish
    assert [r["signal_id"] for r in q.recently_finished(db, rows[1]["exit_time"])] == [
        made["loss"].signal_id,
        made["win2"].signal_id,
    ]
    assert [r["signal_id"] for r in q.recently_finished(db, 0, limit=1)] == [made["loss"].signal_id]
    # until: none finished after it (a row dated past the page's clock is left out)
    before = q.recently_finished(db, 0, until_ms=rows[0]["exit_time"] - 1)
    assert made["loss"].signal_id not in [r["signal_id"] for r in before] and len(before) == 2
    with pytest.raises(ValueError, match="limit"):
        q.recently_finished(db, 0, limit=0)


def test_rejections_by_bucket_and_fate(db: Database) -> None:
    seed_signals(db)
    counts = q.rejection_counts(db, 0, T0 + DAY, 3_600_000)
    assert {(fate, n) for _, fate, n in counts} == {("signal", 1), ("cooldown", 1), ("correlation", 1)}
    assert all(b % 3_600_000 == 0 for b, _, _ in counts)
    with pytest.raises(ValueError, match="minute"):
        q.rejection_counts(db, 0, 1, 1000)


def test_operator_actions_are_recorded_newest_first(db: Database) -> None:
    q.record_action(db, "pause", actor="alice", client_addr="10.0.0.7", detail="news")
    q.record_action(db, "rescan", actor="bob", client_addr="10.0.0.8", error="Dagster down")
    newest, oldest = q.recent_actions(db)
    assert (newest.action, newest.result, newest.error, newest.actor) == (
        "rescan",
        "failed",
        "Dagster down",
        "bob",
    )
    assert (oldest.action, oldest.result, oldest.client_addr, oldest.detail) == (
        "pause",
        "ok",
        "10.0.0.7",
        "news",
    )


def test_unreachable_database_raises_storage_unavailable() -> None:
    db = Database(closed_url("postgresql"), connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
            q.signal_page(db, 0, 10)
    finally:
        db.dispose()
