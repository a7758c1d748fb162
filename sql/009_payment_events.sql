-- Payment events for the shop's own app: an outbox written with every change.
--
-- Each change of payment_transactions.status, and the change that first sets paid_at,
-- commits one row of payment_events in the same transaction, whoever writes the row:
-- midpay's one transition, its charge INSERTs, or the older Node backend's own webhook
-- handler. A trigger writes it, in the statement that makes the change, so there is no
-- point between a change and its event where a process can die. `midpay deliver` sends
-- the events to the shop's endpoints (webhook_endpoints), one webhook_deliveries row per
-- event and endpoint, every attempt kept in webhook_attempts.
--
-- Events start with this migration: rows changed before it have none.

CREATE TABLE IF NOT EXISTS payment_events (
    id              text PRIMARY KEY DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', ''),
    payment_id      uuid NOT NULL,
    order_id        varchar(255) NOT NULL,
    type            varchar(64) NOT NULL,
    sequence        integer NOT NULL CHECK (sequence > 0),
    -- varchar(64), wider than midpay's status column: the older backend's is varchar(50),
    -- and an event must never be the reason its change fails.
    previous_status varchar(64),
    status          varchar(64) NOT NULL,
    paid            boolean NOT NULL,
    payment         jsonb NOT NULL,
    -- The payment's refund rows at the change (to_jsonb of each, oldest first): with the
    -- snapshot, they make the event's `status --json` document as it was then.
    refunds         jsonb NOT NULL DEFAULT '[]',
    body            text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT payment_events_order_sequence_key UNIQUE (order_id, sequence)
);

CREATE INDEX IF NOT EXISTS payment_events_created_at_idx ON payment_events (created_at);

CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id                    varchar(40) PRIMARY KEY,
    url                   text NOT NULL,
    events                text[] NOT NULL DEFAULT '{*}',
    description           text,
    enabled               boolean NOT NULL DEFAULT true,
    disabled_reason       text,
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id         text NOT NULL REFERENCES payment_events (id),
    endpoint_id      varchar(40) NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    order_id         varchar(255) NOT NULL,
    sequence         integer NOT NULL,
    status           varchar(16) NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    leased_until     timestamptz,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, endpoint_id)
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_order_idx
    ON webhook_deliveries (endpoint_id, order_id, sequence);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL,
    endpoint_id  varchar(40) NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code  integer,
    duration_ms  integer,
    error        text,
    FOREIGN KEY (event_id, endpoint_id) REFERENCES webhook_deliveries (event_id, endpoint_id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS webhook_attempts_delivery_idx ON webhook_attempts (event_id, endpoint_id, attempted_at);

-- Does an endpoint's pattern list take this event type? A pattern is a type ('payment.paid')
-- or a prefix ending in '*' ('payment.*', '*').
CREATE OR REPLACE FUNCTION midpay_event_matches(p_patterns text[], p_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $f$
    SELECT EXISTS (
        SELECT 1 FROM unnest(p_patterns) AS p
         WHERE p = p_type
            OR (right(p, 1) = '*' AND left(p_type, length(p) - 1) = left(p, -1))
    )
$f$;

-- One event of the row's order, numbered after the order's last one, with a delivery for
-- every enabled endpoint that wants it. The caller holds the row's lock (the UPDATE, or the
-- INSERT's unique order_id), so one order's events are numbered one at a time, in commit order.
CREATE OR REPLACE FUNCTION midpay_write_event(
    p_row payment_transactions, p_type text, p_previous text, p_status text
) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    new_id text := 'evt_' || replace(gen_random_uuid()::text, '-', '');
    next_sequence integer;
BEGIN
    SELECT COALESCE(max(sequence), 0) + 1 INTO next_sequence
      FROM payment_events WHERE order_id = p_row.order_id;
    INSERT INTO payment_events (id, payment_id, order_id, type, sequence, previous_status, status, paid,
                                payment, refunds)
    VALUES (new_id, p_row.id, p_row.order_id, p_type, next_sequence, p_previous, p_status,
            p_row.paid_at IS NOT NULL, to_jsonb(p_row),
            COALESCE((SELECT jsonb_agg(to_jsonb(r) ORDER BY r.created_at, r.id)
                        FROM payment_refunds AS r WHERE r.payment_id = p_row.id), '[]'));
    INSERT INTO webhook_deliveries (event_id, endpoint_id, order_id, sequence)
    SELECT new_id, e.id, p_row.order_id, next_sequence
      FROM webhook_endpoints AS e
     WHERE e.enabled AND midpay_event_matches(e.events, p_type);
END
$f$;

-- Runs in the session of whoever writes the row (the older backend too): its search_path
-- is pinned to this migration's, so the outbox tables are found whatever that session's is.
CREATE OR REPLACE FUNCTION midpay_payment_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
DECLARE
    new_status text := lower(btrim(NEW.status));
    old_status text;
    wrote boolean := false;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_status := lower(btrim(OLD.status));
    END IF;
    IF new_status IS DISTINCT FROM old_status AND new_status <> 'created' THEN
        PERFORM midpay_write_event(NEW, 'payment.' || new_status, old_status, new_status);
        wrote := true;
    END IF;
    -- Once per payment: a paid_at cleared and set again (midpay never clears it) is no second one.
    IF NEW.paid_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.paid_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM payment_events WHERE order_id = NEW.order_id AND type = 'payment.paid') THEN
        PERFORM midpay_write_event(NEW, 'payment.paid', old_status, new_status);
        wrote := true;
    END IF;
    IF wrote THEN
        -- Notifications with the same payload fold into one per transaction; sent at commit.
        PERFORM pg_notify('midpay_outbox', '');
    END IF;
    RETURN NULL;
END
$f$;

DROP TRIGGER IF EXISTS payment_transactions_events ON payment_transactions;
CREATE TRIGGER payment_transactions_events
    AFTER INSERT OR UPDATE OF status, paid_at ON payment_transactions
    FOR EACH ROW EXECUTE FUNCTION midpay_payment_changed();
