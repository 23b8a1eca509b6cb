"""Runs a previous Dagster instance left in progress, failed before a new instance starts.

``tapewatch dagster`` runs this module as a one-shot process (``python -m orchestration.orphans HOME``)
inside its supervisor, before the webserver and the daemon: it prints the id of each run it failed, one a line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

log = logging.getLogger(__name__)

#: Run statuses a run worker owns: after an instance stopped, no worker is left to finish them.
_ORPHAN_STATUSES = ("STARTING", "STARTED", "CANCELING")


def fail_orphaned_runs(home: Path) -> list[str]:
    """Mark the runs the previous instance left STARTING/STARTED/CANCELING as failed; return their ids.

    Called by ``tapewatch dagster`` before its webserver and daemon start: their run workers were children
    of the previous instance's code servers and died with them, and a run left STARTED would hold one of the
    ``dagster_max_concurrent_runs`` slots (or the one rescan slot) forever. QUEUED runs are left to the
    daemon. Each one is logged with its job."""
    statuses = [DagsterRunStatus(s) for s in _ORPHAN_STATUSES]
    failed: list[str] = []
    with DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(filters=RunsFilter(statuses=statuses)):
            instance.report_run_failed(
                run,
                f"run left {run.status.value} when the previous Dagster instance stopped (its worker is "
                "gone); marked failed by `tapewatch dagster` at start",
            )
            log.warning("run %s of %s was left %s: marked failed", run.run_id, run.job_name, run.status.value)
            failed.append(run.run_id)
    return failed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m orchestration.orphans DAGSTER_HOME", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    for run_id in fail_orphaned_runs(Path(argv[0])):
        print(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
