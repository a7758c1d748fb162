-- What reconcile and replay need beyond the backend's layout.

-- When reconcile last asked Midtrans about a row: least recently checked goes
-- first, and a row checked moments ago by an overlapping run is not due again.
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS last_checked_at timestamptz;

-- Open rows are few among many settled ones: reconcile reads them through this
-- partial index, in the order it checks them.
SELECT pg_temp.midpay_ensure_index(
    'payment_transactions', 'payment_transactions_open_idx', false,
    $$(last_checked_at NULLS FIRST, created_at) WHERE status IN ('created', 'pending', 'authorize', 'capture')$$
);

-- Where a stored notification came from, and what became of it.
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS outcome varchar(16);
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS processed_at timestamptz;

SELECT pg_temp.midpay_ensure_index(
    'payment_webhook_events', 'payment_webhook_events_received_at_idx', false, '(received_at)'
);
