// Verify one signed request with npm's standardwebhooks: argv = secret, then a JSON
// {"body", "headers"} on stdin; prints the verified event's id, or exits 1 with the reason.
"use strict";
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const { body, headers } = JSON.parse(input);
  try {
    const event = new Webhook(process.argv[2]).verify(body, headers);
    process.stdout.write(String(event.id) + "\n");
  } catch (err) {
    process.stderr.write(String(err.message) + "\n");
    process.exit(1);
  }
});
