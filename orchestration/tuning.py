"""Monthly tuning: the ``tuning_proposal`` asset, its job and its schedule (the 1st, 03:00 UTC).

The asset only proposes; applying is an operator's decision (``tapewatch tuning apply ID``).
"""

import dagster as dg

from assets.tuning import tuning_proposal

tuning_job = dg.define_asset_job("tuning_job", selection=[tuning_proposal])
tuning_schedule = dg.ScheduleDefinition(
    name="monthly_tuning_schedule",
    job=tuning_job,
    cron_schedule="0 3 1 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(assets=[tuning_proposal], jobs=[tuning_job], schedules=[tuning_schedule])
