"""Performance reports (spec 13.2): daily, weekly and monthly, in Markdown and self-contained HTML. Pure.

:mod:`~tapewatch.reports.content` derives the numbers from the period's outcomes, candidates and incidents;
:mod:`~tapewatch.reports.render` writes them as text; :mod:`~tapewatch.reports.svg` draws the charts.
"""

from __future__ import annotations

from tapewatch.reports.content import (
    REPORT_KINDS,
    Incident,
    OperatorEvent,
    ReportContent,
    ReportInput,
    ReportKind,
    build_content,
    lookback_start,
    period_of,
)
from tapewatch.reports.render import RenderedReport, render

__all__ = [
    "REPORT_KINDS",
    "Incident",
    "OperatorEvent",
    "RenderedReport",
    "ReportContent",
    "ReportInput",
    "ReportKind",
    "build_content",
    "lookback_start",
    "period_of",
    "render",
]
