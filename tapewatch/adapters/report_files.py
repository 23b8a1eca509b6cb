"""Reports on disk: ``<var_dir>/reports/<kind>/<period>.md`` and ``.html``, charts in ``<period>/*.svg``.

Files are written to a temporary name and renamed, so a reader never sees half a report; a re-run of the
same period replaces them. An unwritable directory raises ``OSError`` naming the path and the setting to
fix (the asset run fails with it).
"""

from __future__ import annotations

import os
from pathlib import Path

from tapewatch.reports.content import ReportKind
from tapewatch.reports.render import RenderedReport


def report_dir(var_dir: Path, kind: ReportKind) -> Path:
    """Where the reports of ``kind`` live."""
    return var_dir / "reports" / kind


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(var_dir: Path, kind: ReportKind, period: str, report: RenderedReport) -> tuple[Path, Path]:
    """Write the Markdown, the HTML and the chart files of one report; return (markdown, html) paths."""
    directory = report_dir(var_dir, kind)
    charts = directory / period
    try:
        charts.mkdir(parents=True, exist_ok=True)
        for name, svg in report.charts.items():
            _write(charts / f"{name}.svg", svg)
        markdown, html = directory / f"{period}.md", directory / f"{period}.html"
        _write(markdown, report.markdown)
        _write(html, report.html)
    except OSError as exc:
        raise OSError(
            f"cannot write the {kind} report {period} under {directory}: {exc}. "
            "Check that TAPEWATCH_VAR_DIR points to a writable directory."
        ) from exc
    return markdown, html


__all__ = ["report_dir", "write_report"]
