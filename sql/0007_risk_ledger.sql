-- The global risk ledger: what every realtime instance (shard) reserves before a candidate becomes a signal,
-- so daily caps, concurrency and correlation hold across shards. Conventions as 0001. No BEGIN/COMMIT.

CREATE TABLE risk_reservations (
    -- the signal id the candidate becomes (UUIDv5, DESIGN §3): a restart re-reserving it is a no-op
    signal_id   uuid        PRIMARY KEY,
    symbol      text        NOT NULL,
    direction   text        NOT NULL,
    tier        text        NOT NULL,
    -- exchange event time of the candidate, and its UTC day number (event_time / 86 400 000)
    event_time  bigint      NOT NULL,
    day         integer     NOT NULL,
    -- event time after which the signal is over even if nobody released it (its shard died): trigger window
    -- plus the upper hold bound of its tier
    expires_at  bigint      NOT NULL,
    -- event time at which its shard reported it finished; NULL = open
    released_at bigint,
    shard       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT risk_reservations_symbol_check CHECK (symbol ~ '^[A-Z0-9]+$'),
    CONSTRAINT risk_reservations_direction_check CHECK (direction IN ('LONG', 'SHORT')),
    CONSTRAINT risk_reservations_tier_check CHECK (tier IN ('HIGH', 'MEDIUM', 'LOW')),
    CONSTRAINT risk_reservations_time_check CHECK (event_time >= 0 AND expires_at >= event_time),
    CONSTRAINT risk_reservations_day_check CHECK (day = event_time / 86400000)
);

COMMENT ON TABLE risk_reservations IS
    'Signals reserved by realtime shards: the global daily caps, concurrency and correlation ledger.';

-- the two reads of a reservation: today's counts per tier, and what is open
CREATE INDEX risk_reservations_day_idx ON risk_reservations (day, tier);
CREATE INDEX risk_reservations_open_idx ON risk_reservations (expires_at) WHERE released_at IS NULL;
