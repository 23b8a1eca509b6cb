-- How good the signals are: batch/live outcome disagreements, daily and weekly metrics (spec 9.1) and the
-- generated reports (spec 13.2). Written by the Dagster assets of orchestration/performance.py.
-- Conventions as 0001: exchange times are bigint epoch ms, wall-clock times timestamptz. No BEGIN/COMMIT.

-- Each time the batch outcome (from 1-minute candles) differs from the live tracker's finished outcome.
CREATE TABLE outcome_disagreements (
    id          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signal_id   uuid             NOT NULL REFERENCES signals (signal_id),
    live_state  text             NOT NULL,
    batch_state text             NOT NULL,
    live_pnl_r  double precision NOT NULL,
    batch_pnl_r double precision NOT NULL,
    -- the signal's creation event time (ms): what the daily partition of the finding is
    event_time  bigint           NOT NULL,
    found_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT outcome_disagreements_state_check CHECK (
        live_state IN ('WAITING', 'TRIGGERED', 'TP1', 'TP2', 'STOPPED', 'EXPIRED')
        AND batch_state IN ('WAITING', 'TRIGGERED', 'TP1', 'TP2', 'STOPPED', 'EXPIRED')
    ),
    CONSTRAINT outcome_disagreements_event_time_check CHECK (event_time >= 0)
);

COMMENT ON TABLE outcome_disagreements IS
    'Signals whose live outcome (trades) and batch outcome (1m candles) differed; the batch value stands.';

CREATE INDEX outcome_disagreements_event_time_idx ON outcome_disagreements (event_time DESC);
CREATE INDEX outcome_disagreements_signal_idx ON outcome_disagreements (signal_id);


-- The spec 9.1 daily block per UTC day (of signal creation event time), overall ('ALL') and per tier.
CREATE TABLE daily_metrics (
    day                  date             NOT NULL,
    tier                 text             NOT NULL,
    signals_generated    integer          NOT NULL,
    signals_triggered    integer          NOT NULL,
    wins                 integer          NOT NULL,
    -- signals of the day whose outcome was not final yet (not counted in the other columns)
    signals_open         integer          NOT NULL,
    win_rate             double precision,
    average_hold_minutes double precision,
    total_pnl_r          double precision NOT NULL,
    total_pnl_pct        double precision NOT NULL,
    sharpe_ratio         double precision,
    max_drawdown_r       double precision NOT NULL,
    mean_quality         double precision,
    computed_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, tier),
    CONSTRAINT daily_metrics_tier_check CHECK (tier IN ('ALL', 'HIGH', 'MEDIUM', 'LOW')),
    CONSTRAINT daily_metrics_counts_check CHECK (
        signals_generated >= 0 AND signals_open >= 0
        AND 0 <= wins AND wins <= signals_triggered AND signals_triggered <= signals_generated
    ),
    CONSTRAINT daily_metrics_win_rate_check CHECK (win_rate BETWEEN 0 AND 1),
    CONSTRAINT daily_metrics_drawdown_check CHECK (max_drawdown_r >= 0)
);

COMMENT ON TABLE daily_metrics IS 'Spec 9.1 daily performance per UTC day of signal creation, overall and per tier.';


-- The spec 9.1 weekly block per week (Monday to Sunday, UTC).
CREATE TABLE weekly_metrics (
    week_start          date             PRIMARY KEY,
    signals_generated   integer          NOT NULL,
    signals_triggered   integer          NOT NULL,
    signals_open        integer          NOT NULL,
    win_rate            double precision,
    total_pnl_r         double precision NOT NULL,
    total_pnl_pct       double precision NOT NULL,
    sharpe_ratio        double precision,
    max_drawdown_r      double precision NOT NULL,
    -- total R per signal generated
    strategy_efficiency double precision,
    -- least-squares slopes per week over the trend window
    win_rate_trend      double precision,
    quality_trend       double precision,
    -- [{"symbol", "signals", "total_r"}], best first / worst first
    best_symbols        jsonb            NOT NULL DEFAULT '[]',
    worst_symbols       jsonb            NOT NULL DEFAULT '[]',
    -- {"HIGH": {spec 9.1 daily keys}, ...}
    by_tier             jsonb            NOT NULL DEFAULT '{}',
    computed_at         timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT weekly_metrics_monday_check CHECK (extract(isodow FROM week_start) = 1),
    CONSTRAINT weekly_metrics_counts_check CHECK (
        signals_generated >= 0 AND signals_open >= 0 AND signals_triggered BETWEEN 0 AND signals_generated
    ),
    CONSTRAINT weekly_metrics_win_rate_check CHECK (win_rate BETWEEN 0 AND 1)
);

COMMENT ON TABLE weekly_metrics IS 'Spec 9.1 weekly performance: best/worst symbols, efficiency, quality trends.';


-- Generated reports (spec 13.2), one per kind and period; a re-run replaces it.
CREATE TABLE reports (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL,
    -- the partition key: 2024-03-04 (daily), 2024-03-04 (weekly: its Monday), 2024-03-01 (monthly)
    period        text        NOT NULL,
    period_start  date        NOT NULL,
    -- exclusive
    period_end    date        NOT NULL,
    markdown_path text        NOT NULL,
    html_path     text        NOT NULL,
    markdown      text        NOT NULL,
    html          text        NOT NULL,
    signals       integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reports_kind_period_key UNIQUE (kind, period),
    CONSTRAINT reports_kind_check CHECK (kind IN ('daily', 'weekly', 'monthly')),
    CONSTRAINT reports_period_check CHECK (period_end > period_start),
    CONSTRAINT reports_signals_check CHECK (signals >= 0)
);

COMMENT ON TABLE reports IS 'Daily, weekly and monthly performance reports (Markdown and HTML with inline SVG charts).';

-- the dashboard's list: newest periods first, of one kind or all
CREATE INDEX reports_period_idx ON reports (period_start DESC, kind);
