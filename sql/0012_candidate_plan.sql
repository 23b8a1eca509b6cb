-- The trade plan every candidate would have traded, and the would-be outcome of those that did not become
-- signals: what monthly tuning scores a rejected candidate by (low_quality, cooldown, the caps, concurrency,
-- correlation, paused, ...). Conventions as 0001. No BEGIN/COMMIT: the runner wraps each file in a
-- transaction. Idempotent (IF NOT EXISTS): running it on a database that already has them changes nothing.

-- The plan (tapewatch.trade_plan.plan_trade, the inputs a signal's plan gets: the touch, ATR(15m), the nearest
-- level, the tick size) stored with the candidate in the same INSERT. NULL for the candidates that have none
-- (fate no_plan: ATR unknown, or targets that fall to zero or below) and for those stored before this file.
-- A signal's candidate holds its signal's levels. created_after_agg_id as in sql/0010: the batch outcome counts
-- the creation millisecond's trades of higher ids, as it does for a signal.
ALTER TABLE candidates
    ADD COLUMN IF NOT EXISTS entry_price double precision,
    ADD COLUMN IF NOT EXISTS stop_loss double precision,
    ADD COLUMN IF NOT EXISTS take_profit_1 double precision,
    ADD COLUMN IF NOT EXISTS take_profit_2 double precision,
    ADD COLUMN IF NOT EXISTS suggested_position_size double precision,
    ADD COLUMN IF NOT EXISTS created_after_agg_id bigint
        CONSTRAINT candidates_created_after_agg_id_check CHECK (created_after_agg_id >= 0);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'candidates_plan_check') THEN
        -- a plan is whole or absent; its prices > 0 and on the right sides of the entry (as signals_* checks)
        ALTER TABLE candidates ADD CONSTRAINT candidates_plan_check CHECK (
            (entry_price IS NULL AND stop_loss IS NULL AND take_profit_1 IS NULL AND take_profit_2 IS NULL
                AND suggested_position_size IS NULL)
            OR (entry_price > 0 AND stop_loss > 0 AND take_profit_1 > 0 AND take_profit_2 > 0
                AND suggested_position_size > 0
                AND CASE direction
                    WHEN 'LONG' THEN stop_loss < entry_price AND entry_price < take_profit_1
                        AND take_profit_1 <= take_profit_2
                    ELSE stop_loss > entry_price AND entry_price > take_profit_1 AND take_profit_1 >= take_profit_2
                END)
        );
    END IF;
END $$;

COMMENT ON COLUMN candidates.entry_price IS
    'Entry of the trade plan the candidate would have had (with stop_loss .. suggested_position_size); NULL: none.';

-- The would-be outcome of each candidate that did not become a signal and has a plan, from 1-minute klines by
-- the code signal_outcomes uses (Dagster asset candidate_outcomes). A table of its own, not signal_outcomes:
-- that one references signals and is what metrics, reports and the dashboard read; a candidate turned away
-- was never sent, so it must never count there. Only finished outcomes are stored (the batch writes nothing
-- until the candles reach the end). ``tier``: the tier whose response window and upper hold bound were used:
-- the candidate's own, LOW for a low_quality candidate (it has none).
CREATE TABLE IF NOT EXISTS candidate_outcomes (
    candidate_id uuid             PRIMARY KEY REFERENCES candidates (candidate_id) ON DELETE CASCADE,
    tier         text             NOT NULL,
    state        text             NOT NULL,
    -- event times, ms: how far the outcome was followed, the trigger, TP1, the end
    as_of        bigint           NOT NULL,
    trigger_time bigint,
    tp1_time     bigint,
    exit_time    bigint,
    exit_price   double precision,
    pnl_r        double precision NOT NULL,
    pnl_pct      double precision NOT NULL,
    mfe_r        double precision NOT NULL,
    mae_r        double precision NOT NULL,
    -- the whole outcome (its state-change events included)
    outcome      jsonb            NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT candidate_outcomes_tier_check CHECK (tier IN ('HIGH', 'MEDIUM', 'LOW')),
    CONSTRAINT candidate_outcomes_state_check CHECK (state IN ('TP2', 'STOPPED', 'EXPIRED'))
);

COMMENT ON TABLE candidate_outcomes IS
    'Would-be outcome of each non-signal candidate with a plan (1-minute klines, as signal_outcomes); for tuning.';
