"""midpay beside the Node backend, both writing to the same tables at once.

While the backend's create route and webhook handler serve customers (traffic.js, four
at a time), midpay charges and replays its own notifications, reconciles every open
row and refunds the backend's settled payments. Afterwards every row agrees with
Midtrans (the sandbox), refunds add up, and node-pg-migrate still has nothing to run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from midpay import states

from .conftest import NODE_DIR, NodeDb
from .test_takeover import seeded  # noqa: F401 - the fixture

TRAFFIC = 80


def test_midpay_and_the_node_backend_writing_at_once(
    node_db: NodeDb, node_cli: Any, seeded: dict[str, Any], sandbox: Any, tmp_path: Path  # noqa: F811
) -> None:
    orders, users = seeded["orders"], seeded["users"]
    assert node_cli("migrate").exit_code == 0
    traffic = subprocess.Popen(
        ["node", "traffic.js", str(users["budi"]), str(TRAFFIC), "4"],
        cwd=NODE_DIR, env=node_db.node_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    refunds = [(orders["settled"], 4600), (orders["to_refund"], 9000), (orders["to_refund"], 1000)]
    ours: list[str] = []
    rounds = 0
    overlapped = 0
    try:
        while traffic.poll() is None or rounds < 2:
            overlapped += traffic.poll() is None
            charged = node_cli("charge", "--amount", str(20000 + rounds), "--user-id", str(users["sari"]), "--json")
            assert charged.exit_code == 0, charged
            order = charged.json()["order_id"]
            ours.append(order)
            body = tmp_path / f"{order}.json"
            body.write_text(json.dumps(sandbox.pay(order, "settlement")))
            replay = node_cli("replay-webhook", str(body), "--json")
            assert replay.exit_code == 0 and replay.json()["summary"]["applied"] == 1, replay
            checked = node_cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json")
            assert checked.exit_code == 0, checked
            assert checked.json()["summary"]["errors"] == 0, checked.stdout
            if refunds:
                order_id, amount = refunds.pop(0)
                refund = node_cli("refund", order_id, "--amount", str(amount), "--yes", "--json")
                assert refund.exit_code == 0, refund
            rounds += 1
        out, err = traffic.communicate(timeout=300)
    finally:
        if traffic.poll() is None:
            traffic.kill()
            traffic.wait()
    assert traffic.returncode == 0, err
    assert overlapped >= 1, "midpay ran while the backend was writing"
    node_orders: dict[str, str] = json.loads(out)["orders"]
    assert len(node_orders) == TRAFFIC
    final = node_cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json")
    assert final.exit_code == 0 and final.json()["summary"]["errors"] == 0, final

    midtrans = {o["order_id"]: o for o in sandbox.orders()}
    with psycopg.connect(node_db.url) as conn:
        rows = conn.execute(
            "SELECT order_id, lower(status), paid_at, gross_amount FROM payment_transactions"
        ).fetchall()
        done = dict(conn.execute(
            "SELECT order_id, sum(amount) FROM payment_refunds WHERE status = 'done' GROUP BY order_id"
        ).fetchall())
        events = conn.execute(
            "SELECT count(*) FROM payment_webhook_events WHERE source IS NOT NULL AND outcome = 'applied'"
        ).fetchone()
    assert {r[0] for r in rows} == set(midtrans), "every row is one Midtrans knows, and the other way round"
    for order_id, status, paid_at, amount in rows:
        there = midtrans[order_id]
        assert status == there["transaction_status"], order_id
        assert (paid_at is not None) == (status in states.PAID_STATES | {"partial_refund", "refund"}), order_id
        assert amount == there["gross_amount"]
    assert done == {orders["settled"]: 4600, orders["to_refund"]: 10000}
    assert {o: midtrans[o]["refunded_amount"] for o in done} == done
    assert events == (len(ours),)
    for order_id, outcome in node_orders.items():
        assert midtrans[order_id]["transaction_status"] in (outcome, "pending")

    nothing = node_db.migrate_up()
    assert nothing.returncode == 0 and "No migrations to run!" in nothing.stdout, nothing
