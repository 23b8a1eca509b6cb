"""Health sensors (spec 11.1) and the hourly market-data archive.

Sensors (running by default; each keeps its memory in its cursor, JSON):

- ``api_connectivity_sensor`` (30 s): the Binance REST ping, the realtime heartbeat and what the websockets
  deliver (``ws_silent_ms`` in the metrics hash; while the backup feed is on, the sensor's own websocket probe).
  ``timeout_threshold`` checks in a row with the websockets silent while REST answers → the service switches
  to its backup feed; ``api_recovery_checks`` with the probe receiving, and at least ``backup_min_dwell`` s on
  the backup feed → back (with REST down, back at once: the backup feed polls it). The probe is not the
  service: a switch back followed within the probation by a new switch on (the service's websockets silent
  again) failed, and doubles the next dwell, up to ``backup_max_dwell`` (``tapewatch.health.FeedDwell``).
  REST down or the service down is an incident reported, never a switch (``judge_connectivity``).
- ``data_quality_sensor`` (60 s): anomalies beyond ``anomaly_threshold`` standard deviations in price jumps,
  spreads and message rates per symbol, and overall in the symbols' message rate relative to their own usual
  rates and in the resync rate (``tapewatch.anomaly``) → signalling paused; ``data_quality_clean_checks``
  clean checks → resumed.
- ``system_performance_sensor`` (30 s): CPU above ``cpu_threshold`` % or memory above ``memory_threshold`` %
  of the realtime service's host (the ``host_cpu``, averaged over 60 s, and ``host_memory`` its heartbeat
  carries; the worst shard host; else psutil on the machine running the sensor) for ``performance_trip_checks``
  checks in a row → the universe is capped at half its size (again while the overload lasts, never below
  ``min_universe_under_load``); ``performance_clear_checks`` checks in a row at or below the lower restore
  thresholds (doubled after each restore a new cut followed soon: ``tapewatch.health.RestoreWait``) → the cap
  the operator had before is restored.

Every action opens a health incident and every recovery closes it (``tapewatch.adapters.health_store``).
Sensors launch no runs: each tick ends with a skip reason saying what it saw and did.

Failures: a Redis action that fails did not take effect, so the streak is kept one check short and the action
is retried at the next tick. Once a Redis action succeeded, the transition (and the cap) is committed to the
cursor at once; an incident write PostgreSQL refuses is kept in the cursor as pending and only that write is
retried, in order, at later ticks (with the time the action took effect).

Ownership: a sensor undoes only what it did. A pause, a backup feed or a universe cap found in force that
this sensor did not set is left as it is (the incident says so), and on recovery it is not lifted; a cap the
operator changed while the sensor held its own is not overwritten by the restore.

A Redis that comes back empty (restarted without persistence) loses the pause and the cap with everything
else, and the realtime service, which keeps what it applied, writes them back with control events from
``realtime (restored)`` (``ControlLoop``): in either order with the sensor's recovery. So the pause reason and
the cap a sensor set are its claim, kept in its cursor, and ``tapewatch.health.held`` decides: the same value
in force, written last by the sensor or by the service's restore, is still the sensor's to lift; an absent
key with no control event of anyone else's was lost, not lifted, and the claim outlives the recovery until the
value is back (then lifted) or someone else's (a different value, or a dashboard/CLI event after the
sensor's: theirs). A lost cap with an operator's cap to restore is restored at once (the service's restore
writes only absent keys).

A cursor that is lost (reset from the UI, unreadable) would forget what the sensor did and leave its action in
force for good, so a sensor whose cursor has not yet been checked (``recovered`` false) first reads what it
did from durable state: its open incident in PostgreSQL (the action "backup feed on"; the ``cap`` and
``previous_cap`` of a shrink) and, for the pause, the ``data quality: `` prefix of the pause reason in Redis.
What is still in force is taken back as its own, and an open incident as an alarm in force, so the recovery
lifts it and closes the incident as if the cursor had never been lost. While PostgreSQL cannot be read the
check is retried at the next tick (the pause is recovered from its prefix meanwhile).

Modules: ``health_connectivity``, ``health_quality`` and ``health_load`` hold one sensor each;
``health_cursor`` what the sensors keep in their cursors, ``health_incidents`` their incidents and
``health_control`` whose a control value is. This module assembles them with the archive.
"""

import dagster as dg

from assets.archive import market_data_archive
from orchestration.health_connectivity import api_connectivity_sensor
from orchestration.health_load import system_performance_sensor
from orchestration.health_quality import data_quality_sensor

archive_job = dg.define_asset_job("market_data_archive_job", selection=[market_data_archive])
# 10 minutes past the hour: the capture writer has rolled the previous hour's file by then
archive_schedule = dg.build_schedule_from_partitioned_job(
    archive_job, minute_of_hour=10, default_status=dg.DefaultScheduleStatus.RUNNING
)

defs = dg.Definitions(
    assets=[market_data_archive],
    jobs=[archive_job],
    schedules=[archive_schedule],
    sensors=[api_connectivity_sensor, data_quality_sensor, system_performance_sensor],
)
