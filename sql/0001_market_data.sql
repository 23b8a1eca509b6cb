-- What the market-data layer records: feed incidents and the capture files it wrote.
-- Conventions for every migration: exchange times are bigint epoch milliseconds (as Binance sends them),
-- local wall-clock times are timestamptz. No BEGIN/COMMIT here: the runner wraps each file in a transaction.

CREATE TABLE feed_incidents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when the incident concerns a whole connection (a reconnect of a socket carrying many symbols).
    symbol      text,
    stream      text,
    kind        text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    -- exchange event time (E or T, ms) of the frame that revealed the incident, when there was one.
    event_time  bigint,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- set when the condition is over (a stale feed resumed, a ban expired); NULL = still open.
    resolved_at timestamptz,
    CONSTRAINT feed_incidents_kind_check
        CHECK (kind IN ('gap', 'resync', 'reconnect', 'stale', 'malformed', 'rate_limited', 'banned')),
    CONSTRAINT feed_incidents_symbol_check CHECK (symbol ~ '^[A-Z0-9]+$'),
    CONSTRAINT feed_incidents_event_time_check CHECK (event_time >= 0),
    CONSTRAINT feed_incidents_resolved_check CHECK (resolved_at >= recorded_at)
);

COMMENT ON TABLE feed_incidents IS
    'Market-data incidents: sequence gaps, book resyncs, reconnects, stale feeds, malformed frames, 429/418.';

CREATE INDEX feed_incidents_recorded_at_idx ON feed_incidents (recorded_at DESC);
CREATE INDEX feed_incidents_symbol_idx ON feed_incidents (symbol, recorded_at DESC);
CREATE INDEX feed_incidents_kind_idx ON feed_incidents (kind, recorded_at DESC);
-- `tapewatch status` lists the open incidents; this keeps that query cheap however long the history grows.
CREATE INDEX feed_incidents_open_idx ON feed_incidents (recorded_at DESC) WHERE resolved_at IS NULL;


CREATE TABLE capture_files (
    -- path of the file relative to the var dir, e.g. capture/2024/08/08/13.jsonl.gz
    path        text        PRIMARY KEY,
    -- start of the UTC hour the file holds
    hour        timestamptz NOT NULL,
    -- local receive times (the capture line's "recv", ms) of the first and last line written
    first_recv  bigint,
    last_recv   bigint,
    lines       bigint      NOT NULL DEFAULT 0,
    bytes       bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT capture_files_hour_check CHECK (hour = date_trunc('hour', hour, 'UTC')),
    CONSTRAINT capture_files_counts_check CHECK (lines >= 0 AND bytes >= 0),
    CONSTRAINT capture_files_recv_check CHECK (first_recv <= last_recv)
);

COMMENT ON TABLE capture_files IS 'Hourly gzip JSON Lines capture files written by the realtime service.';

CREATE INDEX capture_files_hour_idx ON capture_files (hour);
