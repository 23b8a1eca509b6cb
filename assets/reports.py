"""``daily_report``, ``weekly_report``, ``monthly_report`` (spec 13.2): Markdown and HTML with SVG charts.

Each reads the period's finished outcomes, open signals, candidate fates, incidents (feed, and health when
sql/0005 is applied) and outcome disagreements from PostgreSQL, builds the report with the pure
``tapewatch.reports``, writes ``<var_dir>/reports/<kind>/<period>.md`` / ``.html`` (charts in
``<period>/``), stores it in the ``reports`` table (what the dashboard lists) and shows its text in the
Dagster UI as metadata. A period without signals gives a report that says so.
"""

from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from assets.metrics import WEEKLY_PARTITIONS, daily_metrics, period_outcomes, weekly_metrics
from assets.outcomes import DAILY_PARTITIONS, PARTITIONS_START, day_ms, signal_outcomes
from orchestration.resources import DatabaseResource, TapewatchSettings
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import (
    StoredReport,
    disagreement_count,
    fate_counts,
    incidents,
    operator_events,
    save_report,
    unfinished_counts,
)
from tapewatch.adapters.report_files import write_report
from tapewatch.outcome_models import OutcomeParams
from tapewatch.quality import TIERS
from tapewatch.reports import (
    RenderedReport,
    ReportInput,
    ReportKind,
    build_content,
    lookback_start,
    period_of,
    render,
)
from tapewatch.settings import Settings

MONTHLY_PARTITIONS = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def publish_report(
    db: Database, cfg: Settings, kind: ReportKind, key: str, now: datetime
) -> tuple[StoredReport, RenderedReport]:
    """Build the ``kind`` report of the period holding day ``key``, write its files and store it."""
    first, end = period_of(kind, date.fromisoformat(key))
    start_ms, end_ms = day_ms(first), day_ms(end)
    since = lookback_start(
        kind, first, sharpe_days=cfg.metrics_sharpe_days, trend_weeks=cfg.metrics_trend_weeks
    )
    outcomes, open_by_tier = period_outcomes(db, since, first, end)
    params, now_ms = OutcomeParams.from_settings(cfg), int(now.timestamp() * 1000)
    ended = {tier: now_ms - params.response_ms[tier] - params.hold_ms[tier] for tier in TIERS}
    overdue = unfinished_counts(db, start_ms, end_ms, created_before=ended)
    changes, paused_at_start = operator_events(db, _midnight(first), _midnight(end))
    data = ReportInput(
        kind=kind,
        first_day=first,
        end_day=end,
        generated_at=now,
        outcomes=tuple(outcomes),
        open_signals=sum(open_by_tier.values()),
        overdue_signals=sum(overdue.values()),
        fates=fate_counts(db, start_ms, end_ms),
        incidents=tuple(incidents(db, _midnight(first), _midnight(end))),
        operator_events=tuple(changes),
        paused_at_start=paused_at_start,
        disagreements=disagreement_count(db, start_ms, end_ms),
        sharpe_days=cfg.metrics_sharpe_days,
        trend_weeks=cfg.metrics_trend_weeks,
        top_symbols=cfg.metrics_top_symbols,
    )
    content = build_content(data)
    rendered = render(content, chart_dir=key)
    markdown_path, html_path = write_report(cfg.var_dir, kind, key, rendered)
    report = StoredReport(
        kind=kind,
        period=key,
        period_start=first,
        period_end=end,
        markdown_path=str(markdown_path),
        html_path=str(html_path),
        markdown=rendered.markdown,
        html=rendered.html,
        signals=content.signals,
    )
    save_report(db, report)
    return report, rendered


def _report_asset(
    kind: ReportKind,
    partitions_def: dg.PartitionsDefinition,
    deps: list[dg.AssetsDefinition],
    description: str,
) -> dg.AssetsDefinition:
    """The ``<kind>_report`` asset: publishes the report of its partition's period (``publish_report``)."""

    @dg.asset(
        name=f"{kind}_report",
        partitions_def=partitions_def,
        deps=deps,
        group_name="reports",
        description=description,
    )
    def report_asset(
        context: dg.AssetExecutionContext, settings: TapewatchSettings, database: DatabaseResource
    ) -> dg.MaterializeResult[Any]:
        cfg = settings.settings()
        with database.open() as db:
            report, rendered = publish_report(db, cfg, kind, context.partition_key, datetime.now(UTC))
        return dg.MaterializeResult(
            metadata={
                "period": report.period,
                "signals": report.signals,
                "markdown_path": dg.MetadataValue.path(report.markdown_path),
                "html_path": dg.MetadataValue.path(report.html_path),
                "preview": dg.MetadataValue.md(rendered.preview_markdown),
            }
        )

    return report_asset


daily_report = _report_asset(
    "daily",
    DAILY_PARTITIONS,
    [signal_outcomes, daily_metrics],
    "Daily performance report (Markdown + HTML with charts), var/reports/daily/.",
)
weekly_report = _report_asset(
    "weekly",
    WEEKLY_PARTITIONS,
    [weekly_metrics],
    "Weekly strategy report (Markdown + HTML with charts), var/reports/weekly/.",
)
monthly_report = _report_asset(
    "monthly",
    MONTHLY_PARTITIONS,
    [signal_outcomes],
    "Monthly performance report (Markdown + HTML with charts), var/reports/monthly/.",
)


__all__ = ["MONTHLY_PARTITIONS", "daily_report", "monthly_report", "publish_report", "weekly_report"]
