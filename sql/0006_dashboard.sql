-- What the dashboard records: every state-changing action an operator took from it (pause, resume, rescan,
-- apply or roll back tuning), with when, who and from where. Conventions as 0001: exchange times bigint ms,
-- wall-clock times timestamptz. No BEGIN/COMMIT here: the runner wraps each file in a transaction.

CREATE TABLE operator_actions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- what was asked: pause, resume, rescan, apply_tuning, rollback_tuning, ...
    action      text        NOT NULL,
    -- the action's argument in words (the pause reason, the proposal id, the Dagster run id)
    detail      text        NOT NULL DEFAULT '',
    -- the basic-auth user, or 'anonymous' when the dashboard runs without a password (bound to 127.0.0.1)
    actor       text        NOT NULL,
    -- the client address of the HTTP request (X-Forwarded-For is not trusted)
    client_addr text        NOT NULL DEFAULT '',
    -- which tool did it: 'dashboard' (a CLI could record here too)
    source      text        NOT NULL DEFAULT 'dashboard',
    -- 'ok' when the change was made, 'failed' when it could not be (then error says why)
    result      text        NOT NULL,
    error       text        NOT NULL DEFAULT '',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operator_actions_action_check CHECK (action ~ '^[a-z][a-z_]*$'),
    CONSTRAINT operator_actions_actor_check CHECK (actor <> ''),
    CONSTRAINT operator_actions_result_check CHECK (result IN ('ok', 'failed')),
    CONSTRAINT operator_actions_error_check CHECK ((result = 'failed') = (error <> ''))
);

COMMENT ON TABLE operator_actions IS
    'State-changing actions taken from the dashboard (pause, resume, rescan, tuning): when, who, from where.';

-- the Health page lists the newest actions
CREATE INDEX operator_actions_recorded_at_idx ON operator_actions (recorded_at DESC);

-- The dashboard's signal history is sorted by these columns on the server (infinite scrolling over 100k+
-- rows): without an index each page would sort the whole table.
CREATE INDEX signals_entries_quality_idx ON signals (quality_score DESC, event_time DESC)
    WHERE signal_type = 'ENTRY';
CREATE INDEX signals_entries_time_idx ON signals (event_time DESC) WHERE signal_type = 'ENTRY';
