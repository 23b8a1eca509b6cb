-- Deliveries a start-up re-offers: a row left 'folded' (its digest was never sent: the process stopped first)
-- or 'failed' (the notifier gave up) within notify_max_age of its publication is offered once more at the
-- next start. Conventions as 0001. No BEGIN/COMMIT: the runner wraps each file in a transaction. Idempotent.

-- How many times a start-up re-offered a failed delivery: a failed one is re-offered once (retries 0 -> 1),
-- so a notifier that keeps failing is not retried at every restart.
ALTER TABLE notifications
    ADD COLUMN IF NOT EXISTS retries integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN notifications.retries IS
    'Times a start-up re-offered this failed delivery (at most 1); folded ones are re-offered until sent or failed.';
