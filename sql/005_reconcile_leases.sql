-- Reconcile's claims become leases, and a failed check is recorded on its row.
--
-- A run claims a row by writing its owner token and a lease deadline, and renews the
-- deadline while it runs. A completed check (Midtrans answered, the answer applied or
-- found unchanged) stamps last_checked_at, which now means the time of the last
-- completed check, and ends the lease. A failed check records the attempt, the reason
-- and when the row may be tried again (at once after the first failure, then further
-- apart), and keeps the lease until the run ends. A run that dies leaves its leases to
-- expire.

ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_lease_owner uuid;
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_lease_until timestamptz;
-- When a run last claimed the row, or ended holding it after its check failed: a run
-- takes a row only if this is older than its own start, so it never checks a row twice,
-- and a row that failed is taken by the next run to start, not by one already under way.
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_claimed_at timestamptz;
-- Consecutive failed checks since the last completed one, the last reason, and the
-- earliest time the row is due again.
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_error text;
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS check_retry_at timestamptz;

-- The rows reconcile asks about (open ones, in any letter case: another backend may
-- write 'PENDING'; and those awaiting confirmation, sql/004), in the order it takes
-- them: never checked first, then by when they were last checked (or, after a
-- failure, when they may be tried again). Replaces 002's index of open rows.
DROP INDEX IF EXISTS payment_transactions_open_idx;
SELECT pg_temp.midpay_ensure_index(
    'payment_transactions', 'payment_transactions_due_idx', false,
    $$((COALESCE(check_retry_at, last_checked_at)) NULLS FIRST, created_at)
      WHERE (lower(status) IN ('created', 'pending', 'authorize', 'capture') OR unconfirmed_since IS NOT NULL)$$
);

-- The rows one run holds, for renewing and releasing its leases.
SELECT pg_temp.midpay_ensure_index(
    'payment_transactions', 'payment_transactions_lease_owner_idx', false,
    '(check_lease_owner) WHERE check_lease_owner IS NOT NULL'
);
