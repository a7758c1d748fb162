"""Replays decided in batches: many orders in one transaction, offline over several connections.

Real PostgreSQL, the sandbox over HTTP, the command line. What is checked is what a
batch must not change: every body stored and its own outcome recorded, one order's
bodies applied in the order they came, one bad order rejected without taking the
others of its batch with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from midpay import db
from midpay.midtrans.notifications import compute_signature
from midpay.payments import charge as charges
from tests.conftest import SERVER_KEY
from tests.helpers import payment_row
from tests.intake_helpers import stored_events


def _body(order_id: str, amount: int, code: str, status: str) -> dict[str, Any]:
    gross = f"{amount}.00"
    return {
        "order_id": order_id, "status_code": code, "gross_amount": gross, "transaction_status": status,
        "signature_key": compute_signature(order_id, code, gross, SERVER_KEY), "payment_type": "gopay",
    }


def test_offline_over_three_connections_keeps_each_orders_bodies_in_order(
    cli: Any, db_url: str, tmp_path: Path
) -> None:
    orders = [(f"part-{i:03d}", 20000 + i) for i in range(150)]
    with psycopg.connect(db_url) as conn:
        for order_id, amount in orders:
            conn.execute(
                "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
                "VALUES (%s, %s, 'gopay', 'created')",
                (order_id, amount),
            )
    # every pending body, then every expiry, then every pending again (stale by then):
    # 450 bodies over three batches of each connection, an order's in three of them
    lines = [_body(o, a, "201", "pending") for o, a in orders]
    lines += [_body(o, a, "407", "expire") for o, a in orders]
    lines += [_body(o, a, "201", "pending") for o, a in orders]
    lines.insert(200, {**_body("part-000", 20000, "201", "pending"), "signature_key": "0" * 128})
    lines.insert(300, _body("no-such-order", 1000, "201", "pending"))
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = cli("replay-webhook", str(path), "--offline", "--connections", "3", "--json")

    assert result.exit_code == 1, result  # the forged and the unknown body are rejected
    doc = result.json()
    assert doc["summary"] == {"total": 452, "applied": 300, "unchanged": 150, "awaiting": 0, "rejected": 2}
    assert [r["source"] for r in doc["results"]] == [f"{path}:{n}" for n in range(1, 453)], "input order"
    for order_id, _ in orders:
        outcomes = [r["outcome"] for r in doc["results"] if r["order_id"] == order_id and r["verified"]]
        assert outcomes == ["applied", "applied", "unchanged"], order_id
        assert payment_row(db_url, order_id)["status"] == "expire"
    events = stored_events(db_url)
    assert len(events) == 452
    assert sorted(e["outcome"] for e in events) == sorted(r["outcome"] for r in doc["results"])
    assert sum(e["processed"] for e in events) == 450


def test_connections_is_for_offline_replays(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{}")
    result = cli("replay-webhook", str(path), "--connections", "2")
    assert result.exit_code == 2 and "--offline" in result.stderr


def test_an_answer_that_does_not_fit_rejects_its_order_only(
    db_url: str, cli: Any, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    with db.connect(db_url) as conn:
        orders = [charges.charge(conn, gateway, amount=40000 + i, order_id=f"fit-{i:02d}").payment.order_id
                  for i in range(30)]
    settled = [sandbox.pay(o, "settlement") for o in orders]
    with psycopg.connect(db_url) as conn:  # the row of one order names another transaction than Midtrans does
        conn.execute(
            "UPDATE payment_transactions SET midtrans_transaction_id = 'dddddddd-0000-4000-8000-000000000000' "
            "WHERE order_id = 'fit-07'"
        )
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in settled))

    result = cli("replay-webhook", str(path), "--concurrency", "8", "--json")

    assert result.exit_code == 1, result
    doc = result.json()
    assert doc["summary"] == {"total": 30, "applied": 29, "unchanged": 0, "awaiting": 0, "rejected": 1}
    [bad] = [r for r in doc["results"] if r["outcome"] == "rejected"]
    assert bad["order_id"] == "fit-07" and "transaction" in bad["error"]
    assert payment_row(db_url, "fit-07")["status"] == "pending"
    assert all(payment_row(db_url, o)["status"] == "settlement" for o in orders if o != "fit-07")
    assert [e["outcome"] for e in stored_events(db_url, "fit-07")] == ["rejected"]
