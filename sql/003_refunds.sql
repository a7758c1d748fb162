-- Refunds asked of Midtrans, one row per refund_key.
--
-- The row is written and committed before Midtrans is called, so a refund whose
-- answer was lost (a timeout) stays `requested` and the next attempt sends the very
-- same refund_key: Midtrans pays a refund_key out once, however often it is sent.

CREATE TABLE IF NOT EXISTS payment_refunds (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id              uuid NOT NULL REFERENCES payment_transactions (id),
    order_id                varchar(255) NOT NULL,
    -- Midtrans allows letters, digits, '-' and '_'; 46 keeps it usable as an Idempotency-Key too.
    refund_key              varchar(46) NOT NULL UNIQUE,
    amount                  integer NOT NULL CHECK (amount > 0),
    reason                  text,
    status                  varchar(16) NOT NULL DEFAULT 'requested'
                            CHECK (status IN ('requested', 'done', 'rejected')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    midtrans_response_json  jsonb
);

CREATE INDEX IF NOT EXISTS payment_refunds_payment_id_idx
    ON payment_refunds (payment_id, created_at);

-- At most one refund of a payment may have an unknown outcome at a time: a new refund
-- waits until the earlier one is retried to a definite answer.
CREATE UNIQUE INDEX IF NOT EXISTS payment_refunds_one_requested_idx
    ON payment_refunds (payment_id) WHERE status = 'requested';
