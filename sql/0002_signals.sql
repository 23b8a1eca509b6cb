-- Signals, candidates, the outbox that publishes signals exactly once, notifier deliveries, and outcomes.
-- Conventions as 0001: exchange times are bigint epoch ms, wall-clock times timestamptz. No BEGIN/COMMIT.

-- One row per signal (ENTRY or EXIT), every spec 8.2 field as a column, plus its evidence and full JSON.
CREATE TABLE signals (
    -- UUIDv5 of (symbol, direction, trigger event time) for an ENTRY; of the exit reason under the parent for
    -- an EXIT (DESIGN §3): a replay or a restart produces the same id, so ON CONFLICT makes writes idempotent.
    signal_id               uuid             PRIMARY KEY,
    symbol                  text             NOT NULL,
    direction               text             NOT NULL,
    signal_type             text             NOT NULL,
    priority                text             NOT NULL,
    -- the spec's ISO timestamp: the trigger's exchange event time
    "timestamp"             timestamptz      NOT NULL,
    entry_price             double precision NOT NULL,
    stop_loss               double precision NOT NULL,
    take_profit_1           double precision NOT NULL,
    take_profit_2           double precision NOT NULL,
    quality_score           smallint         NOT NULL,
    orderbook_imbalance     double precision NOT NULL,
    large_trades_count      integer          NOT NULL,
    volume_intensity        double precision NOT NULL,
    confidence              double precision NOT NULL,
    suggested_position_size double precision NOT NULL,
    risk_reward_ratio       double precision NOT NULL,
    expected_hold_time      text             NOT NULL,
    event_time              bigint           NOT NULL,
    reasons                 jsonb            NOT NULL DEFAULT '[]',
    data_quality            jsonb            NOT NULL DEFAULT '{}',
    exit_reason             text,
    parent_signal_id        uuid             REFERENCES signals (signal_id),
    exit_price              double precision,
    -- the signal exactly as published (spec 8.2 field names)
    payload                 jsonb            NOT NULL,
    created_at              timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT signals_symbol_check CHECK (symbol ~ '^[A-Z0-9]+$'),
    CONSTRAINT signals_direction_check CHECK (direction IN ('LONG', 'SHORT')),
    CONSTRAINT signals_type_check CHECK (signal_type IN ('ENTRY', 'EXIT')),
    CONSTRAINT signals_priority_check CHECK (priority IN ('HIGH', 'MEDIUM', 'LOW')),
    CONSTRAINT signals_quality_check CHECK (quality_score BETWEEN 0 AND 100),
    CONSTRAINT signals_event_time_check CHECK (event_time >= 0),
    CONSTRAINT signals_exit_reason_check CHECK (exit_reason IN ('TP1', 'TP2', 'STOP', 'EXPIRED')),
    -- an EXIT names its reason, its parent and its price; an ENTRY none of them
    CONSTRAINT signals_kind_check CHECK (
        (signal_type = 'ENTRY' AND exit_reason IS NULL AND parent_signal_id IS NULL AND exit_price IS NULL)
        OR (signal_type = 'EXIT' AND exit_reason IS NOT NULL AND parent_signal_id IS NOT NULL
            AND exit_price IS NOT NULL)
    )
);

COMMENT ON TABLE signals IS 'Every signal issued (ENTRY and EXIT), spec 8.2 fields plus reasons and data quality.';

-- the dashboard's live list and history (newest first), per symbol, and the exits of an entry
CREATE INDEX signals_event_time_idx ON signals (event_time DESC);
CREATE INDEX signals_symbol_idx ON signals (symbol, event_time DESC);
CREATE INDEX signals_entries_idx ON signals (priority, event_time DESC) WHERE signal_type = 'ENTRY';
CREATE INDEX signals_parent_idx ON signals (parent_signal_id) WHERE parent_signal_id IS NOT NULL;


-- Every setup that passed the required conditions, with its features and its fate (signal or why not).
CREATE TABLE candidates (
    -- the id the signal has (or would have had): UUIDv5 of (symbol, direction, event time)
    candidate_id uuid        PRIMARY KEY,
    symbol       text        NOT NULL,
    direction    text        NOT NULL,
    event_time   bigint      NOT NULL,
    features     jsonb       NOT NULL,
    -- every condition, met and unmet, with its value and threshold
    conditions   jsonb       NOT NULL,
    -- the spec 7.2 score with its parts
    quality      jsonb       NOT NULL,
    quality_score smallint   NOT NULL,
    tier         text,
    -- 'signal', or the rejection reason code (low_quality, no_plan, paused, cooldown, tier_daily_cap, ...)
    fate         text        NOT NULL,
    fate_detail  text        NOT NULL DEFAULT '',
    -- set when the fate is 'signal' (no foreign key: a candidate may be stored before its signal)
    signal_id    uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT candidates_setup_key UNIQUE (symbol, direction, event_time),
    CONSTRAINT candidates_symbol_check CHECK (symbol ~ '^[A-Z0-9]+$'),
    CONSTRAINT candidates_direction_check CHECK (direction IN ('LONG', 'SHORT')),
    CONSTRAINT candidates_tier_check CHECK (tier IN ('HIGH', 'MEDIUM', 'LOW')),
    CONSTRAINT candidates_fate_check CHECK (fate <> ''),
    CONSTRAINT candidates_signal_check CHECK ((fate = 'signal') = (signal_id IS NOT NULL)),
    CONSTRAINT candidates_event_time_check CHECK (event_time >= 0)
);

COMMENT ON TABLE candidates IS
    'Setups that passed the required conditions: features, conditions, quality and fate (the reasons log).';

CREATE INDEX candidates_event_time_idx ON candidates (event_time DESC);
CREATE INDEX candidates_symbol_idx ON candidates (symbol, event_time DESC);
CREATE INDEX candidates_fate_idx ON candidates (fate, event_time DESC);


-- The transactional outbox: written with its signal in one transaction, published to Redis by the relay.
CREATE TABLE outbox (
    -- publishing order; the Redis stream id of a row is '<seq>-1', which makes a re-publish detectable
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signal_id    uuid        NOT NULL UNIQUE REFERENCES signals (signal_id),
    -- the exact JSON published
    payload      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    stream_id    text,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    CONSTRAINT outbox_published_check CHECK ((published_at IS NULL) = (stream_id IS NULL)),
    CONSTRAINT outbox_attempts_check CHECK (attempts >= 0)
);

COMMENT ON TABLE outbox IS 'Signals to publish to the Redis signal stream, in seq order, exactly once.';

-- the relay's one query: what is left to publish, oldest first
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;


-- One row per (signal, notifier) once a delivery is attempted: a restart never sends twice.
CREATE TABLE notifications (
    signal_id  uuid        NOT NULL REFERENCES signals (signal_id),
    notifier   text        NOT NULL,
    -- sending: claimed (a crash here means "maybe sent": never retried); folded: waiting for its digest
    status     text        NOT NULL DEFAULT 'sending',
    attempts   integer     NOT NULL DEFAULT 0,
    detail     text        NOT NULL DEFAULT '',
    claimed_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (signal_id, notifier),
    CONSTRAINT notifications_status_check CHECK (status IN ('sending', 'folded', 'sent', 'failed')),
    CONSTRAINT notifications_attempts_check CHECK (attempts >= 0)
);

COMMENT ON TABLE notifications IS 'Deliveries of published signals to each notifier (webhook, telegram).';

CREATE INDEX notifications_failed_idx ON notifications (updated_at DESC) WHERE status = 'failed';


-- What each ENTRY signal did (or is doing): the live tracker writes 'live', the Dagster job 'batch' (which wins).
CREATE TABLE signal_outcomes (
    signal_id    uuid             PRIMARY KEY REFERENCES signals (signal_id),
    state        text             NOT NULL,
    finished     boolean          NOT NULL,
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
    source       text             NOT NULL,
    -- the whole outcome (its state-change events included): what the live tracker resumes from
    outcome      jsonb            NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT signal_outcomes_state_check
        CHECK (state IN ('WAITING', 'TRIGGERED', 'TP1', 'TP2', 'STOPPED', 'EXPIRED')),
    CONSTRAINT signal_outcomes_finished_check CHECK (finished = (state IN ('TP2', 'STOPPED', 'EXPIRED'))),
    CONSTRAINT signal_outcomes_source_check CHECK (source IN ('live', 'batch'))
);

COMMENT ON TABLE signal_outcomes IS 'Outcome of each ENTRY signal: state, P&L in R and %, MFE/MAE; batch beats live.';

-- open signals to resume after a restart; finished ones by time for the dashboard and tier history
CREATE INDEX signal_outcomes_open_idx ON signal_outcomes (signal_id) WHERE NOT finished;
CREATE INDEX signal_outcomes_exit_time_idx ON signal_outcomes (exit_time DESC) WHERE finished;
