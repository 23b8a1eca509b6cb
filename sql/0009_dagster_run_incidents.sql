-- Failed Dagster runs are health incidents too (orchestration.run_alerts): kind 'dagster_run', opened by the
-- run failure sensor naming the job and the run id, closed when every job that failed has succeeded since.
-- Conventions as 0001. No BEGIN/COMMIT: the runner wraps each file in a transaction. Idempotent.
ALTER TABLE health_incidents DROP CONSTRAINT IF EXISTS health_incidents_kind_check;
ALTER TABLE health_incidents ADD CONSTRAINT health_incidents_kind_check
    CHECK (kind IN ('api_connectivity', 'data_quality', 'system_performance', 'dagster_run'));
