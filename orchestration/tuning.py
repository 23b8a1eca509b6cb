"""Monthly tuning: the ``tuning_proposal`` asset, its job and its schedule: the 1st, 20 minutes after the
monthly report (04:35 UTC with the default hold bounds), so the outcomes of the month's last day are final
when its candidates are re-scored (see :mod:`orchestration.performance`).

The asset only proposes; applying is an operator's decision (``tapewatch tuning apply ID``).
"""

from datetime import timedelta

import dagster as dg

from assets.tuning import tuning_proposal
from orchestration.performance import REPORT_TIMES

#: After the monthly report's tick, so the monthly runs do not compete and every outcome is final.
TUNING_DELAY = timedelta(minutes=20)

tuning_job = dg.define_asset_job("tuning_job", selection=[tuning_proposal])
tuning_schedule = dg.ScheduleDefinition(
    name="monthly_tuning_schedule",
    job=tuning_job,
    cron_schedule=REPORT_TIMES.monthly_cron(TUNING_DELAY),
    description="The 1st, after the final outcomes of the month's last day and the monthly report: re-score "
    "the stored candidates and store a proposal (apply it with `tapewatch tuning apply ID`).",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(assets=[tuning_proposal], jobs=[tuning_job], schedules=[tuning_schedule])
