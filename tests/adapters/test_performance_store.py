"""performance_store against a real PostgreSQL: batch outcomes, metrics rows, report inputs, stored reports."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tapewatch import metrics
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import (
    StoredReport,
    disagreement_count,
    entries_to_settle,
    fate_counts,
    finished_outcomes,
    get_report,
    incidents,
    list_reports,
    load_daily,
    load_weekly,
    operator_events,
    save_batch,
    save_daily,
    save_report,
    save_weekly,
    unfinished_counts,
)
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.errors import StorageUnavailable
from tapewatch.outcome_batch import Disagreement
from tapewatch.outcome_models import OutcomeState
from tests.adapters.signal_builders import MINUTE, T0, candidate, entry, loss, triggered, win

DAY0 = T0 - T0 % 86_400_000  # 2024-01-01 00:00 UTC
D = date(2024, 1, 1)


def _stored(db: Database) -> dict[str, object]:
    """Three ENTRY signals on 2024-01-01: one won (live), one still open (live), one never followed."""
    store = SignalStore(db)
    won, running, missed = (
        entry("BTCUSDT", T0),
        entry("ETHUSDT", T0 + MINUTE),
        entry("SOLUSDT", T0 + 2 * MINUTE),
    )
    store.save_signals([won, running, missed])
    store.save_outcome(win(won))
    store.save_outcome(triggered(running))
    return {"won": won, "running": running, "missed": missed}


def test_entries_to_settle_skips_finished_batch_outcomes_and_other_days(db: Database) -> None:
    s = _stored(db)
    SignalStore(db).save_signal(entry("XRPUSDT", DAY0 + 86_400_000 + 5))  # the next day
    pending = entries_to_settle(db, DAY0, DAY0 + 86_400_000)
    assert [p.signal.symbol for p in pending] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    live = {p.signal.symbol: p.live for p in pending}
    assert live["SOLUSDT"] is None
    assert live["BTCUSDT"] is not None and live["BTCUSDT"].state is OutcomeState.TP2
    assert live["ETHUSDT"] is not None and not live["ETHUSDT"].finished

    # the batch outcome of BTCUSDT replaces the live one and is then final: not pending any more
    batch = loss(s["won"])  # type: ignore[arg-type]
    found = Disagreement(
        signal_id=batch.signal.signal_id,
        symbol="BTCUSDT",
        event_time=batch.signal.created,
        live_state=OutcomeState.TP2,
        batch_state=OutcomeState.STOPPED,
        live_pnl_r=1.4,
        batch_pnl_r=batch.pnl_r,
    )
    assert save_batch(db, [batch], [found]) == 1
    stored = SignalStore(db).get_outcome(batch.signal.signal_id)
    assert stored is not None and stored[1] == "batch" and stored[0].state is OutcomeState.STOPPED
    assert [p.signal.symbol for p in entries_to_settle(db, DAY0, DAY0 + 86_400_000)] == ["ETHUSDT", "SOLUSDT"]
    assert disagreement_count(db, DAY0, DAY0 + 86_400_000) == 1
    assert disagreement_count(db, DAY0 + 86_400_000, DAY0 + 2 * 86_400_000) == 0
    # a live write never replaces the batch value
    assert not SignalStore(db).save_outcome(win(s["won"]))  # type: ignore[arg-type]


def test_finished_outcomes_and_unfinished_counts(db: Database) -> None:
    s = _stored(db)
    done = finished_outcomes(db, DAY0, DAY0 + 86_400_000)
    assert [o.signal.signal_id for o in done] == [s["won"].signal_id]  # type: ignore[attr-defined]
    tier = s["won"].priority  # type: ignore[attr-defined]
    counts = unfinished_counts(db, DAY0, DAY0 + 86_400_000)
    assert set(counts) == {"HIGH", "MEDIUM", "LOW"}
    assert sum(counts.values()) == 2 and counts[tier] == 2  # the open one and the never-followed one
    assert finished_outcomes(db, DAY0 + 86_400_000, DAY0 + 2 * 86_400_000) == []
    # past their end: created before the cut-off of their tier (now − response window − hold bound)
    cut = dict.fromkeys(("HIGH", "MEDIUM", "LOW"), T0 + 90_000)  # after ETHUSDT's creation, before SOLUSDT's
    overdue = unfinished_counts(db, DAY0, DAY0 + 86_400_000, created_before=cut)
    assert overdue[tier] == 1 and sum(overdue.values()) == 1  # the open ETHUSDT one; not SOLUSDT yet
    later = unfinished_counts(db, DAY0, DAY0 + 86_400_000, created_before={**cut, tier: T0 + 10 * MINUTE})
    assert later[tier] == 2
    assert sum(unfinished_counts(db, DAY0, DAY0 + 86_400_000, created_before={**cut, tier: T0}).values()) == 0


def test_daily_and_weekly_rows_round_trip_and_are_replaced(db: Database) -> None:
    s = _stored(db)
    outcomes = finished_outcomes(db, DAY0, DAY0 + 86_400_000)
    daily = metrics.daily_metrics(outcomes, D)
    save_daily(db, daily, {"HIGH": 2, "MEDIUM": 0, "LOW": 0})
    save_daily(db, daily, {"HIGH": 1, "MEDIUM": 0, "LOW": 0})  # a re-run replaces the day
    rows = load_daily(db, D)
    assert set(rows) == {"ALL", "HIGH", "MEDIUM", "LOW"}
    tier = s["won"].priority  # type: ignore[attr-defined]
    assert rows["ALL"]["signals_generated"] == 1 and rows["ALL"]["signals_open"] == 1
    assert rows[tier]["wins"] == 1 and rows[tier]["win_rate"] == 1.0
    assert rows["ALL"]["total_pnl_r"] == pytest.approx(daily.overall.total_pnl_r)
    assert rows["LOW"]["win_rate"] is None and rows["LOW"]["signals_generated"] == 0
    assert load_daily(db, D + timedelta(days=1)) == {}

    weekly = metrics.weekly_metrics(outcomes, D)  # 2024-01-01 is a Monday
    save_weekly(db, weekly, 2)
    save_weekly(db, weekly, 1)
    row = load_weekly(db, D)
    assert row is not None and row["signals_open"] == 1
    assert row["best_symbols"] == [
        {"symbol": "BTCUSDT", "signals": 1, "total_r": pytest.approx(weekly.overall.total_pnl_r)}
    ]
    assert row["strategy_efficiency"] == pytest.approx(weekly.overall.total_pnl_r)
    assert row["by_tier"][tier]["signals_generated"] == 1
    assert load_weekly(db, D + timedelta(days=7)) is None


def test_a_weekly_row_must_start_on_a_monday(db: Database) -> None:
    weekly = metrics.weekly_metrics([], D + timedelta(days=1))
    with pytest.raises(sa_exc.IntegrityError, match="weekly_metrics_monday_check"):
        save_weekly(db, weekly, 0)


def test_fate_counts(db: Database) -> None:
    SignalStore(db).save_candidates(
        [candidate("BTCUSDT", T0), candidate("ETHUSDT", T0, "cooldown"), candidate("SOLUSDT", T0, "cooldown"),
         candidate("XRPUSDT", DAY0 + 86_400_000, "paused")]
    )  # fmt: skip
    assert fate_counts(db, DAY0, DAY0 + 86_400_000) == {"cooldown": 2, "signal": 1}
    assert fate_counts(db, DAY0 - 86_400_000, DAY0) == {}


def _at(hour: int) -> datetime:
    return datetime(2024, 1, 1, hour, tzinfo=UTC)


def test_incidents_read_feed_and_health_tables(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO feed_incidents (symbol, kind, detail, recorded_at, resolved_at) VALUES "
                "('BTCUSDT', 'gap', 'pu mismatch', :a, :b), (NULL, 'reconnect', 'socket 1', :c, NULL), "
                "('ETHUSDT', 'stale', 'outside', :d, :d)"
            ),
            {"a": _at(3), "b": _at(3) + timedelta(seconds=2), "c": _at(5), "d": _at(0) - timedelta(hours=1)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO health_incidents (kind, reason, action, recovery, started_at, ended_at) VALUES "
                "('data_quality', 'spread z 4.2', 'signalling paused', 'signalling resumed', :s, :e)"
            ),
            {"s": _at(4), "e": _at(4) + timedelta(minutes=3)},
        )
    found = incidents(db, _at(0), _at(0) + timedelta(days=1))
    assert [(i.source, i.kind) for i in found] == [
        ("feed", "gap"),
        ("health", "data_quality"),
        ("feed", "reconnect"),
    ]
    gap, health, reconnect = found
    assert gap.symbol == "BTCUSDT" and gap.ended == _at(3) + timedelta(seconds=2)
    assert health.detail == "spread z 4.2; action: signalling paused; recovery: signalling resumed"
    assert reconnect.symbol is None and reconnect.ended is None


def test_incidents_crossing_the_period_start_or_still_open_are_listed(db: Database) -> None:
    """Overlap, not "started in": one that began the evening before and ended in the period, one still
    open since the day before, one ending exactly at the start; not one over before the period nor one
    starting at its end. A feed incident keeps its event time."""
    day_start, day_end = _at(0), _at(0) + timedelta(days=1)
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO feed_incidents (kind, detail, event_time, recorded_at, resolved_at) VALUES "
                "('gap', 'crosses', 1704066600000, :eve, :morning), ('stale', 'open', NULL, :eve, NULL), "
                "('gap', 'touches', NULL, :eve, :start), ('gap', 'before', NULL, :eve, :late_eve), "
                "('gap', 'after', NULL, :end, NULL)"
            ),
            {
                "eve": day_start - timedelta(hours=2),
                "late_eve": day_start - timedelta(seconds=1),
                "start": day_start,
                "morning": _at(1),
                "end": day_end,
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO health_incidents (kind, reason, action, started_at, ended_at) VALUES "
                "('api_connectivity', 'ping failed', 'alert', :eve, NULL)"
            ),
            {"eve": day_start - timedelta(days=3)},
        )
    found = incidents(db, day_start, day_end)
    assert sorted((i.source, i.detail.split(";")[0]) for i in found) == [
        ("feed", "crosses"),
        ("feed", "open"),
        ("feed", "touches"),
        ("health", "ping failed"),
    ]
    crosses = next(i for i in found if i.detail == "crosses")
    assert crosses.event_time == datetime(2023, 12, 31, 23, 50, tzinfo=UTC)
    assert all(i.event_time is None for i in found if i is not crosses)


def test_operator_events_read_the_dashboard_s_actions_and_the_tuning_applied(db: Database) -> None:
    with db.begin() as conn:
        proposal = conn.execute(
            sa.text(
                "INSERT INTO tuning_proposals (window_start, split_at, window_end, status, parameters, "
                "current_parameters, in_sample, out_of_sample, current_in_sample, current_out_of_sample) "
                "VALUES (0, 1, 2, 'proposed', '{}', '{}', '{}', '{}', '{}', '{}') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO operator_actions (action, detail, actor, result, error, recorded_at) VALUES "
                "('pause', 'night', 'ann', 'ok', '', :before), ('resume', '', 'ann', 'failed', 'redis down', :a), "
                "('rescan', 'run 1', 'bob', 'ok', '', :b), ('resume', '', 'ann', 'ok', '', :next_day), "
                # an apply from the dashboard: its action row and (below) its tuning record; then one refused
                "('apply_tuning', 'proposal ' || :p || ' (record 1)', 'cy', 'ok', '', :c), "
                "('apply_tuning', 'proposal 6', 'cy', 'failed', 'out of date', :d)"
            ),
            {
                "before": _at(0) - timedelta(hours=2),
                "a": _at(1),
                "b": _at(2),
                "c": _at(4),
                "d": _at(5),
                "p": str(proposal),
                "next_day": _at(0) + timedelta(days=1),
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO tuning_applications (action, proposal_id, parameters, actor, applied_at) "
                "VALUES ('rollback', NULL, '{}', 'ann', :t), "
                "('apply', :p, '{\"min_quality\": 65}', 'cy', :c)"
            ),
            {"t": _at(3), "c": _at(4), "p": proposal},
        )
    events, paused = operator_events(db, _at(0), _at(0) + timedelta(days=1))
    assert (
        paused
    )  # the pause of the evening before was in force at midnight (the failed resume lifted nothing)
    # the dashboard's apply is said once, by its tuning record (with what it changed); the refused one stays
    assert [(e.action, e.ok) for e in events] == [
        ("resume", False),
        ("rescan", True),
        ("tuning rollback", True),
        ("tuning apply", True),
        ("apply_tuning", False),
    ]
    assert events[2].detail == "to the settings' own values" and events[2].actor == "ann"
    assert events[3].detail == f"to proposal {proposal}: min_quality=65" and events[3].actor == "cy"
    later, paused_later = operator_events(db, _at(0) + timedelta(days=1), _at(0) + timedelta(days=2))
    assert [e.action for e in later] == ["resume"] and paused_later


def test_incidents_without_the_health_table_are_the_feed_ones(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("DROP TABLE health_incidents"))
        conn.execute(
            sa.text("INSERT INTO feed_incidents (kind, recorded_at) VALUES ('banned', :a)"), {"a": _at(1)}
        )
    assert [i.kind for i in incidents(db, _at(0), _at(23))] == ["banned"]


def _report(kind: str, period: str, start: date, end: date, signals: int = 3) -> StoredReport:
    return StoredReport(
        kind=kind,  # type: ignore[arg-type]
        period=period,
        period_start=start,
        period_end=end,
        markdown_path=f"/var/reports/{kind}/{period}.md",
        html_path=f"/var/reports/{kind}/{period}.html",
        markdown=f"# {kind} {period}",
        html=f"<h1>{kind} {period}</h1>",
        signals=signals,
    )


def test_reports_are_stored_listed_and_replaced(db: Database) -> None:
    first = save_report(db, _report("daily", "2024-01-01", D, D + timedelta(days=1)))
    save_report(db, _report("daily", "2024-01-02", D + timedelta(days=1), D + timedelta(days=2)))
    save_report(db, _report("weekly", "2024-01-01", D, D + timedelta(days=7)))
    again = save_report(db, _report("daily", "2024-01-01", D, D + timedelta(days=1), signals=9))
    assert again == first  # one row per (kind, period)

    listed = list_reports(db)
    assert [(r.kind, r.period) for r in listed] == [
        ("daily", "2024-01-02"),
        ("daily", "2024-01-01"),
        ("weekly", "2024-01-01"),
    ]
    assert [r.period for r in list_reports(db, "daily", limit=1)] == ["2024-01-02"]
    assert [r.kind for r in list_reports(db, "weekly")] == ["weekly"]
    got = get_report(db, "daily", "2024-01-01")
    assert got is not None and got.signals == 9 and got.html == "<h1>daily 2024-01-01</h1>"
    assert got.created_at is not None
    assert get_report(db, "monthly", "2024-01-01") is None


def test_list_reports_refuses_bad_arguments(db: Database) -> None:
    with pytest.raises(ValueError, match="daily, weekly or monthly"):
        list_reports(db, "yearly")
    with pytest.raises(ValueError, match="limit"):
        list_reports(db, limit=0)


def test_an_unreachable_server_is_storage_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    try:
        for call in (
            lambda: entries_to_settle(down, 0, 1),
            lambda: finished_outcomes(down, 0, 1),
            lambda: list_reports(down),
            lambda: get_report(down, "daily", "2024-01-01"),
        ):
            with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
                call()
    finally:
        down.dispose()
