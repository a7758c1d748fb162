// The payment wiring of the older Node backend, without its HTTP framing: the create
// route (charge at Midtrans, then insert the row) and the webhook handler (store the
// notification, check its signature, update the payment). midpay's tests run these
// against the database node-pg-migrate built, to write rows exactly as the backend did.
//
// NODE_BACKEND_STATUS_CASE=upper plays a sibling backend that stores statuses in
// upper case ('PENDING', 'SETTLEMENT').

const crypto = require('crypto');
const { Pool } = require('pg');

function pool() {
  return new Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
}

function midtransBase() {
  return (process.env.MIDTRANS_API_URL || 'https://api.sandbox.midtrans.com').replace(/\/$/, '');
}

function serverKey() {
  return process.env.MIDTRANS_SERVER_KEY || '';
}

function stored(status) {
  return process.env.NODE_BACKEND_STATUS_CASE === 'upper' ? status.toUpperCase() : status;
}

async function midtrans(method, path, body) {
  const res = await fetch(`${midtransBase()}${path}`, {
    method,
    headers: {
      Accept: 'application/json',
      'Content-Type': 'application/json',
      Authorization: `Basic ${Buffer.from(`${serverKey()}:`).toString('base64')}`,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.json();
}

// POST /api/payments: charge GoPay (or QRIS) and keep the answer.
async function createPayment(db, { userId, amount, paymentType = 'gopay', orderId }) {
  const id = orderId || `ORDER-${userId}-${Date.now()}-${crypto.randomBytes(3).toString('hex')}`;
  const request = {
    payment_type: paymentType,
    transaction_details: { order_id: id, gross_amount: amount },
  };
  if (paymentType === 'qris') request.qris = { acquirer: 'gopay' };
  const charge = await midtrans('POST', '/v2/charge', request);
  if (!['200', '201'].includes(charge.status_code)) {
    throw new Error(`charge refused: ${charge.status_code} ${charge.status_message}`);
  }
  const { rows } = await db.query(
    `INSERT INTO payment_transactions
       (user_id, order_id, gross_amount, payment_type, status, midtrans_transaction_id, midtrans_response_json)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     RETURNING *`,
    [userId, id, amount, paymentType, stored(charge.transaction_status), charge.transaction_id, charge],
  );
  return rows[0];
}

function signatureOf(body) {
  return crypto
    .createHash('sha512')
    .update(`${body.order_id}${body.status_code}${body.gross_amount}${serverKey()}`)
    .digest('hex');
}

// POST /api/midtrans/notification. `crashAfterStore` plays a handler that died after
// storing the body (the row stays unprocessed).
async function handleNotification(db, body, { crashAfterStore = false } = {}) {
  const verified = typeof body.signature_key === 'string' && signatureOf(body) === body.signature_key;
  const { rows } = await db.query(
    `INSERT INTO payment_webhook_events (order_id, midtrans_transaction_id, raw_body, signature_key, is_verified)
     VALUES ($1, $2, $3, $4, $5) RETURNING id`,
    [body.order_id || null, body.transaction_id || null, body, body.signature_key || null, verified],
  );
  const eventId = rows[0].id;
  if (crashAfterStore) return { eventId, processed: false };
  if (!verified) {
    await db.query(`UPDATE payment_webhook_events SET processing_error = $1 WHERE id = $2`, [
      'invalid signature',
      eventId,
    ]);
    return { eventId, processed: false };
  }
  const status = body.transaction_status;
  const paid = status === 'settlement' || (status === 'capture' && body.fraud_status === 'accept');
  await db.query(
    `UPDATE payment_transactions
        SET status = $1,
            midtrans_transaction_id = COALESCE(midtrans_transaction_id, $2),
            paid_at = CASE WHEN $3::boolean THEN COALESCE(paid_at, current_timestamp) ELSE paid_at END,
            updated_at = current_timestamp
      WHERE order_id = $4`,
    [stored(status), body.transaction_id || null, paid, body.order_id],
  );
  await db.query(`UPDATE payment_webhook_events SET processed = true WHERE id = $1`, [eventId]);
  return { eventId, processed: true };
}

// What the customer does at the sandbox: pay (or let expire); Midtrans then notifies.
async function customer(orderId, status) {
  const res = await fetch(`${midtransBase()}/_sandbox/pay/${encodeURIComponent(orderId)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ status }),
  });
  if (!res.ok) throw new Error(`sandbox pay ${orderId}: ${res.status} ${await res.text()}`);
  return res.json();
}

module.exports = { pool, createPayment, handleNotification, customer, signatureOf };
