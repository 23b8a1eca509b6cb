-- What monthly tuning needs to re-score stored candidates and to judge a proposal's age honestly.
-- Conventions as 0001. No BEGIN/COMMIT: the runner wraps each file in a transaction. Idempotent (IF NOT
-- EXISTS): running it on a database that already has the columns changes nothing.

-- The large_trade_size (USD) the candidate's large_buys / large_sells were counted at: tuning re-counts each
-- candidate from its own size. NULL for candidates stored before this column (tuning then assumes the size
-- in force when it runs, as it did before).
ALTER TABLE candidates
    ADD COLUMN IF NOT EXISTS large_trade_size double precision
        CONSTRAINT candidates_large_trade_size_check CHECK (large_trade_size > 0);

COMMENT ON COLUMN candidates.large_trade_size IS
    'large_trade_size (USD) the large trades were counted at; NULL: stored before it was recorded.';

-- The applied tuning (tuning_applications.parameters of the row in force, {} = the settings' own values) the
-- proposal was scored under: apply compares it with the row in force then, from the database alone, so the
-- settings of the process that applies (CLI, dashboard) do not matter. NULL for proposals stored before.
ALTER TABLE tuning_proposals ADD COLUMN IF NOT EXISTS applied_parameters jsonb;

COMMENT ON COLUMN tuning_proposals.applied_parameters IS
    'Applied tuning in force when the proposal was scored ({} = none); NULL: stored before it was recorded.';
