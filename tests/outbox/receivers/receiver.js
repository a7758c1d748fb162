// A receiver of midpay's payment events, for the tests: every POST is verified with the
// Standard Webhooks package from npm and recorded; the test steers how it answers.
//
//   RECEIVER_SECRETS='["whsec_…"]' node receiver.js   -> prints {"port": N} on its first line
//
//   POST /_control {"answer": 204|500|410|…, "mode": "answer"|"stall"|"drop"}
//       "stall" holds every request until the mode changes, then answers them;
//       "drop" closes the connection without an answer.
//   GET  /_received  -> [{"id", "type", "order", "sequence", "verified", "signatures"}, …]
//   any other POST   -> a delivery
"use strict";

const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const hooks = JSON.parse(process.env.RECEIVER_SECRETS || "[]").map((s) => new Webhook(s));
const received = [];
const held = [];
let answer = 204;
let mode = "answer";

function verify(body, headers) {
  for (const hook of hooks) {
    try {
      return hook.verify(body, headers);
    } catch (err) {
      // try the next secret
    }
  }
  return null;
}

function record(body, headers) {
  const event = verify(body, headers);
  const parsed = event || safeParse(body);
  received.push({
    id: headers["webhook-id"] || null,
    type: parsed ? parsed.type : null,
    order: parsed && parsed.data ? parsed.data.order_id : null,
    sequence: parsed ? parsed.sequence : null,
    verified: event !== null && parsed.id === headers["webhook-id"],
    signatures: (headers["webhook-signature"] || "").split(" ").filter(Boolean).length,
  });
}

function safeParse(body) {
  try {
    return JSON.parse(body);
  } catch (err) {
    return null;
  }
}

function reply(res, code, doc) {
  const text = doc === undefined ? "" : JSON.stringify(doc);
  res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    if (req.url === "/_received") {
      return reply(res, 200, received);
    }
    if (req.url === "/_control") {
      const doc = JSON.parse(body);
      if (doc.answer !== undefined) answer = doc.answer;
      if (doc.mode !== undefined) mode = doc.mode;
      if (mode !== "stall") {
        for (const waiting of held.splice(0)) reply(waiting, answer);
      }
      return reply(res, 200, { answer, mode, held: held.length });
    }
    record(body, req.headers);
    if (mode === "drop") return req.socket.destroy();
    if (mode === "stall") return held.push(res);
    return reply(res, answer);
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => process.exit(0));
