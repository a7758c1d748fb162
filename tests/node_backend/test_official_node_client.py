"""Midtrans' official Node client (npm midtrans-client, pinned in package.json) against the sandbox.

The Node backend midpay takes over talked to Midtrans through this client. Here it
works on the same payments as midpay, on the Node backend's own database: what it sees
of a midpay charge, what its notification helper (a Get Status by transaction id) finds
for a notification midpay replays, and a refund it makes that midpay's ledger then counts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .conftest import NODE_DIR, NodeDb
from .test_takeover import seeded  # noqa: F401 - the fixture


def _official(node_db: NodeDb, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", "official_client.js", *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=120,
        env=node_db.node_env(),
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_official_node_client_and_midpay_on_the_same_payment(
    node_db: NodeDb, node_cli: Any, seeded: dict[str, Any], sandbox: Any, tmp_path: Path  # noqa: F811
) -> None:
    assert node_cli("migrate").exit_code == 0
    user = str(seeded["users"]["sari"])
    charged = node_cli("charge", "--amount", "75000", "--user-id", user, "--json")
    assert charged.exit_code == 0, charged
    order_id = charged.json()["order_id"]

    seen = _official(node_db, "status", order_id)
    assert seen["ok"], seen
    assert (seen["answer"]["transaction_status"], seen["answer"]["gross_amount"]) == ("pending", "75000.00")
    assert seen["answer"]["transaction_id"] == charged.json()["midtrans_transaction_id"]

    body = sandbox.pay(order_id, "settlement")
    confirmed = _official(node_db, "notification", json.dumps(body))
    assert confirmed["ok"] and confirmed["answer"]["transaction_status"] == "settlement", confirmed
    path = tmp_path / "paid.json"
    path.write_text(json.dumps(body))
    replayed = node_cli("replay-webhook", str(path), "--json")
    assert replayed.exit_code == 0, replayed
    assert replayed.json()["results"][0]["status_after"] == "settlement"

    refunded = _official(node_db, "refund", order_id, "node-admin-1", "25000")
    assert refunded["ok"] and refunded["answer"]["transaction_status"] == "partial_refund", refunded
    rest = node_cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0, rest
    assert rest.json()["refund"]["amount"] == 50000
    assert sandbox.paid_out(order_id) == 75000
    shown = node_cli("status", order_id, "--no-refresh", "--json").json()
    assert shown["status"] == "refund" and shown["refunded_amount"] == 75000
    assert "node-admin-1" in {r["refund_key"] for r in shown["refunds"]}


def test_the_official_node_client_reads_the_sandboxs_errors(node_db: NodeDb, node_project: Path) -> None:
    unknown = _official(node_db, "status", "never-charged")
    assert not unknown["ok"] and unknown["api"]["status_code"] == "404", unknown
    charged = _official(node_db, "charge", "js-expire-1", "33000")
    assert charged["ok"] and charged["answer"]["status_code"] == "201", charged
    expired = _official(node_db, "expire", "js-expire-1")  # 407 is the client's one non-error 4xx
    assert expired["ok"] and expired["answer"]["transaction_status"] == "expire", expired
