-- Notifications confirmed with Midtrans, and the bytes exactly as they arrived.

-- The body byte for byte (duplicate keys, key order, spacing, a BOM), beside the jsonb
-- raw_body that the older backend reads: a stored body can be replayed and audited as
-- it was received.
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS raw_bytes bytea;

-- When Midtrans' own answer decided this notification (Get Status); NULL while it was
-- decided by nothing but its signature, or not at all. A later body identical to a
-- confirmed one is not asked about again.
ALTER TABLE payment_webhook_events ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;

-- Set while a payment has a notification awaiting confirmation (stored offline, or
-- Midtrans could not be asked): reconcile checks such rows whatever their status, and
-- the first confirmed answer applied to the row clears it.
ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS unconfirmed_since timestamptz;

-- Reconcile's due rows beyond the open ones: awaiting confirmation, or in a state that
-- received money but without paid_at. Few among many, read in checking order.
CREATE INDEX IF NOT EXISTS payment_transactions_unconfirmed_idx
    ON payment_transactions (last_checked_at NULLS FIRST, created_at)
    WHERE unconfirmed_since IS NOT NULL
       OR (paid_at IS NULL AND status IN ('settlement', 'capture', 'partial_refund', 'refund'));

-- Finding an earlier confirmed copy of a body.
CREATE INDEX IF NOT EXISTS payment_webhook_events_confirmed_idx
    ON payment_webhook_events (order_id)
    WHERE confirmed_at IS NOT NULL;
