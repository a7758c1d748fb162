"""The intake end to end: real PostgreSQL, the sandbox over HTTP, the real command line.

A verified notification is a hint; Midtrans' answer decides. Every forgery here starts
from a genuine, correctly signed body (the sandbox's) and edits only fields the
signature does not cover: online the row ends as Midtrans says, offline it moves no
further than the signed status_code proves.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay import db
from midpay.intake import pipeline as intake
from midpay.intake.single import receive
from midpay.midtrans.gateway import Gateway
from midpay.payments import charge as charges
from tests.conftest import SERVER_KEY
from tests.helpers import payment_row
from tests.intake_helpers import as_stored, charge_order, midtrans_says, stored_events, write_json

# --- forgeries: a genuine body, its unsigned fields edited ------------------------------

FORGERIES: dict[str, tuple[str, dict[str, Any]]] = {
    # the issue's: nothing was refunded
    "settlement-claims-refund": ("settlement", {"transaction_status": "refund"}),
    # the issue's: paid_at becomes whatever was typed
    "settlement-time-edited": ("settlement", {"settlement_time": "2020-01-01 00:00:00"}),
    # the issue's: same status_code 202
    "expire-claims-failure": ("expire", {"transaction_status": "failure"}),
    "expire-claims-cancel": ("expire", {"transaction_status": "cancel"}),
    "pending-claims-settlement": ("pending", {"transaction_status": "settlement",
                                              "settlement_time": "2026-11-26 10:00:00"}),
    "pending-claims-partial-refund": ("pending", {"transaction_status": "partial_refund"}),
    "cancel-claims-settlement": ("cancel", {"transaction_status": "settlement"}),
    "settlement-fraud-deny": ("settlement", {"fraud_status": "deny"}),
    "pending-fraud-challenge-capture": ("pending", {"transaction_status": "capture", "fraud_status": "challenge"}),
    "settlement-paid-by-qris": ("settlement", {"payment_type": "qris"}),
    "settlement-foreign-transaction-id": ("settlement", {"transaction_id": "00000000-0000-4000-8000-000000000000"}),
    "settlement-refunds-listed": (
        "settlement", {"refund_amount": "1000.00", "refunds": [{"refund_amount": "1000.00"}]},
    ),
    "settlement-status-upper-case": ("settlement", {"transaction_status": "REFUND"}),
    "settlement-claims-unknown-status": ("settlement", {"transaction_status": "chargeback"}),
}


def _forged(cli: Any, sandbox: Any, state: str, edits: dict[str, Any], amount: int) -> tuple[str, dict[str, Any]]:
    order_id = charge_order(cli, amount)
    genuine = sandbox.pay(order_id, state)
    return order_id, {**genuine, **edits}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_body_online_leaves_the_row_as_midtrans_says(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path, name: str
) -> None:
    state, edits = FORGERIES[name]
    order_id, forged = _forged(cli, sandbox, state, edits, 15000)
    result = cli("replay-webhook", str(write_json(tmp_path / "forged.json", forged)), "--json")
    assert result.exit_code == 0, result
    [item] = result.json()["results"]
    assert (item["verified"], item["confirmed"], item["error"]) == (True, True, None), item
    assert as_stored(payment_row(db_url, order_id)) == midtrans_says(sandbox, order_id)
    if forged.get("transaction_status") != state:
        event = stored_events(db_url, order_id)[-1]
        assert f"Midtrans says {state}" in event["processing_error"], event


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_body_offline_moves_nothing_beyond_its_signed_code(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path, name: str
) -> None:
    state, edits = FORGERIES[name]
    order_id, forged = _forged(cli, sandbox, state, edits, 16000)
    before = payment_row(db_url, order_id)
    result = cli("replay-webhook", str(write_json(tmp_path / "forged.json", forged)), "--offline", "--json")
    [item] = result.json()["results"]
    after = payment_row(db_url, order_id)
    assert after["paid_at"] is None and after["payment_type"] == "gopay"
    assert after["midtrans_transaction_id"] == before["midtrans_transaction_id"]
    if forged["status_code"] == "201":  # proves pending, which the row is already
        assert (result.exit_code, item["outcome"], after["status"]) == (0, "unchanged", "pending"), result
    else:  # 200 and 202 stand for several states: none applied, all awaiting
        assert (result.exit_code, item["outcome"], after["status"]) == (1, "awaiting", "pending"), result
        assert after["unconfirmed_since"] is not None
        assert item["error"].startswith(f"awaiting confirmation: status_code {forged['status_code']} stands for")


def test_another_orders_transaction_id_in_a_pending_body_is_never_stored(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    """The issue's fourth forgery: the real owner's settlement must still apply."""
    with psycopg.connect(db_url) as conn:  # the charge answer was lost: no transaction id yet
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES ('victim-a', 17000, 'gopay', 'created')"
        )
    gateway.charge(order_id="victim-a", gross_amount=17000, idempotency_key="k-victim-a")
    owner = charge_order(cli, 18000)
    owner_txn = payment_row(db_url, owner)["midtrans_transaction_id"]
    forged = {**sandbox.pay("victim-a", "pending"), "transaction_id": owner_txn}
    for flag in ("--offline", None):
        args = ["replay-webhook", str(write_json(tmp_path / "a.json", forged)), "--json"] + ([flag] if flag else [])
        assert cli(*args).exit_code == 0
        assert payment_row(db_url, "victim-a")["midtrans_transaction_id"] != owner_txn
    assert payment_row(db_url, "victim-a")["midtrans_transaction_id"] == sandbox.get_order("victim-a")["transaction_id"]
    settle = cli("replay-webhook", str(write_json(tmp_path / "b.json", sandbox.pay(owner, "settlement"))), "--json")
    assert settle.exit_code == 0, settle
    assert payment_row(db_url, owner)["status"] == "settlement" and payment_row(db_url, owner)["paid_at"] is not None


# --- answers that do not fit the row asked about ---------------------------------------------

TAMPERED: dict[str, tuple[dict[str, Any], str]] = {
    "another-order": ({"order_id": "{other}"}, "is about order"),
    "another-amount": ({"gross_amount": "1.00"}, "amount mismatch"),
    "another-transaction": ({"transaction_id": "dddddddd-0000-4000-8000-000000000000"}, "is about transaction"),
    "unknown-status": ({"transaction_status": "chargeback"}, "does not know"),
    "denied-settlement": ({"fraud_status": "deny"}, "contradict each other"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_tampered_confirmation_changes_no_row(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path, name: str
) -> None:
    fields, message = TAMPERED[name]
    order_id, other = charge_order(cli, 25000), charge_order(cli, 25000)
    body = sandbox.pay(order_id, "settlement")
    sandbox.pay(other, "settlement")
    before = (payment_row(db_url, order_id), payment_row(db_url, other))
    # Every answer about order_id is edited from here on (the sandbox re-signs it).
    sandbox.tamper(order_id, {k: v.format(other=other) if isinstance(v, str) else v for k, v in fields.items()})
    result = cli("replay-webhook", str(write_json(tmp_path / "s.json", body)), "--json")
    assert result.exit_code == 1, result
    [item] = result.json()["results"]
    assert item["outcome"] == "rejected" and message in item["error"] and "nothing applied" in item["error"]
    assert (payment_row(db_url, order_id), payment_row(db_url, other)) == before
    # reconcile asks about both: the tampered answer is an error for its row only
    rec = cli("reconcile", "--min-age", "0", "--json")
    assert rec.exit_code == 1, rec
    by_order = {r["order_id"]: r for r in rec.json()["results"]}
    assert message in by_order[order_id]["error"] and by_order[other]["status_after"] == "settlement"
    assert payment_row(db_url, order_id) == before[0]
    status = cli("status", order_id, "--json")
    assert payment_row(db_url, order_id) == before[0], status
    assert [e["outcome"] for e in stored_events(db_url, order_id)] == ["rejected"]


def test_tampered_cancel_and_charge_answers_change_nothing(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = charge_order(cli, 26000)
    before = payment_row(db_url, order_id)
    sandbox.tamper(order_id, {"order_id": "someone-else"}, endpoints=["cancel"])
    cancel = cli("cancel", order_id, "--yes", "--json")
    assert cancel.exit_code == 1 and "is about order 'someone-else'" in cancel.stderr, cancel
    assert payment_row(db_url, order_id) == before
    sandbox.tamper("tc-1", {"gross_amount": "1.00"}, endpoints=["charge"])
    charged = cli("charge", "--amount", "27000", "--order-id", "tc-1", "--json")
    assert charged.exit_code == 1 and "amount mismatch for tc-1" in charged.stderr, charged
    assert payment_row(db_url, "tc-1")["status"] == "created"  # reconcile asks again later


def test_payment_type_follows_midtrans(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    """A GoPay charge paid by a QRIS scan: Midtrans reports qris, and so does the row."""
    order_id = charge_order(cli, 28000)
    body = sandbox.pay(order_id, "settlement", payment_type="qris")
    assert cli("replay-webhook", str(write_json(tmp_path / "s.json", {**body, "payment_type": "gopay"}))).exit_code == 0
    assert payment_row(db_url, order_id)["payment_type"] == "qris"


def test_fraud_review_over_http(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    """capture + challenge is not paid; accepted, it is; settlement + deny applies nothing."""
    order_id = charge_order(cli, 28500)
    challenged = sandbox.pay(order_id, "capture", fraud_status="challenge")
    result = cli("replay-webhook", str(write_json(tmp_path / "c.json", challenged)), "--json")
    assert result.exit_code == 0, result
    assert (payment_row(db_url, order_id)["status"], payment_row(db_url, order_id)["paid_at"]) == ("pending", None)
    accepted = sandbox.pay(order_id, "capture", fraud_status="accept")
    assert cli("replay-webhook", str(write_json(tmp_path / "a.json", accepted))).exit_code == 0
    row = payment_row(db_url, order_id)
    assert row["status"] == "capture" and row["paid_at"] is not None

    denied = charge_order(cli, 28600)
    body = sandbox.pay(denied, "settlement", fraud_status="deny")
    result = cli("replay-webhook", str(write_json(tmp_path / "d.json", body)), "--json")
    assert result.exit_code == 1 and "contradict each other" in result.json()["results"][0]["error"], result
    assert (payment_row(db_url, denied)["status"], payment_row(db_url, denied)["paid_at"]) == ("pending", None)


@pytest.mark.parametrize("end", ["refund", "partial_refund"])
def test_refunded_while_every_notification_was_lost(cli: Any, db_url: str, sandbox: Any, gateway: Any, end: str
                                                    ) -> None:
    order_id = charge_order(cli, 29000)
    sandbox.pay(order_id, "settlement")
    gateway.refund(order_id, refund_key="lost-1", amount=29000 if end == "refund" else 9000)
    assert payment_row(db_url, order_id)["status"] == "pending"  # no notification ever arrived
    status = cli("status", order_id, "--json")
    assert status.exit_code == 0, status
    row = payment_row(db_url, order_id)
    assert row["status"] == end and row["paid_at"] == midtrans_says(sandbox, order_id)["paid_at"] is not None


# --- confirmations: how many, how fast -------------------------------------------------------


def test_a_thousand_bodies_with_many_duplicates_make_one_call_per_order(
    db_url: str, cli: Any, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    orders = []
    with db.connect(db_url) as conn:
        for i in range(100):
            orders.append(charges.charge(conn, gateway, amount=30000 + i, order_id=f"k-{i:03d}").payment.order_id)
    pending = {o: sandbox.pay(o, "pending") for o in orders}
    settled = {o: sandbox.pay(o, "settlement") for o in orders[:70]}
    lines = []
    for i, order_id in enumerate(orders):
        copies = [pending[order_id]] * (4 if order_id in settled else 10)
        copies += [settled[order_id]] * 6 if order_id in settled else []
        lines += [json.dumps(c) for c in copies[:-1]]
        # every tenth order's last body spaced differently: identical all the same
        lines.append(json.dumps(copies[-1], separators=(" ,", ":  ")) if i % 10 == 0 else json.dumps(copies[-1]))
    assert len(lines) == 1000 and len({json.loads(line)["order_id"] for line in lines}) == 100
    path = tmp_path / "day.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    sandbox.reset_stats()
    first = cli("replay-webhook", str(path), "--concurrency", "8", "--json")
    assert first.exit_code == 0, first.stderr
    checks = sandbox.stats()["status_checks"]
    assert sorted(checks) == sorted(orders) and set(checks.values()) == {1}, "one confirmation per order"
    doc = first.json()
    assert doc["summary"]["rejected"] == 0 and doc["summary"]["applied"] == 70
    for order_id in orders:
        outcomes = [r["outcome"] for r in doc["results"] if r["order_id"] == order_id]
        want = ["applied"] if order_id in settled else []
        assert outcomes == want + ["unchanged"] * (len(outcomes) - len(want)), order_id
        assert as_stored(payment_row(db_url, order_id)) == midtrans_says(sandbox, order_id)
    sandbox.reset_stats()
    again = cli("replay-webhook", str(path), "--json")
    assert again.exit_code == 0 and again.json()["summary"]["unchanged"] == 1000
    assert sandbox.stats()["status_checks"] == {}, "bodies identical to confirmed ones are not asked about again"


# --- when Midtrans cannot be asked -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_midtrans_unreachable_stores_everything_and_names_offline(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    ids = [charge_order(cli, 31000 + i) for i in range(3)]
    folder = tmp_path / "day"
    folder.mkdir()
    for i, order_id in enumerate(ids):
        write_json(folder / f"{i}.json", sandbox.pay(order_id, "settlement"))
    os.environ["MIDTRANS_API_URL"] = f"http://127.0.0.1:{_closed_port()}"
    result = cli("replay-webhook", str(folder), "--json")
    assert result.exit_code == 3, result
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: Midtrans could not be asked to confirm 3 notification(s)") and "--offline" in line
    doc = result.json()
    assert "--offline" in doc["error"] and doc["summary"]["awaiting"] == 3
    assert all(r["outcome"] == "awaiting" and r["error"].startswith("awaiting confirmation") for r in doc["results"])
    for order_id in ids:
        row = payment_row(db_url, order_id)
        assert row["status"] == "pending" and row["unconfirmed_since"]
        assert [(e["outcome"], e["processed"]) for e in stored_events(db_url, order_id)] == [("awaiting", False)]
    os.environ["MIDTRANS_API_URL"] = sandbox.url
    again = cli("events", "reprocess", "--json")
    assert again.exit_code == 0 and again.json()["summary"]["applied"] == 3, again
    assert all(payment_row(db_url, o)["status"] == "settlement" for o in ids)


def test_a_server_key_midtrans_refuses_is_exit_2_with_every_body_stored(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    from midpay.sandbox import SandboxServer

    order_id = charge_order(cli, 32000)
    path = write_json(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    with SandboxServer(server_key="SB-Mid-server-another-merchant") as other:
        os.environ["MIDTRANS_API_URL"] = other.url
        result = cli("replay-webhook", str(path), "--json")
    assert result.exit_code == 2, result
    assert "refused the server key (401)" in result.stderr and "MIDTRANS_SERVER_KEY" in result.stderr
    assert result.json()["results"][0]["outcome"] == "awaiting"
    assert [e["outcome"] for e in stored_events(db_url, order_id)] == ["awaiting"]


def test_without_a_server_key_every_body_is_stored_undecided(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    order_id = charge_order(cli, 33000)
    path = write_json(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    del os.environ["MIDTRANS_SERVER_KEY"]
    for flags in ((), ("--offline",)):
        result = cli("replay-webhook", str(path), *flags, "--json")
        assert result.exit_code == 2, result
        assert result.json() == {"error": result.stderr.strip().removeprefix("Error: "), "exit_code": 2}
        assert result.stderr == (
            "Error: MIDTRANS_SERVER_KEY is not set, so no signature can be checked: 1 bodies stored undecided; "
            "set it and run `midpay events reprocess`\n"
        )
    assert [(e["outcome"], e["processed"]) for e in stored_events(db_url, order_id)] == [(None, False)] * 2
    os.environ["MIDTRANS_SERVER_KEY"] = SERVER_KEY
    again = cli("events", "reprocess", "--json")
    assert again.exit_code == 0, again
    assert [r["outcome"] for r in again.json()["results"]] == ["applied", "unchanged"]


# --- the exact bytes, the crash points, the single-body entry point ------------------------


def test_the_exact_bytes_are_kept(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = charge_order(cli, 34000)
    genuine = sandbox.pay(order_id, "settlement")
    text = json.dumps(genuine, indent=7).replace('"currency"', '"currency": "XXX",\n   "currency"', 1)
    raw = ("\r\n" + text + "  \n").encode()  # a duplicate key, odd spacing, CRLF
    path = tmp_path / "odd.json"
    path.write_bytes(raw)
    assert cli("replay-webhook", str(path)).exit_code == 0
    [event] = stored_events(db_url, order_id)
    assert bytes(event["raw_bytes"]) == raw and event["outcome"] == "applied"


def test_receive_keeps_a_bom_and_decides_once_committed(db_url: str, sandbox: Any, gateway: Any) -> None:
    with db.connect(db_url) as conn:
        order_id = charges.charge(conn, gateway, amount=35000).payment.order_id
        data = b"\xef\xbb\xbf" + json.dumps(sandbox.pay(order_id, "settlement")).encode()
        result = receive(lambda: nullcontext(conn), gateway, data, "http:127.0.0.1", server_key=SERVER_KEY)
    assert (result.outcome, result.confirmed, result.status_after) == ("applied", True, "settlement")
    [event] = stored_events(db_url, order_id)
    assert bytes(event["raw_bytes"]) == data and event["source"] == "http:127.0.0.1"
    assert event["processed"] and event["confirmed_at"] is not None


def test_receive_with_midtrans_unreachable_returns_awaiting(db_url: str, sandbox: Any, gateway: Any) -> None:
    with db.connect(db_url) as conn:
        order_id = charges.charge(conn, gateway, amount=36000).payment.order_id
        data = json.dumps(sandbox.pay(order_id, "settlement")).encode()
        with Gateway(base_url=f"http://127.0.0.1:{_closed_port()}", server_key=SERVER_KEY, backoff=0.01) as down:
            result = receive(lambda: nullcontext(conn), down, data, "http:test", server_key=SERVER_KEY)
    assert result.outcome == "awaiting" and result.gateway_error is not None
    assert [e["outcome"] for e in stored_events(db_url, order_id)] == ["awaiting"]


def test_receive_raises_database_unavailable_when_postgresql_goes(db_url: str, sandbox: Any, gateway: Any) -> None:
    from midpay.errors import DatabaseUnavailable

    with db.connect(db_url) as conn, psycopg.connect(db_url, autocommit=True) as killer:
        pid = conn.info.backend_pid
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DatabaseUnavailable):
            receive(lambda: nullcontext(conn), gateway, b'{"order_id": "x"}', "http:test", server_key=SERVER_KEY)


@pytest.mark.parametrize("crash_after", ["store", "screen"])
def test_a_crash_between_the_steps_leaves_the_event_for_reprocess(
    db_url: str, sandbox: Any, gateway: Any, crash_after: str
) -> None:
    from midpay.intake import bodies, received
    from midpay.intake import online as confirm

    with db.connect(db_url) as conn:
        order_id = charges.charge(conn, gateway, amount=37000).payment.order_id
        [item] = received.items_of([bodies.decode_body("crash", json.dumps(sandbox.pay(order_id, "settlement")))])
        received.store(conn, [item])
        if crash_after == "screen":
            screened = intake.screen(conn, [item], SERVER_KEY, online=True)
            assert list(screened.candidates) == [order_id]
    [event] = stored_events(db_url, order_id)
    assert event["processed"] is False and event["outcome"] == (None if crash_after == "store" else "awaiting")
    report = confirm.reprocess(db_url, gateway, SERVER_KEY)
    assert [r.outcome for r in report.results] == ["applied"]
    assert payment_row(db_url, order_id)["status"] == "settlement"


def test_dry_run_confirms_and_writes_nothing(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = charge_order(cli, 38000)
    path = write_json(tmp_path / "s.json", {**sandbox.pay(order_id, "settlement"), "transaction_status": "refund"})
    dry = cli("replay-webhook", str(path), "--dry-run", "--json")
    assert dry.exit_code == 0, dry
    assert dry.json()["results"][0]["status_after"] == "settlement"  # Midtrans' answer, not the body's
    assert payment_row(db_url, order_id)["status"] == "pending" and stored_events(db_url) == []


def test_help_describes_confirmation_and_offline(cli: Any) -> None:
    for args in (("replay-webhook", "--help"), ("events", "reprocess", "--help")):
        shown = cli(*args)
        assert shown.exit_code == 0
        text = " ".join(shown.stdout.split())
        assert "--offline" in text and "confirm" in text.lower() and "--concurrency" in text
