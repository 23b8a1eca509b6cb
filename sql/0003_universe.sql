-- Universe selection (spec 4): every rescan as a versioned row set, and every exclusion between rescans.
-- Conventions as 0001: exchange times are bigint epoch ms, wall-clock times timestamptz. No BEGIN/COMMIT.

-- One row per version of the universe: a full rescan (6 h), a quick check (1 h) that removed symbols, or an
-- emergency exclusion. The newest row is the current universe.
CREATE TABLE universe_rescans (
    rescan_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL,
    -- the Dagster run that wrote it (NULL when written outside Dagster)
    run_id        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- the universe this version chose, best first
    symbols       text[]      NOT NULL,
    -- universe_size, minimums, weights and references in force (so old rescans explain themselves)
    params        jsonb       NOT NULL DEFAULT '{}',
    -- symbols evaluated (members rows), and how many fell under each reason
    candidates    integer     NOT NULL,
    reason_counts jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT universe_rescans_kind_check CHECK (kind IN ('full', 'quick', 'emergency')),
    CONSTRAINT universe_rescans_candidates_check CHECK (candidates >= 0)
);

COMMENT ON TABLE universe_rescans IS
    'Versions of the universe (spec 4): full rescans, quick checks and emergency exclusions; newest = current.';

CREATE INDEX universe_rescans_created_idx ON universe_rescans (created_at DESC, rescan_id DESC);
CREATE INDEX universe_rescans_run_idx ON universe_rescans (run_id) WHERE run_id IS NOT NULL;


-- Every symbol a version evaluated: its statistics, score components, score, rank, in/out and why.
CREATE TABLE universe_members (
    rescan_id         bigint           NOT NULL REFERENCES universe_rescans (rescan_id) ON DELETE CASCADE,
    symbol            text             NOT NULL,
    selected          boolean          NOT NULL,
    -- selected, rank_beyond_size, below_min_volume, below_min_open_interest, spread_too_wide,
    -- below_min_depth, missing_statistic
    reason            text             NOT NULL,
    detail            text             NOT NULL DEFAULT '',
    -- 1 = best, among the symbols that pass the minimums; NULL otherwise
    rank              integer,
    -- 0..100 (spec 4.1); NULL when a score input is missing
    score             double precision,
    volume_score      double precision,
    liquidity_score   double precision,
    volatility_score  double precision,
    activity_score    double precision,
    quote_volume_24h  double precision,
    open_interest_usd double precision,
    spread            double precision,
    depth_1pct_usd    double precision,
    atr_ratio         double precision,
    trades_per_second double precision,
    last_price        double precision,
    -- what could not be measured, and why (REST errors)
    errors            jsonb            NOT NULL DEFAULT '[]',
    PRIMARY KEY (rescan_id, symbol),
    CONSTRAINT universe_members_symbol_check CHECK (symbol ~ '^[A-Z0-9_]+$'),
    CONSTRAINT universe_members_reason_check CHECK (reason IN (
        'selected', 'rank_beyond_size', 'below_min_volume', 'below_min_open_interest', 'spread_too_wide',
        'below_min_depth', 'missing_statistic'
    )),
    CONSTRAINT universe_members_selected_check CHECK (selected = (reason = 'selected')),
    CONSTRAINT universe_members_rank_check CHECK (rank >= 1),
    CONSTRAINT universe_members_score_check CHECK (score BETWEEN 0 AND 100)
);

COMMENT ON TABLE universe_members IS
    'Each symbol of each universe version: statistics, spec 4.1 score components, rank and the reason in/out.';

-- a symbol's history across rescans (dashboard: "why did X leave?")
CREATE INDEX universe_members_symbol_idx ON universe_members (symbol, rescan_id DESC);


-- Symbols removed between full rescans: by the hourly quick check or the emergency sensor.
CREATE TABLE universe_exclusions (
    exclusion_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol       text        NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    -- the values that broke the rule (spread, depth, volume, strikes, ...)
    "values"     jsonb       NOT NULL DEFAULT '{}',
    source       text        NOT NULL,
    -- the universe version the exclusion produced
    rescan_id    bigint      REFERENCES universe_rescans (rescan_id) ON DELETE SET NULL,
    run_id       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT universe_exclusions_symbol_check CHECK (symbol ~ '^[A-Z0-9_]+$'),
    CONSTRAINT universe_exclusions_source_check CHECK (source IN ('quick_check', 'emergency')),
    CONSTRAINT universe_exclusions_reason_check CHECK (reason IN (
        'below_min_volume', 'below_min_open_interest', 'spread_too_wide', 'below_min_depth'
    ))
);

COMMENT ON TABLE universe_exclusions IS
    'Symbols excluded between full rescans (quick check, emergency sensor), with the reason and the values.';

CREATE INDEX universe_exclusions_created_idx ON universe_exclusions (created_at DESC);
CREATE INDEX universe_exclusions_symbol_idx ON universe_exclusions (symbol, created_at DESC);
