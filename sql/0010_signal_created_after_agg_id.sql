-- What the batch outcome needs to replay the creation millisecond as the live tracker saw it.
-- Conventions as 0001. No BEGIN/COMMIT: the runner wraps each file in a transaction. Idempotent (IF NOT
-- EXISTS): running it on a database that already has the column changes nothing.

-- The id of the last aggTrade of the symbol the market had applied when the ENTRY signal was created: the live
-- tracker follows the trades of higher ids, so the batch outcome counts the trades of the creation millisecond
-- whose id is above it. Stored, not published (the outbox payload leaves it out). NULL for EXIT signals, for
-- signals stored before this column and for symbols traded on the @trade stream (no aggTrade ids): the batch
-- outcome then leaves the creation millisecond out, as it did before.
ALTER TABLE signals
    ADD COLUMN IF NOT EXISTS created_after_agg_id bigint
        CONSTRAINT signals_created_after_agg_id_check CHECK (created_after_agg_id >= 0);

COMMENT ON COLUMN signals.created_after_agg_id IS
    'Last aggTrade id of the symbol applied when the ENTRY was created; NULL: unknown (EXIT, older row, @trade).';
