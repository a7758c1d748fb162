-- Notifications confirmed with Midtrans, and the bytes exactly as they arrived.

-- The body byte for byte (duplicate keys, key order, spacing, a BOM), beside the jsonb
-- raw_body that the older backend reads: a stored body can be replayed and audited as
-- it was received.
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS raw_bytes bytea;

-- When Midtrans' own answer decided this notification (Get Status); NULL while it was
-- decided by nothing but its signature, or not at all. A later body identical to a
-- confirmed one is not asked about again.
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;

-- Set while a payment awaits confirmation by Midtrans: a notification stored offline or
-- while Midtrans could not be asked, or a state that received money recorded without
-- paid_at. Reconcile checks such rows whatever their status; the first confirmed answer
-- applied to the row clears it. (A flag rather than a condition on paid_at and status:
-- the planner takes those two as independent and would expect a tenth of the table.)
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS unconfirmed_since timestamptz;

-- Rows an older backend left paid without paid_at: Midtrans' answer will say when.
UPDATE payment_transactions SET unconfirmed_since = now()
 WHERE unconfirmed_since IS NULL AND paid_at IS NULL
   AND lower(status) IN ('settlement', 'capture', 'partial_refund', 'refund');

-- Reconcile's due rows beyond the open ones: few among many, read in checking order.
CREATE INDEX IF NOT EXISTS payment_transactions_unconfirmed_idx
    ON payment_transactions (last_checked_at NULLS FIRST, created_at)
    WHERE unconfirmed_since IS NOT NULL;

-- Finding an earlier confirmed copy of a body.
CREATE INDEX IF NOT EXISTS payment_webhook_events_confirmed_idx
    ON payment_webhook_events (order_id)
    WHERE confirmed_at IS NOT NULL;
