-- Reconcile's refund rechecks, served by the due index.
--
-- A payment stays worth asking Midtrans about while its refunds are not settled
-- between midpay and Midtrans: a refund midpay asked for whose outcome it has not
-- seen ('requested'), or a refund the bank has not confirmed yet ('unconfirmed').
-- The payment row says so itself, in refund_watch, so that the due rows are one
-- partial index away instead of a pass over payment_refunds for every claim.
--
-- A trigger on payment_refunds keeps refund_watch equal to what the payment's refund
-- rows say, in the same transaction as every write to them, whoever writes them.
-- NULL: nothing to wait for (the ledger agrees with Midtrans).

ALTER TABLE payment_transactions ADD COLUMN IF NOT EXISTS refund_watch varchar(16);
ALTER TABLE payment_transactions DROP CONSTRAINT IF EXISTS payment_transactions_refund_watch_check;
ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_refund_watch_check
    CHECK (refund_watch IN ('requested', 'unconfirmed'));

-- What a payment's refund rows say: 'requested' when one awaits its outcome (checked at
-- reconcile's usual pace), else 'unconfirmed' when one the bank has not confirmed is
-- itemized (checked at --refund-recheck-after), else NULL. Mirrors ledger.unsettled.
CREATE OR REPLACE FUNCTION midpay_refund_watch(p_payment uuid) RETURNS varchar
LANGUAGE sql STABLE AS $f$
    SELECT CASE
             WHEN bool_or(status = 'requested') THEN 'requested'
             WHEN bool_or(status = 'done' AND bank_confirmed_at IS NULL AND origin <> 'unitemized')
               THEN 'unconfirmed'
           END
      FROM payment_refunds
     WHERE payment_id = p_payment
$f$;

CREATE OR REPLACE FUNCTION midpay_refunds_changed() RETURNS trigger
LANGUAGE plpgsql AS $f$
DECLARE
    target uuid;
BEGIN
    FOREACH target IN ARRAY CASE TG_OP
        WHEN 'INSERT' THEN ARRAY[NEW.payment_id]
        WHEN 'DELETE' THEN ARRAY[OLD.payment_id]
        ELSE ARRAY(SELECT DISTINCT x FROM unnest(ARRAY[OLD.payment_id, NEW.payment_id]) AS x)
    END LOOP
        UPDATE payment_transactions
           SET refund_watch = midpay_refund_watch(target)
         WHERE id = target AND refund_watch IS DISTINCT FROM midpay_refund_watch(target);
    END LOOP;
    RETURN NULL;
END
$f$;

DROP TRIGGER IF EXISTS payment_refunds_watch ON payment_refunds;
CREATE TRIGGER payment_refunds_watch
    AFTER INSERT OR DELETE OR UPDATE OF payment_id, status, bank_confirmed_at, origin ON payment_refunds
    FOR EACH ROW EXECUTE FUNCTION midpay_refunds_changed();

-- The refunds already in the ledger.
UPDATE payment_transactions AS p
   SET refund_watch = midpay_refund_watch(p.id)
 WHERE p.id IN (SELECT payment_id FROM payment_refunds
                 WHERE status = 'requested' OR (status = 'done' AND bank_confirmed_at IS NULL))
   AND p.refund_watch IS DISTINCT FROM midpay_refund_watch(p.id);

-- The due index of 005, rebuilt for two paces. Its predicate is db/claims.py's
-- candidates (_CANDIDATES), exactly: open rows in any letter case, rows awaiting
-- confirmation (004), payments whose refunds are not settled, and partial_refund
-- payments (a refund may have been made elsewhere). Its first column is the row's pace
-- (_PACE: 0, checked again after --recheck-after; 1, after --refund-recheck-after), its
-- second the order rows are taken in (_ORDER_KEY: failed and never-checked rows first,
-- then by the last completed check), so that each pace's due rows are one range of it
-- and reading them never walks past the rows that are not due.
DROP INDEX IF EXISTS payment_transactions_due_idx;
SELECT pg_temp.midpay_ensure_index(
    'payment_transactions', 'payment_transactions_due_idx', false,
    $$((CASE WHEN lower(status) IN ('created', 'pending', 'authorize', 'capture') OR unconfirmed_since IS NOT NULL
                  OR refund_watch = 'requested' THEN 0 ELSE 1 END),
       (CASE WHEN check_attempts > 0 THEN '-infinity' ELSE COALESCE(last_checked_at, '-infinity') END),
       created_at)
      WHERE (lower(status) IN ('created', 'pending', 'authorize', 'capture') OR unconfirmed_since IS NOT NULL
             OR refund_watch IS NOT NULL OR lower(status) = 'partial_refund')$$
);
