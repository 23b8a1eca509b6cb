"""Reports from a fixed set of signals: the numbers by hand, charts inline, offline HTML, empty periods."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from xml.etree import ElementTree

import msgspec
import pytest

from tapewatch.reports import (
    Incident,
    OperatorEvent,
    ReportInput,
    build_content,
    lookback_start,
    period_of,
    render,
)
from tapewatch.reports.svg import bar_chart, line_chart, scatter_chart
from tests.tapewatch.outcome_helpers import MONDAY, SCENARIOS, absolute, make_signal, scenario_outcome, track
from tests.tapewatch.test_metrics import H, fixed_set

DAY = date(2024, 3, 4)
NOW = datetime(2024, 3, 5, 0, 10, tzinfo=UTC)
GAP = Incident(
    source="feed",
    kind="gap",
    symbol="BTCUSDT",
    detail="pu 5 != 4 | resync",
    started=datetime(2024, 3, 4, 2, tzinfo=UTC),
)
PAUSE = Incident(
    source="health",
    kind="data_quality",
    detail="spread z 4.1; action: signalling paused",
    started=datetime(2024, 3, 4, 6, tzinfo=UTC),
    ended=datetime(2024, 3, 4, 6, 5, tzinfo=UTC),
)


def daily_input(**changes: object) -> ReportInput:
    base: dict[str, object] = {
        "kind": "daily",
        "first_day": DAY,
        "end_day": date(2024, 3, 5),
        "generated_at": NOW,
        "outcomes": tuple(fixed_set()),
        "open_signals": 1,
        "fates": {"signal": 5, "cooldown": 2, "low_quality": 7},
        "incidents": (PAUSE, GAP),
        "disagreements": 1,
    }
    base.update(changes)
    return ReportInput(**base)  # type: ignore[arg-type]


def test_content_by_hand() -> None:
    c = build_content(daily_input())
    assert c.title == "Daily report — 2024-03-04 (UTC)"
    assert (c.signals, c.open_signals, c.disagreements) == (5, 1, 1)
    assert c.overall.total_pnl_r == pytest.approx(-0.1002)
    assert c.overall.win_rate == pytest.approx(0.6)
    # signals in the order they ended: win, loss, break-even, expiry, same-candle stop
    assert c.equity_r == pytest.approx([1.39925, 0.29975, 0.6995, 0.9993, -0.1002])
    by_symbol = {r.symbol: r for r in c.by_symbol}
    assert by_symbol["BTCUSDT"].signals == 2 and by_symbol["BTCUSDT"].win_rate == 1.0
    assert by_symbol["BTCUSDT"].total_r == pytest.approx(1.799)
    assert c.by_symbol[0].symbol == "BTCUSDT"  # most signals first
    buckets = {(q.low, q.high): q for q in c.quality}
    assert buckets[(50, 60)].signals == 1 and buckets[(50, 60)].mean_r == pytest.approx(-1.0995)
    assert buckets[(80, 90)].signals == 3 and buckets[(80, 90)].win_rate == 1.0
    assert buckets[(90, 100)].signals == 0 and buckets[(90, 100)].win_rate is None
    assert c.strategy_efficiency == pytest.approx(-0.1002 / 5)
    assert [s.symbol for s in c.best_symbols] == ["BTCUSDT", "SOLUSDT"]  # winners only
    assert c.fates == [("signal", 5), ("low_quality", 7), ("cooldown", 2)]  # 'signal' first, then by count
    assert [i.kind for i in c.incidents] == ["gap", "data_quality"]  # by start time
    assert c.incident_counts == [("feed: gap", 1), ("health: data_quality", 1)]


def test_markdown_and_html_say_the_same_numbers() -> None:
    r = render(build_content(daily_input()), chart_dir="2024-03-04")
    for text in (r.markdown, r.html):
        assert "Daily report — 2024-03-04 (UTC)" in text
        assert "60.0 %" in text and "-0.10" in text and "1.50" in text  # win rate, total R, max drawdown
        assert "1 signal(s) of this period were still open" in text
        assert "low_quality" in text and "data_quality" in text
    assert "| ALL | 5 | 5 | 3 | 60.0 % | 15.0 | -0.10 | -0.050 | — | 1.50 |" in r.markdown  # 1 day: no Sharpe
    assert "pu 5 != 4 \\| resync" in r.markdown  # a pipe in a cell does not break the table


def test_html_is_self_contained_and_its_charts_parse() -> None:
    r = render(build_content(daily_input()), chart_dir="2024-03-04")
    html = r.html
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert not re.search(r"\b(src|href)=", html)  # nothing is fetched: it opens offline
    assert re.findall(r"https?://[^\s\"']+", html) == ["http://www.w3.org/2000/svg"] * html.count("<svg")
    assert set(r.charts) == {"equity_r", "win_rate_tier", "win_rate_symbol", "quality_vs_outcome", "fates",
                             "incidents"}  # fmt: skip
    for name, svg in r.charts.items():
        root = ElementTree.fromstring(svg)  # well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg", name
        assert f'id="chart-{name}"' in html
    assert r.charts["equity_r"].count("<polyline") == 1
    assert r.charts["quality_vs_outcome"].count("<circle") == 5  # every triggered signal


def test_markdown_links_its_charts_and_the_preview_does_not() -> None:
    r = render(build_content(daily_input()), chart_dir="2024-03-04")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", r.markdown)
    assert sorted(links) == sorted(f"2024-03-04/{name}.svg" for name in r.charts)
    assert "![" not in r.preview_markdown
    shown = [line for line in r.markdown.splitlines() if line and not line.startswith("![")]
    assert [line for line in r.preview_markdown.splitlines() if line] == shown


def test_an_empty_period_gives_a_report_that_says_so() -> None:
    data = daily_input(outcomes=(), open_signals=0, fates={}, incidents=(), disagreements=0)
    c = build_content(data)
    assert c.signals == 0 and c.equity_r == [] and c.overall.win_rate is None
    r = render(c, chart_dir="2024-03-04")
    for text in (r.markdown, r.html):
        assert "No signals in this period yet" in text
        assert "No candidates in this period." in text
        assert "No system incidents in this period." in text
    assert "no data" in r.charts["equity_r"]
    assert set(r.charts) == {"equity_r", "win_rate_tier", "win_rate_symbol", "quality_vs_outcome"}


def test_weekly_report_has_trends_and_monthly_has_best_symbols() -> None:
    week = build_content(
        ReportInput(kind="weekly", first_day=DAY, end_day=date(2024, 3, 11), generated_at=NOW,
                    outcomes=tuple(fixed_set()) + tuple(fixed_set(MONDAY - 7 * 86_400_000)))
    )  # fmt: skip
    assert week.title == "Weekly report — 2024-W10 (2024-03-04 to 2024-03-10, UTC)"
    assert week.signals == 5
    assert week.win_rate_trend == pytest.approx(0.0)  # 60 % both weeks
    assert week.quality_trend == pytest.approx(0.0)
    assert "Win-rate trend: +0.0 points per week" in render(week, "2024-03-04").markdown
    month = build_content(
        ReportInput(kind="monthly", first_day=date(2024, 3, 1), end_day=date(2024, 4, 1), generated_at=NOW,
                    outcomes=tuple(fixed_set()))
    )  # fmt: skip
    assert month.title == "Monthly report — 2024-03 (UTC)"
    assert [s.symbol for s in month.worst_symbols] == ["ETHUSDT", "XRPUSDT"]  # losers only
    assert month.win_rate_trend is None


def test_unfinished_outcomes_are_refused() -> None:
    sig = make_signal()
    still_open = track(sig, absolute(sig, SCENARIOS["win"])[:3])  # TP1 reached, TP2 not yet
    assert not still_open.finished
    with pytest.raises(ValueError, match="metrics need finished outcomes"):
        build_content(daily_input(outcomes=(still_open,)))


def test_periods_and_lookback() -> None:
    wednesday = date(2024, 3, 6)
    assert period_of("daily", wednesday) == (wednesday, date(2024, 3, 7))
    assert period_of("weekly", wednesday) == (date(2024, 3, 4), date(2024, 3, 11))
    assert period_of("monthly", date(2024, 12, 31)) == (date(2024, 12, 1), date(2025, 1, 1))
    assert lookback_start("daily", DAY, sharpe_days=30) == date(2024, 2, 4)
    assert lookback_start("weekly", DAY, trend_weeks=8) == date(2024, 1, 15)
    assert lookback_start("monthly", date(2024, 3, 1)) == date(2024, 3, 1)
    with pytest.raises(ValueError, match="report kind"):
        period_of("yearly", DAY)  # type: ignore[arg-type]


def test_bad_report_input_is_refused() -> None:
    with pytest.raises(ValueError, match="report kind"):
        daily_input(kind="hourly")
    with pytest.raises(ValueError, match="period is empty"):
        daily_input(end_day=DAY)


def test_svg_charts_escape_labels_and_handle_edge_values() -> None:
    svg = bar_chart([("<b>&", 0.5), ("neg", -1.0)], "Rates & <things>", max_value=1.0)
    root = ElementTree.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Rates & <things>" in texts and "<b>&" in texts
    assert 'width="0.0"' in svg  # a negative value draws no bar
    flat = line_chart([0.0, 0.0], "Flat", x_label="n", y_label="R")
    ElementTree.fromstring(flat)
    nan = scatter_chart([(float("nan"), 1.0)], "NaN only", x_label="q", y_label="R")
    assert "no data" in nan


def test_a_signal_below_quality_50_is_in_a_band_of_its_own() -> None:
    # quality_low_min lowered to 40: the quality-70 loss of the fixed set scored 45 instead
    outcomes = [
        msgspec.structs.replace(o, signal=msgspec.structs.replace(o.signal, quality_score=45))
        if o.signal.quality_score == 70
        else o
        for o in fixed_set()
    ]
    c = build_content(daily_input(outcomes=tuple(outcomes)))
    assert [q.label for q in c.quality] == ["<50", "50–59", "60–69", "70–79", "80–89", "90–100"]
    assert sum(q.signals for q in c.quality) == c.signals == 5  # none dropped
    assert (c.quality[0].signals, c.quality[0].win_rate) == (1, 0.0)
    markdown = render(c, "2024-03-04").markdown
    assert "| <50 | 1 | 0.0 % |" in markdown and "| 50–59 |" in markdown and "50–60" not in markdown
    # without such a signal the band is not shown
    assert build_content(daily_input()).quality[0].label == "50–59"


def test_the_win_rate_trend_is_signed_in_points() -> None:
    from tapewatch.reports.render import fmt_points

    assert (fmt_points(0.05), fmt_points(-0.05), fmt_points(None)) == ("+5.0 points", "-5.0 points", "—")


def _markdown_table(markdown: str, heading: str) -> list[str]:
    """The table lines of the section ``heading`` (header first); empty when the section has none."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_best_and_worst_are_winners_and_losers_and_an_empty_side_says_none() -> None:
    losers = daily_input(outcomes=tuple(o for o in fixed_set() if o.pnl_r < 0))
    r = render(build_content(losers), "2024-03-04")
    assert _markdown_table(r.markdown, "Best and worst symbols")[2:] == [
        "| 1 | none |  | ETHUSDT | -1.10 |",  # a losing symbol is never listed as "best"
        "| 2 |  |  | XRPUSDT | -1.10 |",
    ]
    empty = render(build_content(daily_input(outcomes=())), "2024-03-04")
    for text in (empty.markdown, empty.html):
        assert "Best and worst symbols: none" in text and "By symbol: none" in text
    # no header-only tables
    assert _markdown_table(empty.markdown, "Best and worst symbols") == []
    assert _markdown_table(empty.markdown, "Win rate by symbol") == []
    assert "<th>rank</th>" not in empty.html and "<th>win rate</th><th>total R</th>" not in empty.html


def test_the_per_symbol_table_says_how_it_was_cut() -> None:
    many = tuple(
        scenario_outcome("win", MONDAY + i * 60_000, symbol=f"S{i:02d}USDT") for i in range(25)
    ) + tuple(scenario_outcome("loss", MONDAY + H, symbol="S24USDT") for _ in range(1))
    r = render(build_content(daily_input(outcomes=many)), "2024-03-04")
    assert "The 20 of 25 symbols with the most signals." in r.markdown
    rows = _markdown_table(r.markdown, "Win rate by symbol")[2:]
    assert len(rows) == 20 and rows[0].startswith("| S24USDT | 2 |")  # the one with two signals first
    few = render(build_content(daily_input()), "2024-03-04")
    assert "symbols with the most signals" not in few.markdown


def test_summary_columns_and_the_sharpe_needs_five_days_with_signals() -> None:
    r = render(build_content(daily_input()), "2024-03-04")
    header = _markdown_table(r.markdown, "Performance (spec 9.1)")[0]
    assert "| total % of capital |" in header and "| total % |" not in header
    assert "Only 1 day(s) with a triggered signal in the Sharpe window: no Sharpe ratio yet." in r.markdown
    # five days with signals in the week: a ratio, and no "only" note
    week = tuple(o for d in (0, 1, 2, 4, 6) for o in fixed_set(MONDAY + d * 86_400_000))
    c = build_content(
        ReportInput(kind="weekly", first_day=DAY, end_day=date(2024, 3, 11), generated_at=NOW, outcomes=week)
    )
    assert c.signal_days == 5 and c.overall.sharpe_ratio is not None
    text = render(c, "2024-03-04").markdown
    all_row = _markdown_table(text, "Performance (spec 9.1)")[2]
    assert all_row.split(" | ")[8] == f"{c.overall.sharpe_ratio:.2f}"
    assert "no Sharpe ratio yet" not in text
    # days whose signals all expired untriggered add 0 R, as empty days: they do not count towards the five
    idle = tuple(scenario_outcome("untriggered", MONDAY + d * 86_400_000) for d in (1, 2, 4, 6))
    c = build_content(
        ReportInput(
            kind="weekly",
            first_day=DAY,
            end_day=date(2024, 3, 11),
            generated_at=NOW,
            outcomes=(*fixed_set(MONDAY), *idle),
        )
    )
    assert c.signal_days == 1 and c.overall.sharpe_ratio is None
    assert "Only 1 day(s) with a triggered signal" in render(c, "2024-03-04").markdown


def test_html_aligns_text_columns_left_and_numbers_right() -> None:
    html = render(build_content(daily_input()), "2024-03-04").html
    assert (
        '<tr><th>rank</th><th class="text">best</th><th>R</th><th class="text">worst</th><th>R</th></tr>'
        in html
    )
    assert '<td class="text">BTCUSDT</td><td>+1.80</td>' in html
    assert '<td class="text">feed</td><td class="text">gap</td>' in html
    assert "th.text, td.text { text-align: left; }" in html


def test_incident_times_are_labelled_wall_clock_and_show_an_event_time() -> None:
    stale = Incident(
        source="feed",
        kind="stale",
        started=datetime(2024, 3, 3, 23, tzinfo=UTC),  # crossed the period's start
        event_time=datetime(2024, 3, 4, 7, 30, tzinfo=UTC),  # the simulator's clock ran ahead
    )
    r = render(build_content(daily_input(incidents=(stale,))), "2024-03-04")
    assert "overlap the period's days by wall-clock time (UTC)" in r.markdown
    assert _markdown_table(r.markdown, "System incidents")[2] == (
        "| 2024-03-03 23:00:00 | open | 2024-03-04 07:30:00 | feed | stale |  |  |"
    )


def test_a_pause_is_in_the_summary_and_listed_however_many_feed_incidents_came_first() -> None:
    """The reports audit: a day of 40 resyncs, then a 14:00-17:30 data-quality pause: only the first 30
    incidents by time were listed, and the pause was in neither the Markdown nor the summary."""
    resyncs = tuple(
        Incident(
            source="feed", kind="resync", symbol="ETHUSDT", started=datetime(2024, 3, 4, 1, i, tzinfo=UTC)
        )
        for i in range(40)
    )
    pause = Incident(
        source="health",
        kind="data_quality",
        detail="overall relative_message_rate 0.1 is -9.0 sd; action: signalling paused",
        started=datetime(2024, 3, 4, 14, tzinfo=UTC),
        ended=datetime(2024, 3, 4, 17, 30, tzinfo=UTC),
    )
    still = Incident(  # switched to the backup feed at 23:30, not back when the report was made at 00:10
        source="health", kind="api_connectivity", started=datetime(2024, 3, 4, 23, 30, tzinfo=UTC)
    )
    r = render(build_content(daily_input(incidents=(*resyncs, pause, still))), "2024-03-04")
    for text in (r.markdown, r.preview_markdown):
        assert "Signalling paused by the data-quality check (feed anomalies): 1 time(s), 3 h 30 min" in text
        assert (
            "the backup feed switched on when the websockets failed): 1 time(s), 30 min within the period"
            in text
        )
        assert "(1 still in force when the report was made)" in text
    rows = _markdown_table(r.markdown, "System incidents")
    assert any("| health | data_quality |" in row and "2024-03-04 17:30:00" in row for row in rows)
    assert sum("| feed | resync |" in row for row in rows) == 28  # 30 listed: both health incidents and 28
    assert "every health incident (2) and the first 28 of 40 feed incidents" in r.markdown
    assert "By kind: feed: resync 40, health: api_connectivity 1, health: data_quality 1." in r.markdown


def test_signals_past_their_end_without_an_outcome_are_not_called_open() -> None:
    """The reports audit: a signal the live tracker missed and whose candles were never fetched was "still
    open ... re-run once they have finished" two days later: it never finishes on its own."""
    r = render(build_content(daily_input(open_signals=3, overdue_signals=2)), "2024-03-04")
    assert "1 signal(s) of this period were still open" in r.markdown
    assert "2 signal(s) of this period are past their end without an outcome" in r.markdown
    assert "materialize signal_outcomes for their days" in r.markdown
    only = render(build_content(daily_input(open_signals=2, overdue_signals=2)), "2024-03-04").markdown
    assert "still open" not in only and "2 signal(s) of this period are past their end" in only


def test_an_operator_s_pauses_and_tuning_changes_are_said_in_the_summary_and_listed() -> None:
    """The reports audit: a day paused by an operator for hours, or traded under a new tuning from noon, gave
    a report that never said so (fewer signals, other parameters, no word why)."""
    events = (
        OperatorEvent(
            at=datetime(2024, 3, 4, 9, tzinfo=UTC), action="pause", detail="maintenance", actor="ann"
        ),
        OperatorEvent(at=datetime(2024, 3, 4, 9, 30, tzinfo=UTC), action="resume", actor="ann"),
        OperatorEvent(at=datetime(2024, 3, 4, 10, tzinfo=UTC), action="pause", actor="bob", ok=False),
        OperatorEvent(
            at=datetime(2024, 3, 4, 12, tzinfo=UTC),
            action="tuning apply",
            detail="to proposal 7: min_large_trades=4",
            actor="ann",
        ),
        OperatorEvent(at=datetime(2024, 3, 4, 22, tzinfo=UTC), action="pause", actor="ann"),  # never lifted
    )
    r = render(build_content(daily_input(operator_events=events)), "2024-03-04")
    # 30 min, then 22:00 to the period's end (the report was made after it): 2 h 30 min; the failed one not
    assert "Signalling paused by an operator: 2 time(s), 2 h 30 min within the period" in r.markdown
    assert "(still paused at the period's end)" in r.markdown
    assert (
        "Tuning changed 1 time(s) during the period: apply to proposal 7: min_large_trades=4 at 2024-03-04 12:00"
        in (r.markdown)
    )
    rows = _markdown_table(r.markdown, "Operator actions and tuning changes")
    assert rows[2] == "| 2024-03-04 09:00:00 | pause | maintenance | ann | ok |"
    assert "| failed |" in rows[4] and len(rows) == 2 + len(events)
    # a pause in force when the day began counts from midnight
    carried = render(
        build_content(daily_input(operator_events=events[1:2], paused_at_start=True)), "2024-03-04"
    ).markdown
    assert "1 time(s) (one already in force when the period began), 9 h 30 min within the period" in carried
    quiet = render(build_content(daily_input()), "2024-03-04").markdown
    assert "No operator action or tuning change in this period." in quiet and "by an operator" not in quiet
