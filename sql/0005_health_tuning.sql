-- Health incidents (the actions of the health sensors), the market-data archive's hours, and monthly tuning:
-- proposals and the record of every apply/rollback. Conventions as 0001: exchange times bigint epoch ms,
-- wall-clock times timestamptz. No BEGIN/COMMIT.

-- One row per health action: opened when a sensor acts (backup feed, pause, shrink), closed on recovery.
-- Apart from feed_incidents (market-data incidents written by the realtime service).
CREATE TABLE health_incidents (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL,
    -- why the sensor acted, in words ("REST ping failed 5 times: ConnectError ...")
    reason      text        NOT NULL,
    -- what it did ("backup feed on", "signalling paused", "max universe 15")
    action      text        NOT NULL,
    -- what it did on recovery ("primary feed", "signalling resumed", "universe cap lifted"); NULL while open
    recovery    text,
    -- the measurements behind the decision (failures, z-scores, cpu %, ...), updated while open
    "values"    jsonb       NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    CONSTRAINT health_incidents_kind_check
        CHECK (kind IN ('api_connectivity', 'data_quality', 'system_performance')),
    CONSTRAINT health_incidents_reason_check CHECK (reason <> ''),
    CONSTRAINT health_incidents_action_check CHECK (action <> ''),
    CONSTRAINT health_incidents_ended_check CHECK (ended_at >= started_at),
    CONSTRAINT health_incidents_recovery_check CHECK ((ended_at IS NULL) = (recovery IS NULL))
);

COMMENT ON TABLE health_incidents IS
    'Actions of the health sensors (spec 11.1): backup feed, pause, universe shrink; closed on recovery.';

-- At most one open incident per kind: opening twice (a sensor tick retried) finds the open one.
CREATE UNIQUE INDEX health_incidents_open_kind_idx ON health_incidents (kind) WHERE ended_at IS NULL;
CREATE INDEX health_incidents_started_idx ON health_incidents (started_at DESC);


-- One row per archived hour of capture: what was read, what was written, and when the raw files went.
CREATE TABLE archive_hours (
    -- start of the UTC hour
    hour        timestamptz NOT NULL PRIMARY KEY,
    -- capture files read, relative to the var dir, with their size in bytes when archived
    files       jsonb       NOT NULL DEFAULT '[]',
    lines       bigint      NOT NULL DEFAULT 0,
    torn_lines  bigint      NOT NULL DEFAULT 0,
    rejected    bigint      NOT NULL DEFAULT 0,
    trades      bigint      NOT NULL DEFAULT 0,
    book_tops   bigint      NOT NULL DEFAULT 0,
    candles     bigint      NOT NULL DEFAULT 0,
    archived_at timestamptz NOT NULL DEFAULT now(),
    -- set when the raw capture files of the hour were deleted (after capture_retention_hours)
    pruned_at   timestamptz,
    CONSTRAINT archive_hours_hour_check CHECK (hour = date_trunc('hour', hour, 'UTC')),
    CONSTRAINT archive_hours_counts_check CHECK (
        lines >= 0 AND torn_lines >= 0 AND rejected >= 0 AND trades >= 0 AND book_tops >= 0 AND candles >= 0
    ),
    CONSTRAINT archive_hours_pruned_check CHECK (pruned_at >= archived_at)
);

COMMENT ON TABLE archive_hours IS 'Hours of raw capture compacted into Parquet under var/archive/.';

-- pruning looks for archived hours whose raw files are still there
CREATE INDEX archive_hours_unpruned_idx ON archive_hours (hour) WHERE pruned_at IS NULL;


-- One row per tuning run: the best parameter set found, its results and the current set's, side by side.
CREATE TABLE tuning_proposals (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- event-time window of the candidates read: [window_start, split_at) fits, [split_at, window_end) judges
    window_start    bigint      NOT NULL,
    split_at        bigint      NOT NULL,
    window_end      bigint      NOT NULL,
    -- proposed: a better set was found; no_change: the current set is best; insufficient_data: too few samples
    status          text        NOT NULL,
    parameters      jsonb       NOT NULL,
    current_parameters jsonb    NOT NULL,
    -- results ({signals, wins, win_rate, mean_r, total_r, by_tier}) of each set on each part of the window
    in_sample           jsonb   NOT NULL,
    out_of_sample       jsonb   NOT NULL,
    current_in_sample   jsonb   NOT NULL,
    current_out_of_sample jsonb NOT NULL,
    -- candidates read, with an outcome, of unknown outcome; grid size
    counts          jsonb       NOT NULL DEFAULT '{}',
    note            text        NOT NULL DEFAULT '',
    CONSTRAINT tuning_proposals_status_check CHECK (status IN ('proposed', 'no_change', 'insufficient_data')),
    CONSTRAINT tuning_proposals_window_check CHECK (window_start <= split_at AND split_at <= window_end)
);

COMMENT ON TABLE tuning_proposals IS 'Monthly tuning proposals: never applied by themselves (see tuning_applications).';

CREATE INDEX tuning_proposals_created_idx ON tuning_proposals (created_at DESC);


-- Every apply and rollback, who and when; the newest row holds the parameters in force.
CREATE TABLE tuning_applications (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text        NOT NULL,
    -- the proposal applied (apply), or the one whose set a rollback returned to (NULL: the settings' own)
    proposal_id bigint      REFERENCES tuning_proposals (id),
    -- parameters in force after this row ({} = the settings' own values)
    parameters  jsonb       NOT NULL,
    -- the row whose parameters a rollback from this state returns to (NULL: the settings' own values)
    undo_to     bigint      REFERENCES tuning_applications (id),
    actor       text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tuning_applications_action_check CHECK (action IN ('apply', 'rollback')),
    CONSTRAINT tuning_applications_actor_check CHECK (actor <> ''),
    CONSTRAINT tuning_applications_apply_check CHECK (action <> 'apply' OR proposal_id IS NOT NULL)
);

COMMENT ON TABLE tuning_applications IS 'Who applied or rolled back which tuning, when; the newest row is in force.';
