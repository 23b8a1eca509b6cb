"""A report as Markdown and as one self-contained HTML page, with SVG charts. Pure.

Both formats are made from the same sections (heading, notes, a table, a chart), so they always say the
same thing. The HTML inlines its charts and style: no script, nothing fetched, it opens offline. The
Markdown links its charts as ``.svg`` files in a folder beside it (``chart_dir``); ``preview_markdown``
is the same text without the images, for places that cannot show local files (the Dagster UI).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

import msgspec

from tapewatch.metrics import MIN_SHARPE_SIGNAL_DAYS, Summary, SymbolTotal
from tapewatch.reports import svg
from tapewatch.reports.content import ReportContent
from tapewatch.reports.context import (
    Table,
    health_notes,
    incident_listing,
    operator_listing,
    operator_notes,
)

#: Most symbols shown in the per-symbol table and chart.
MAX_SYMBOLS = 20
#: A cell that reads as a number (or is empty / "—"): right-aligned in HTML; any other cell makes its column
#: text, left-aligned.
_NUMERIC_CELL = re.compile(r"[+\-−]?\d[\d.,]*( %| points)?|—|")

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 900px; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th.text, td.text { text-align: left; } th { background: #f6f8fa; }
.note { color: #57606a; } .empty { font-weight: bold; font-size: 1.1em; }
"""


class Section(msgspec.Struct, frozen=True, kw_only=True):
    heading: str
    notes: list[str] = msgspec.field(default_factory=list)
    table: Table | None = None
    chart: str | None = None


class RenderedReport(msgspec.Struct, frozen=True, kw_only=True):
    """The report in both formats, and the SVG of each chart by file stem (``equity_r`` → equity_r.svg)."""

    markdown: str
    preview_markdown: str
    html: str
    charts: dict[str, str]


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def fmt_points(rate: float | None) -> str:
    """A change of a rate in percentage points, signed: ``+5.0 points`` (a rate of 0.05)."""
    return "—" if rate is None else f"{rate * 100:+.1f} points"


def fmt_num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _summary_row(name: str, s: Summary) -> tuple[str, ...]:
    return (
        name,
        str(s.signals_generated),
        str(s.signals_triggered),
        str(s.wins),
        fmt_pct(s.win_rate),
        fmt_num(s.average_hold_minutes, 1),
        fmt_num(s.total_pnl_r, 2, sign=True),
        fmt_num(s.total_pnl_pct, 3, sign=True),
        fmt_num(s.sharpe_ratio),
        fmt_num(s.max_drawdown_r),
    )


def sections(c: ReportContent) -> list[Section]:
    """The report's sections, in order (the same for Markdown and HTML)."""
    head = [
        f"Signals created from {c.first_day.isoformat()} to {c.last_day.isoformat()} (UTC days of event time). "
        f"Generated {c.generated_at.strftime('%Y-%m-%d %H:%M')} UTC.",
    ]
    if c.signals == 0:
        head.append(
            "No signals in this period yet: nothing has finished, so there is no performance to show."
        )
    head += health_notes(c) + operator_notes(c)
    if still_open := c.open_signals - c.overdue_signals:
        head.append(
            f"{still_open} signal(s) of this period were still open and are not counted; "
            "re-run the report (or its partition) once they have finished."
        )
    if c.overdue_signals:
        head.append(
            f"{c.overdue_signals} signal(s) of this period are past their end without an outcome and are not "
            "counted: the live tracker did not finish them (the service was down) and the outcome batch has "
            "not yet (their 1-minute candles not fetched); materialize signal_outcomes for their days, then "
            "re-run the report."
        )
    summary_table: Table = (
        ("tier", "signals", "triggered", "wins", "win rate", "avg hold min", "total R", "total % of capital",
         "Sharpe", "max DD R"),
        [_summary_row("ALL", c.overall), *(_summary_row(t, s) for t, s in c.by_tier.items())],
    )  # fmt: skip
    out = [
        Section(heading="Summary", notes=head),
        Section(heading="Performance (spec 9.1)", notes=_sharpe_notes(c), table=summary_table),
    ]
    strategy = [f"Strategy efficiency (total R per signal): {fmt_num(c.strategy_efficiency, 3, sign=True)}"]
    if c.kind == "weekly":
        strategy.append(f"Win-rate trend: {fmt_points(c.win_rate_trend)} per week")
        strategy.append(f"Mean-quality trend: {fmt_num(c.quality_trend, 2, sign=True)} points per week")
    out.append(_best_and_worst(c, strategy))
    out.append(Section(heading="Equity curve", notes=["Cumulative P&L in R, signals in the order they ended."],
                       chart="equity_r"))  # fmt: skip
    out.append(
        Section(
            heading="Win rate by tier",
            table=(
                ("tier", "triggered", "win rate"),
                [(t, str(s.signals_triggered), fmt_pct(s.win_rate)) for t, s in c.by_tier.items()],
            ),
            chart="win_rate_tier",
        )
    )
    out.append(_by_symbol(c))
    out.append(
        Section(
            heading="Quality vs outcome",
            notes=["Each dot is a triggered signal: its quality score and its P&L in R."],
            table=(
                ("quality", "signals", "win rate", "mean R"),
                [
                    (q.label, str(q.signals), fmt_pct(q.win_rate), fmt_num(q.mean_r, 3, True))
                    for q in c.quality
                ],
            ),
            chart="quality_vs_outcome",
        )
    )
    out.append(
        Section(
            heading="Signal counts and rejection reasons",
            notes=[
                "Candidates that passed the required conditions, by fate: 'signal' or why it was rejected."
            ]
            + ([] if c.fates else ["No candidates in this period."]),
            table=(("fate", "candidates"), [(f, str(n)) for f, n in c.fates]) if c.fates else None,
            chart="fates" if c.fates else None,
        )
    )
    out.append(_incidents(c))
    out.append(_operators(c))
    out.append(
        Section(
            heading="Outcome checks",
            notes=[
                f"{c.disagreements} signal(s) of this period had a live outcome that the 1-minute candles "
                "contradict (the candle value is the one counted)."
            ],
        )
    )
    return out


def _incidents(c: ReportContent) -> Section:
    notes, table = incident_listing(c)
    return Section(heading="System incidents", notes=notes, table=table, chart="incidents" if table else None)


def _operators(c: ReportContent) -> Section:
    notes, table = operator_listing(c)
    return Section(heading="Operator actions and tuning changes", notes=notes, table=table)


def _sharpe_notes(c: ReportContent) -> list[str]:
    """How the Sharpe column is computed, and why it may be "—" (too few days with a triggered signal)."""
    window = (
        f"the daily R series over the {c.sharpe_days} days ending this day"
        if c.kind == "daily"
        else "the daily R series over the period's days"
    )
    notes = [
        f"Sharpe: {window}, mean / stdev × √365; shown as — when fewer than {MIN_SHARPE_SIGNAL_DAYS} of those "
        "days have a triggered signal (of that tier), where it would only reflect how many days the window has."
    ]
    if c.signal_days < MIN_SHARPE_SIGNAL_DAYS:
        notes.append(
            f"Only {c.signal_days} day(s) with a triggered signal in the Sharpe window: no Sharpe ratio yet."
        )
    return notes


def _best_and_worst(c: ReportContent, notes: list[str]) -> Section:
    """Winners (total R > 0) and losers (< 0) side by side; "none" for an empty side, no table if both are."""
    heading = "Best and worst symbols"
    if not c.best_symbols and not c.worst_symbols:
        return Section(
            heading=heading, notes=[*notes, "Best and worst symbols: none (no symbol above or below 0 R)."]
        )
    rows: list[tuple[str, ...]] = [
        (
            str(i + 1),
            b.symbol if b else ("none" if i == 0 else ""),
            fmt_num(b.total_r, 2, sign=True) if b else "",
            w.symbol if w else ("none" if i == 0 else ""),
            fmt_num(w.total_r, 2, sign=True) if w else "",
        )
        for i, (b, w) in enumerate(_pairs(c.best_symbols, c.worst_symbols))
    ]
    return Section(
        heading=heading,
        notes=[*notes, "Best: total R above 0; worst: below 0 (a symbol is never in both)."],
        table=(("rank", "best", "R", "worst", "R"), rows),
    )


def _by_symbol(c: ReportContent) -> Section:
    """The per-symbol table, cut to the :data:`MAX_SYMBOLS` with the most signals (said when cut)."""
    heading = "Win rate by symbol"
    if not c.by_symbol:
        return Section(
            heading=heading, notes=["By symbol: none (no finished signals)."], chart="win_rate_symbol"
        )
    notes: list[str] = []
    if len(c.by_symbol) > MAX_SYMBOLS:
        notes.append(f"The {MAX_SYMBOLS} of {len(c.by_symbol)} symbols with the most signals.")
    rows: list[tuple[str, ...]] = [
        (r.symbol, str(r.signals), str(r.triggered), fmt_pct(r.win_rate), fmt_num(r.total_r, 2, True))
        for r in c.by_symbol[:MAX_SYMBOLS]
    ]
    return Section(
        heading=heading,
        notes=notes,
        table=(("symbol", "signals", "triggered", "win rate", "total R"), rows),
        chart="win_rate_symbol",
    )


def _pairs(
    a: Sequence[SymbolTotal], b: Sequence[SymbolTotal]
) -> list[tuple[SymbolTotal | None, SymbolTotal | None]]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(n)]


def charts(c: ReportContent) -> dict[str, str]:
    """The SVG of each chart the sections name."""
    return {
        "equity_r": svg.line_chart(c.equity_r, "Equity curve (R)", x_label="finished signals", y_label="R"),
        "win_rate_tier": svg.bar_chart(
            [(t, s.win_rate) for t, s in c.by_tier.items() if s.win_rate is not None],
            "Win rate by tier",
            fmt=fmt_pct,
            max_value=1.0,
        ),
        "win_rate_symbol": svg.bar_chart(
            [(r.symbol, r.win_rate) for r in c.by_symbol[:MAX_SYMBOLS] if r.win_rate is not None],
            "Win rate by symbol",
            fmt=fmt_pct,
            max_value=1.0,
        ),
        "quality_vs_outcome": svg.scatter_chart(
            c.quality_points, "Quality vs outcome", x_label="quality score", y_label="P&L (R)"
        ),
        "fates": svg.bar_chart(
            [(f, float(n)) for f, n in c.fates], "Candidates by fate", fmt=lambda v: f"{v:.0f}"
        ),
        "incidents": svg.bar_chart(
            [(k, float(n)) for k, n in c.incident_counts], "Incidents by kind", fmt=lambda v: f"{v:.0f}"
        ),
    }


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(c: ReportContent, parts: list[Section], chart_dir: str | None) -> str:
    lines = [f"# {c.title}", ""]
    for s in parts:
        lines += [f"## {s.heading}", ""]
        for note in s.notes:
            lines += [note, ""]
        if s.table is not None:
            header, rows = s.table
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
            lines.append("")
        if s.chart is not None and chart_dir is not None:
            lines += [f"![{s.heading}]({chart_dir}/{s.chart}.svg)", ""]
    return "\n".join(lines)


def _html(c: ReportContent, parts: list[Section], svgs: dict[str, str]) -> str:
    body = [f"<h1>{escape(c.title)}</h1>"]
    for s in parts:
        body.append(f"<h2>{escape(s.heading)}</h2>")
        for note in s.notes:
            cls = "empty" if note.startswith("No signals") else "note"
            body.append(f'<p class="{cls}">{escape(note)}</p>')
        if s.table is not None:
            body.append(_html_table(s.table))
        if s.chart is not None:
            body.append(f'<figure id="chart-{s.chart}">{svgs[s.chart]}</figure>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>tapewatch — {escape(c.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _text_columns(table: Table) -> list[bool]:
    """Per column, whether it holds text (any cell that does not read as a number): left-aligned."""
    header, rows = table
    return [any(not _NUMERIC_CELL.fullmatch(row[i]) for row in rows) for i in range(len(header))]


def _html_table(table: Table) -> str:
    """The table as HTML, text columns left-aligned and number columns right-aligned."""
    header, rows = table
    text = _text_columns(table)

    def cell(tag: str, i: int, value: str) -> str:
        cls = ' class="text"' if text[i] else ""
        return f"<{tag}{cls}>{escape(value)}</{tag}>"

    head = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", i, x) for i, x in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def render(content: ReportContent, chart_dir: str) -> RenderedReport:
    """The report in Markdown (charts linked from ``chart_dir``), preview Markdown (no images) and HTML."""
    parts = sections(content)
    svgs = charts(content)
    used = {s.chart for s in parts if s.chart is not None}
    return RenderedReport(
        markdown=_markdown(content, parts, chart_dir),
        preview_markdown=_markdown(content, parts, None),
        html=_html(content, parts, svgs),
        charts={name: text for name, text in svgs.items() if name in used},
    )


__all__ = ["RenderedReport", "Section", "charts", "fmt_num", "fmt_pct", "fmt_points", "render", "sections"]
