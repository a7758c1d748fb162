"""Every path that changes a payment writes exactly the documented events (issue 21, "Done when").

Each test drives a payment through the real command line (or the function ``listen``
calls, ``intake.single.receive``) against the sandbox and a real PostgreSQL, and reads
payment_events back: the types in order, ``sequence`` 1, 2, 3 …, ``previous_status``, one
``payment.paid`` with the change that first sets ``paid_at``, and ``data`` equal to the
``status --json`` document printed right after the change.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psycopg

from midpay.db import outbox
from midpay.intake.single import receive
from midpay.midtrans.notifications import compute_signature
from midpay.outbox.events import render
from tests.conftest import SERVER_KEY


def events(url: str, order_id: str) -> list[dict[str, Any]]:
    """The order's event documents, in sequence, as ``deliver`` would send them."""
    with psycopg.connect(url) as conn:
        return [json.loads(render(e)) for e in outbox.events_of_order(conn, order_id)]


def status_json(cli: Any, order_id: str) -> dict[str, Any]:
    shown = cli("status", order_id, "--no-refresh", "--json")
    assert shown.exit_code == 0, shown
    return dict(shown.json())


def payment_of(event: dict[str, Any]) -> dict[str, Any]:
    """The event's ``data`` without what the event adds: the ``status --json`` document."""
    return {k: v for k, v in event["data"].items() if k not in ("previous_status", "paid")}


def check_lifecycle(found: list[dict[str, Any]], types: list[str]) -> None:
    """The documented rules over one order's events, whatever path wrote them."""
    assert [e["type"] for e in found] == types
    assert [e["sequence"] for e in found] == list(range(1, len(found) + 1))
    assert len({e["id"] for e in found}) == len(found)
    assert all(e["id"].startswith("evt_") and e["created_at"].endswith("+07:00") for e in found)
    previous = None
    for i, event in enumerate(found):
        data = event["data"]
        assert data["paid"] == (data["paid_at"] is not None)
        if event["type"] == "payment.paid":
            before = found[i - 1]  # the status event of the same change, with the same snapshot
            assert before["type"] != "payment.paid" and before["data"] == data
            assert all(not e["data"]["paid"] for e in found[: i - 1]), "paid_at set before its payment.paid"
            continue
        assert event["type"] == f"payment.{data['status']}"
        if previous is not None:
            assert data["previous_status"] == previous
        previous = data["status"]
    paid = [e for e in found if e["type"] == "payment.paid"]
    assert len(paid) == (1 if found and found[-1]["data"]["paid"] else 0)


def charge(cli: Any, amount: int) -> str:
    charged = cli("charge", "--amount", str(amount), "--json")
    assert charged.exit_code == 0, charged
    return str(charged.json()["order_id"])


def write(path: Path, body: Any) -> str:
    path.write_text(json.dumps(body))
    return str(path)


def test_charge_writes_payment_pending_with_the_charge_document(cli: Any, db_url: str) -> None:
    charged = cli("charge", "--amount", "154600", "--user-id", "7", "--json")
    assert charged.exit_code == 0, charged
    order_id = charged.json()["order_id"]
    [event] = events(db_url, order_id)
    check_lifecycle([event], ["payment.pending"])
    assert event["data"]["previous_status"] in (None, "created")
    assert payment_of(event) == status_json(cli, order_id)
    assert {k: payment_of(event)[k] for k in charged.json()} == charged.json()


def test_listen_then_partial_and_full_refund(cli: Any, db_url: str, sandbox: Any, gateway: Any) -> None:
    order_id = charge(cli, 100000)
    note = sandbox.pay(order_id, "settlement")
    with psycopg.connect(db_url) as conn:
        result = receive(lambda: nullcontext(conn), gateway, json.dumps(note).encode(), "test", server_key=SERVER_KEY)
    assert result.outcome == "applied", result
    settled = status_json(cli, order_id)
    assert [payment_of(e) for e in events(db_url, order_id)[1:]] == [settled, settled]

    partly = cli("refund", order_id, "--amount", "30000", "--yes", "--json")
    assert partly.exit_code == 0, partly
    assert payment_of(events(db_url, order_id)[-1]) == status_json(cli, order_id)
    full = cli("refund", order_id, "--yes", "--json")
    assert full.exit_code == 0, full
    found = events(db_url, order_id)
    assert payment_of(found[-1]) == status_json(cli, order_id)
    check_lifecycle(found, [
        "payment.pending", "payment.settlement", "payment.paid", "payment.partial_refund", "payment.refund",
    ])
    assert found[3]["data"]["refunded_amount"] == 30000 and found[3]["data"]["refundable_amount"] == 70000
    assert found[4]["data"]["refunded_amount"] == 100000 and found[4]["data"]["refundable_amount"] == 0
    assert found[2]["data"]["refunds"] == [], "the refunds as they were at that change"


def test_replay_webhook_online_and_offline(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    online, offline = charge(cli, 20000), charge(cli, 30000)
    replayed = cli("replay-webhook", write(tmp_path / "a.json", sandbox.pay(online, "settlement")), "--json")
    assert replayed.exit_code == 0 and replayed.json()["summary"]["applied"] == 1, replayed
    assert payment_of(events(db_url, online)[-1]) == status_json(cli, online)
    check_lifecycle(events(db_url, online), ["payment.pending", "payment.settlement", "payment.paid"])

    expired = {  # Midtrans' expiry notice: its signed status_code 407 proves expire offline
        "order_id": offline, "status_code": "407", "gross_amount": "30000.00", "transaction_status": "expire",
        "signature_key": compute_signature(offline, "407", "30000.00", SERVER_KEY),
    }
    body = write(tmp_path / "b.json", expired)
    replayed = cli("replay-webhook", body, "--offline", "--json")
    assert replayed.exit_code == 0 and replayed.json()["summary"]["applied"] == 1, replayed
    assert cli("replay-webhook", body, "--offline", "--json").exit_code == 0  # the same again: no change, no event
    assert payment_of(events(db_url, offline)[-1]) == status_json(cli, offline)
    check_lifecycle(events(db_url, offline), ["payment.pending", "payment.expire"])


def test_reconcile_and_status_record_what_midtrans_says(cli: Any, db_url: str, sandbox: Any) -> None:
    denied, settled, captured = charge(cli, 11000), charge(cli, 12000), charge(cli, 13000)
    sandbox.pay(denied, "deny")  # midpay is told nothing: reconcile finds out
    sandbox.pay(captured, "capture", fraud_status="accept")
    ran = cli("reconcile", "--min-age", "0", "--json")
    assert ran.exit_code == 0, ran
    check_lifecycle(events(db_url, denied), ["payment.pending", "payment.deny"])
    assert payment_of(events(db_url, denied)[-1]) == status_json(cli, denied)
    check_lifecycle(events(db_url, captured), ["payment.pending", "payment.capture", "payment.paid"])

    sandbox.pay(settled, "settlement")
    shown = cli("status", settled, "--json")  # asks Midtrans and records the answer
    assert shown.exit_code == 0, shown
    found = events(db_url, settled)
    check_lifecycle(found, ["payment.pending", "payment.settlement", "payment.paid"])
    assert payment_of(found[-1]) == shown.json(), "data is what status --json printed at that change"


def test_cancel_and_expire(cli: Any, db_url: str) -> None:
    cancelled, expired = charge(cli, 14000), charge(cli, 15000)
    assert cli("cancel", cancelled, "--yes", "--json").exit_code == 0
    assert cli("expire", expired, "--yes", "--json").exit_code == 0
    check_lifecycle(events(db_url, cancelled), ["payment.pending", "payment.cancel"])
    check_lifecycle(events(db_url, expired), ["payment.pending", "payment.expire"])
    for order_id in (cancelled, expired):
        assert payment_of(events(db_url, order_id)[-1]) == status_json(cli, order_id)


def test_a_charge_midtrans_refuses_ends_as_payment_failure(cli: Any, db_url: str, gateway: Any) -> None:
    gateway.charge(order_id="taken-1", gross_amount=1000, idempotency_key="k-taken-1")  # spent at Midtrans
    refused = cli("charge", "--amount", "1000", "--order-id", "taken-1", "--json")
    assert refused.exit_code != 0, refused
    found = events(db_url, "taken-1")
    check_lifecycle(found, ["payment.failure"])
    assert payment_of(found[-1]) == status_json(cli, "taken-1")
