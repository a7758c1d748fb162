// The backend at work while midpay runs beside it: WORKERS concurrent customers, each
// going through the create route and then paying (or letting the payment expire), the
// webhook handler taking each notification. Usage: node traffic.js USER_ID COUNT [WORKERS]
// Prints {"orders": {order_id: final status at the sandbox}} as JSON.

const { pool, createPayment, handleNotification, customer } = require('./backend');

async function main() {
  const [userId, count, workers = '4'] = process.argv.slice(2).map(Number);
  const db = pool();
  const orders = {};
  let next = 0;
  async function worker() {
    while (next < count) {
      const n = next;
      next += 1;
      const row = await createPayment(db, { userId, amount: 10000 + n, paymentType: n % 2 ? 'qris' : 'gopay' });
      const outcome = n % 5 === 4 ? 'expire' : 'settlement';
      orders[row.order_id] = outcome;
      if (n % 3 === 2) continue; // this customer never pays: reconcile finds it pending
      await handleNotification(db, await customer(row.order_id, outcome));
    }
  }
  try {
    await Promise.all(Array.from({ length: workers }, worker));
    process.stdout.write(`${JSON.stringify({ orders })}\n`);
  } finally {
    await db.end();
  }
}

main().catch((err) => {
  process.stderr.write(`traffic failed: ${err.stack || err}\n`);
  process.exit(1);
});
