-- The refund ledger mirrors Midtrans: every refund Midtrans reports for a payment has
-- its row here, whoever made it (midpay, the Midtrans dashboard, another system).
--
-- A row is matched to Midtrans' report by its refund_key or by Midtrans' own
-- refund_chargeback_id. Keys are unique per payment, not across payments: another
-- system may number its refunds "1", "2", ... for every order.

-- Midtrans' id of the refund, when it has reported one.
ALTER TABLE payment_refunds ADD COLUMN IF NOT EXISTS refund_chargeback_id bigint;
-- Midtrans' created_at of the refund (Jakarta time, stored with its offset).
ALTER TABLE payment_refunds ADD COLUMN IF NOT EXISTS refunded_at timestamptz;
-- Set once the bank confirmed the refund (Midtrans' second refund notification).
ALTER TABLE payment_refunds ADD COLUMN IF NOT EXISTS bank_confirmed_at timestamptz;
ALTER TABLE payment_refunds ADD COLUMN IF NOT EXISTS refund_method text;
-- Who made it: midpay asked for it; outside (Midtrans reported a refund midpay never
-- asked for); unitemized (Midtrans' refund_amount is more than the refunds it listed).
ALTER TABLE payment_refunds ADD COLUMN IF NOT EXISTS origin varchar(16) NOT NULL DEFAULT 'midpay';
ALTER TABLE payment_refunds DROP CONSTRAINT IF EXISTS payment_refunds_origin_check;
ALTER TABLE payment_refunds ADD CONSTRAINT payment_refunds_origin_check
    CHECK (origin IN ('midpay', 'outside', 'unitemized'));

-- A refund made elsewhere may come without a key, or with one longer than midpay's own.
ALTER TABLE payment_refunds ALTER COLUMN refund_key DROP NOT NULL;
ALTER TABLE payment_refunds ALTER COLUMN refund_key TYPE varchar(255);
ALTER TABLE payment_refunds DROP CONSTRAINT IF EXISTS payment_refunds_refund_key_key;
CREATE UNIQUE INDEX IF NOT EXISTS payment_refunds_payment_key_idx
    ON payment_refunds (payment_id, refund_key);
CREATE UNIQUE INDEX IF NOT EXISTS payment_refunds_payment_chargeback_idx
    ON payment_refunds (payment_id, refund_chargeback_id);
-- At most one unitemized row per payment: the part of Midtrans' total it did not list.
CREATE UNIQUE INDEX IF NOT EXISTS payment_refunds_one_unitemized_idx
    ON payment_refunds (payment_id) WHERE origin = 'unitemized';

-- Refunds not yet settled between midpay and Midtrans: an outcome not seen yet
-- (requested), or a refund the bank has not confirmed. reconcile re-checks their
-- payments through this index.
CREATE INDEX IF NOT EXISTS payment_refunds_unsettled_idx
    ON payment_refunds (payment_id)
    WHERE status = 'requested' OR (status = 'done' AND bank_confirmed_at IS NULL);
