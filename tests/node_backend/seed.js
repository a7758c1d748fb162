// Seed the database the way the backend's users filled it: two users, payments made
// through the create route, notifications through the webhook handler (one lost, one
// stored by a handler that crashed, one forged, one left unprocessed by an older
// handler that kept the body as a JSON string, one dashboard test without an order). Prints the order
// ids by what happened to them, as JSON.

const { pool, createPayment, handleNotification, customer } = require('./backend');

async function main() {
  const db = pool();
  try {
    const users = await db.query(
      `INSERT INTO users (email, name) VALUES ('budi@example.com', 'Budi'), ('sari@example.com', 'Sari')
       RETURNING id`,
    );
    const [budi, sari] = users.rows.map((r) => Number(r.id));
    const make = (userId, amount, paymentType = 'gopay') =>
      createPayment(db, { userId, amount, paymentType }).then((row) => row.order_id);
    const orders = {};
    orders.pending = await make(budi, 25000);
    orders.settled = await make(budi, 154600, 'qris');
    await handleNotification(db, await customer(orders.settled, 'settlement'));
    orders.expired = await make(sari, 50000);
    await handleNotification(db, await customer(orders.expired, 'expire'));
    orders.lost = await make(sari, 75000);
    await customer(orders.lost, 'settlement'); // the notification never arrived
    orders.crashed = await make(budi, 30000);
    await handleNotification(db, await customer(orders.crashed, 'settlement'), { crashAfterStore: true });
    orders.to_cancel = await make(sari, 12000);
    orders.to_expire = await make(sari, 13000);
    orders.to_replay = await make(budi, 44000, 'qris');
    orders.to_refund = await make(budi, 99000);
    await handleNotification(db, await customer(orders.to_refund, 'settlement'));

    const forged = await customer(orders.pending, 'pending');
    await handleNotification(db, { ...forged, transaction_status: 'settlement', signature_key: 'f'.repeat(128) });
    const older = await customer(orders.to_cancel, 'pending');
    await db.query(
      `INSERT INTO payment_webhook_events (order_id, raw_body, signature_key, is_verified, processed)
       VALUES ($1, to_jsonb($2::text), $3, false, false)`,
      [older.order_id, JSON.stringify(older), older.signature_key],
    );
    await handleNotification(db, { transaction_status: 'settlement', status_code: '200' });
    process.stdout.write(`${JSON.stringify({ users: { budi, sari }, orders })}\n`);
  } finally {
    await db.end();
  }
}

main().catch((err) => {
  process.stderr.write(`seed failed: ${err.stack || err}\n`);
  process.exit(1);
});
