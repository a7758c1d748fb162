// Midtrans' official Node client (npm midtrans-client), pointed at MIDTRANS_API_URL,
// doing what a Node backend does with it. Prints one JSON line per step on stdout.
//   node official_client.js charge ORDER_ID AMOUNT
//   node official_client.js status ORDER_ID
//   node official_client.js notification BODY_JSON
//   node official_client.js refund ORDER_ID REFUND_KEY AMOUNT
//   node official_client.js expire ORDER_ID
'use strict';

const midtransClient = require('midtrans-client');

const base = (process.env.MIDTRANS_API_URL || '').replace(/\/$/, '');
if (base) {
  // The client reads its base URL from these class properties only.
  require('midtrans-client/lib/apiConfig').CORE_SANDBOX_BASE_URL = base;
}

const core = new midtransClient.CoreApi({
  isProduction: false,
  serverKey: process.env.MIDTRANS_SERVER_KEY,
});

function report(step, value) {
  process.stdout.write(JSON.stringify({ step, ...value }) + '\n');
}

async function main() {
  const [action, ...args] = process.argv.slice(2);
  try {
    let answer;
    if (action === 'charge') {
      answer = await core.charge({
        payment_type: 'gopay',
        transaction_details: { order_id: args[0], gross_amount: Number(args[1]) },
      });
    } else if (action === 'status') {
      answer = await core.transaction.status(args[0]);
    } else if (action === 'notification') {
      answer = await core.transaction.notification(JSON.parse(args[0]));
    } else if (action === 'refund') {
      answer = await core.transaction.refund(args[0], { refund_key: args[1], amount: Number(args[2]) });
    } else if (action === 'expire') {
      answer = await core.transaction.expire(args[0]);
    } else {
      throw new Error(`unknown action ${action}`);
    }
    report(action, { ok: true, answer });
  } catch (err) {
    // MidtransError carries httpStatusCode and ApiResponse.
    report(action, { ok: false, http: err.httpStatusCode || null, api: err.ApiResponse || null, message: err.message });
  }
}

main();
