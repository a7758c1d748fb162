-- Earlier texts of 001 and 002 checked their indexes by name only, so on a database
-- laid out by the older Node backend they built a second copy of each index it had
-- under node-pg-migrate's names. Drop midpay's copy wherever an index of the same
-- table is the same (method, columns, order, predicate; unique where ours is unique).
-- Nothing is dropped where midpay's index is the only one of its kind.

SELECT pg_temp.midpay_drop_duplicate_index(name)
  FROM unnest(ARRAY[
    'payment_transactions_order_id_key',
    'payment_transactions_user_id_idx',
    'payment_transactions_status_idx',
    'payment_transactions_midtrans_transaction_id_key',
    'payment_webhook_events_order_id_idx',
    'payment_webhook_events_midtrans_transaction_id_idx',
    'payment_transactions_open_idx',
    'payment_webhook_events_received_at_idx'
  ]) AS name;
