-- The two payment tables, as the existing web backend laid them out, so that both
-- can share one database. Every statement tolerates tables that already exist: a
-- database created by the older Node backend (node-pg-migrate) is adopted as it is,
-- and an index or foreign key it has under another name is reused, not duplicated
-- (pg_temp.midpay_ensure_index and _foreign_key: see midpay/adoption.py).

CREATE TABLE IF NOT EXISTS payment_transactions (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 bigint,
    order_id                varchar(255) NOT NULL,
    gross_amount            integer NOT NULL CHECK (gross_amount > 0),
    payment_type            varchar(32) NOT NULL,
    status                  varchar(32) NOT NULL,
    midtrans_transaction_id varchar(255),
    midtrans_response_json  jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    paid_at                 timestamptz
);

SELECT pg_temp.midpay_ensure_index('payment_transactions', 'payment_transactions_order_id_key', true, '(order_id)');
SELECT pg_temp.midpay_ensure_index('payment_transactions', 'payment_transactions_user_id_idx', false, '(user_id)');
SELECT pg_temp.midpay_ensure_index('payment_transactions', 'payment_transactions_status_idx', false, '(status)');
SELECT pg_temp.midpay_ensure_index(
    'payment_transactions', 'payment_transactions_midtrans_transaction_id_key', true, '(midtrans_transaction_id)'
);

CREATE TABLE IF NOT EXISTS payment_webhook_events (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    received_at             timestamptz NOT NULL DEFAULT now(),
    order_id                varchar(255),
    midtrans_transaction_id varchar(255),
    raw_body                jsonb NOT NULL,
    signature_key           varchar(255),
    is_verified             boolean NOT NULL DEFAULT false,
    processed               boolean NOT NULL DEFAULT false,
    processing_error        text
);

SELECT pg_temp.midpay_ensure_index('payment_webhook_events', 'payment_webhook_events_order_id_idx', false, '(order_id)');
SELECT pg_temp.midpay_ensure_index(
    'payment_webhook_events', 'payment_webhook_events_midtrans_transaction_id_idx', false, '(midtrans_transaction_id)'
);

-- user_id points at the backend's users only where such a table exists with an
-- integer key; midpay itself never needs one.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
          FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND table_name = 'users'
           AND column_name = 'id'
           AND data_type IN ('bigint', 'integer')
    ) THEN
        PERFORM pg_temp.midpay_ensure_foreign_key(
            'payment_transactions', 'user_id', 'users', 'id', 'payment_transactions_user_id_fkey'
        );
    END IF;
END
$$;
