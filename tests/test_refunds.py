"""`midpay refund`, and refunds in `status` and `payments`: library and command line.

Against a real PostgreSQL and the sandbox over HTTP. Faults aimed at one step of a
refund are switched on through the crash-point seam (``midpay.refunds.reach``), so
the status check before the refund is answered normally and only the refund itself
times out or loses its answer.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay import refunds
from midpay.errors import MidpayError, MidtransRejected, OutcomeUnknown

from .conftest import SERVER_KEY

PAYMENT_KEYS = {
    "order_id", "status", "gross_amount", "payment_type", "user_id", "midtrans_transaction_id",
    "paid_at", "created_at", "updated_at", "actions", "qr_string", "expiry_time",
    "refunded_amount", "refundable_amount", "refunds",
}
REFUND_KEYS = {
    "refund_key", "refund_chargeback_id", "amount", "reason", "status", "origin", "created_at",
    "refunded_at", "bank_confirmed_at", "refund_method", "updated_at",
}


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    return tmp_path / "notes"


@pytest.fixture
def sandbox(notes: Path) -> Iterator[Any]:
    """The sandbox, writing every notification it sends into ``notes``."""
    from midpay.sandbox import SandboxServer

    with SandboxServer(server_key=SERVER_KEY, seed=1, notify_dir=notes) as server:
        yield server


def paid_out(sandbox: Any, order_id: str) -> int:
    """What the sandbox has refunded to the customer of ``order_id``, however it was asked."""
    if hasattr(sandbox, "paid_out"):
        return int(sandbox.paid_out(order_id))
    return int(sandbox.get_order(order_id)["refunded_amount"])


def dashboard_refund(sandbox: Any, gateway: Any, order_id: str, amount: int) -> None:
    """A refund made on the Midtrans dashboard: midpay never asked for it."""
    if hasattr(sandbox, "refund_outside"):
        sandbox.refund_outside(order_id, amount=amount, reason="refunded by the shop owner")
    else:
        gateway.refund(order_id, refund_key=str(uuid.uuid4()), amount=amount, reason="refunded by the shop owner")


def _refund_notifications(notes: Path) -> list[Path]:
    found = [p for p in notes.glob("*.json") if "refund" in p.name]
    return sorted(found, key=lambda p: int(p.stem.rsplit("-", 1)[-1]))


def _ledger(url: str, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT refund_key, amount, status, origin FROM payment_refunds WHERE order_id = %s "
            "ORDER BY created_at, id",
            (order_id,),
        ).fetchall()


def _status(url: str, order_id: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM payment_transactions WHERE order_id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _settled(cli: Any, sandbox: Any, amount: int) -> str:
    charged = cli("charge", "--amount", str(amount), "--json")
    assert charged.exit_code == 0, charged
    order_id = str(charged.json()["order_id"])
    sandbox.pay(order_id, "settlement")
    assert cli("status", order_id, "--json").json()["status"] == "settlement"
    return order_id


def _at(monkeypatch: pytest.MonkeyPatch, point: str, action: Any) -> None:
    """Run ``action`` once when a refund reaches ``point`` (the crash-point seam)."""
    fired: list[str] = []

    def reach(name: str, conn: Any = None) -> None:
        if name == point and not fired:
            fired.append(name)
            action()

    monkeypatch.setattr(refunds, "reach", reach)


# --- the happy paths -----------------------------------------------------------------------


def test_refund_partly_then_the_rest(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = _settled(cli, sandbox, 100000)
    part = cli("refund", order_id, "--amount", "30000", "--reason", "one item was out of stock", "--yes", "--json")
    assert part.exit_code == 0, part
    doc = part.json()
    assert set(doc) == {"result", "refund", "payment"} and doc["result"] == "refunded"
    assert set(doc["payment"]) == PAYMENT_KEYS and set(doc["refund"]) == REFUND_KEYS | {"order_id"}
    assert doc["payment"]["status"] == "partial_refund"
    assert (doc["payment"]["refunded_amount"], doc["payment"]["refundable_amount"]) == (30000, 70000)
    assert {k: doc["refund"][k] for k in ("refund_key", "order_id", "amount", "reason", "status", "origin")} == {
        "refund_key": f"{order_id}-rf-1", "order_id": order_id, "amount": 30000,
        "reason": "one item was out of stock", "status": "done", "origin": "midpay",
    }
    assert isinstance(doc["refund"]["refund_chargeback_id"], int)

    over = cli("refund", order_id, "--amount", "80000", "--yes")
    assert over.exit_code == 2 and over.stderr.startswith("Error: --amount 80000 is more than the 70000")
    assert cli("refund", order_id, "--amount", "0", "--yes").exit_code == 2

    rest = cli("refund", order_id, "--yes")
    assert rest.exit_code == 0, rest
    assert "Refunded" in rest.stdout and "refunded Rp 70.000 under refund_key" in rest.stdout
    assert _status(db_url, order_id) == "refund"
    assert _ledger(db_url, order_id) == [
        (f"{order_id}-rf-1", 30000, "done", "midpay"), (f"{order_id}-rf-2", 70000, "done", "midpay"),
    ]
    assert paid_out(sandbox, order_id) == 100000

    shown = cli("status", order_id, "--json").json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (100000, 0)
    assert [(r["refund_key"], r["amount"], r["status"]) for r in shown["refunds"]] == [
        (f"{order_id}-rf-1", 30000, "done"), (f"{order_id}-rf-2", 70000, "done"),
    ]
    assert all(r["refunded_at"] and r["refunded_at"].endswith("+07:00") for r in shown["refunds"])


def test_the_same_refund_again_is_a_rerun_and_sends_nothing(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = _settled(cli, sandbox, 50000)
    assert cli("refund", order_id, "--amount", "10000", "--reason", "late", "--yes").exit_code == 0
    again = cli("refund", order_id, "--amount", "10000", "--reason", "late", "--yes", "--json")
    assert again.exit_code == 0, again
    assert again.json()["result"] == "already" and again.json()["refund"]["refund_key"] == f"{order_id}-rf-1"
    human = cli("refund", order_id, "--amount", "10000", "--reason", "late", "--yes")
    assert "this refund was made already" in human.stdout and "give a different --reason" in human.stdout
    assert paid_out(sandbox, order_id) == 10000
    # Another reason is another refund.
    other = cli("refund", order_id, "--amount", "10000", "--reason", "second item", "--yes", "--json")
    assert other.exit_code == 0 and other.json()["result"] == "refunded"
    assert paid_out(sandbox, order_id) == 20000
    # "Refund the rest" again after the rest was refunded: the same rerun, nothing sent.
    assert cli("refund", order_id, "--yes").exit_code == 0
    rest_again = cli("refund", order_id, "--yes", "--json")
    assert rest_again.exit_code == 0 and rest_again.json()["result"] == "already"
    assert paid_out(sandbox, order_id) == 50000


def test_refund_of_an_unpaid_payment_never_reaches_midtrans(cli: Any, sandbox: Any) -> None:
    charged = cli("charge", "--amount", "45000", "--json")
    order_id = charged.json()["order_id"]
    sandbox.reset_stats()
    result = cli("refund", order_id, "--yes")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: order {order_id} is pending: only settlement, capture or partial_refund payments can be "
        "refunded; nothing was sent to Midtrans\n"
    )
    assert sandbox.stats()["requests"] == 0
    missing = cli("refund", "no-such-order", "--yes")
    assert (missing.exit_code, missing.stderr) == (1, "Error: no such order: no-such-order\n")


def test_refund_refused_by_midtrans_is_recorded_and_a_new_key_follows(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = cli("charge", "--amount", "46000", "--json").json()["order_id"]
    with psycopg.connect(db_url) as conn:  # settled here, still pending at Midtrans
        conn.execute("UPDATE payment_transactions SET status = 'settlement' WHERE order_id = %s", (order_id,))
    refused = cli("refund", order_id, "--yes")
    assert refused.exit_code == 1 and "412" in refused.stderr and "recorded as rejected" in refused.stderr
    assert _ledger(db_url, order_id) == [(f"{order_id}-rf-1", 46000, "rejected", "midpay")]
    sandbox.pay(order_id, "settlement")
    assert cli("refund", order_id, "--yes").exit_code == 0
    assert _ledger(db_url, order_id)[-1] == (f"{order_id}-rf-2", 46000, "done", "midpay")
    assert paid_out(sandbox, order_id) == 46000


def test_the_confirmation_prompt_shows_midtrans_figures(cli: Any, monkeypatch: pytest.MonkeyPatch, sandbox: Any,
                                                       gateway: Any) -> None:
    order_id = _settled(cli, sandbox, 80000)
    dashboard_refund(sandbox, gateway, order_id, 30000)
    import midpay.cli.operator

    monkeypatch.setattr(midpay.cli.operator, "_must_ask", lambda action, yes: not yes)  # as if on a terminal
    declined = cli("refund", order_id, input="n\n")
    assert declined.exit_code == 1 and "Aborted: nothing was changed." in declined.stderr
    assert f"Refund Rp 50.000 of order {order_id} (paid Rp 80.000, refunded Rp 30.000, Rp 50.000 left)?" in (
        declined.stderr
    )
    assert paid_out(sandbox, order_id) == 30000
    accepted = cli("refund", order_id, input="y\n")
    assert accepted.exit_code == 0, accepted
    assert paid_out(sandbox, order_id) == 80000


# --- answers lost ------------------------------------------------------------------------


def test_refund_repeated_after_a_timeout_pays_out_once(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _settled(cli, sandbox, 50000)
    os.environ["MIDPAY_TIMEOUT"] = "1"
    # The refund request stalls past the timeout; the sandbox makes the refund only after that.
    _at(monkeypatch, "refund.row_committed", lambda: sandbox.set_faults(stall_rate=1.0, stall_seconds=3))
    timed_out = cli("refund", order_id, "--yes")
    assert timed_out.exit_code == 3, timed_out
    assert "rerun the same command" in timed_out.stderr and f"{order_id}-rf-1" in timed_out.stderr
    sandbox.set_faults(stall_rate=0.0)
    assert _ledger(db_url, order_id) == [(f"{order_id}-rf-1", 50000, "requested", "midpay")]
    assert _status(db_url, order_id) == "settlement"

    other = cli("refund", order_id, "--amount", "100", "--yes")  # a different refund must wait
    assert other.exit_code == 1
    assert other.stderr == (
        f"Error: order {order_id} has a refund of 50000 whose outcome is unknown (refund_key {order_id}-rf-1); "
        f"finish it first: midpay refund {order_id} --amount 50000\n"
    )
    retried = cli("refund", order_id, "--yes", "--json")
    assert retried.exit_code == 0, retried
    assert retried.json()["result"] in ("resent", "recorded")
    assert retried.json()["refund"]["refund_key"] == f"{order_id}-rf-1"
    assert retried.json()["payment"]["status"] == "refund"
    assert _ledger(db_url, order_id) == [(f"{order_id}-rf-1", 50000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 50000


def test_refund_whose_answer_was_garbled_is_recorded_on_the_rerun_without_sending(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _settled(cli, sandbox, 70000)
    _at(monkeypatch, "refund.row_committed", lambda: sandbox.set_faults(malformed_rate=1.0))
    lost = cli("refund", order_id, "--amount", "20000", "--yes")
    assert lost.exit_code == 3 and "stays requested" in lost.stderr, lost
    sandbox.set_faults(malformed_rate=0.0)
    assert paid_out(sandbox, order_id) == 20000  # Midtrans made it; midpay never heard
    sandbox.reset_stats()
    retried = cli("refund", order_id, "--amount", "20000", "--yes", "--json")
    assert retried.exit_code == 0, retried
    assert retried.json()["result"] == "recorded" and retried.json()["payment"]["status"] == "partial_refund"
    assert sandbox.stats()["by_endpoint"]["refund"] == 0
    assert _ledger(db_url, order_id) == [(f"{order_id}-rf-1", 20000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 20000


def test_status_finishes_a_refund_whose_answer_was_lost(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _settled(cli, sandbox, 60000)
    _at(monkeypatch, "refund.row_committed", lambda: sandbox.set_faults(malformed_rate=1.0))
    assert cli("refund", order_id, "--amount", "15000", "--yes").exit_code == 3
    sandbox.set_faults(malformed_rate=0.0)
    shown = cli("status", order_id, "--json")
    assert shown.exit_code == 0, shown
    doc = shown.json()
    assert doc["status"] == "partial_refund" and doc["refunded_amount"] == 15000
    assert [(r["refund_key"], r["status"]) for r in doc["refunds"]] == [(f"{order_id}-rf-1", "done")]
    # And the same command afterwards sends nothing.
    rerun = cli("refund", order_id, "--amount", "15000", "--yes", "--json")
    assert rerun.exit_code == 0 and rerun.json()["result"] == "already"
    assert paid_out(sandbox, order_id) == 15000


def test_refund_called_a_duplicate_but_listed_at_midtrans_is_done(
    conn: psycopg.Connection[Any], gateway: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settled_here(conn, gateway, sandbox, "dup-1", 80000)
    real = gateway.refund

    def paid_but_refused(order_id: str, **kwargs: Any) -> dict[str, Any]:
        real(order_id, **kwargs)  # Midtrans pays, then answers as if the key were a duplicate
        raise MidtransRejected("refund of order 'dup-1': Midtrans refused it (406 Duplicate refund ID)", "406")

    monkeypatch.setattr(gateway, "refund", paid_but_refused)
    outcome = refunds.refund(conn, gateway, "dup-1", amount=30000)
    assert (outcome.refund.status, outcome.refund.refund_key, outcome.payment.status) == (
        "done", "dup-1-rf-1", "partial_refund",
    )
    assert paid_out(sandbox, "dup-1") == 30000


def test_a_lost_refund_abandoned_once_midtrans_reports_the_payment_fully_refunded(
    conn: psycopg.Connection[Any], gateway: Any, sandbox: Any, db_url: str
) -> None:
    from midpay.gateway import Gateway

    _settled_here(conn, gateway, sandbox, "gone-1", 90000)
    sandbox.set_faults(stall_rate=1.0, stall_seconds=0.3)
    with Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=0.2, retries=0) as impatient:
        # The status check stalls too: nothing is recorded and nothing is sent.
        with pytest.raises(OutcomeUnknown, match="nothing was sent to Midtrans"):
            refunds.refund(conn, impatient, "gone-1")
    sandbox.set_faults(stall_rate=0.0)
    assert _ledger(db_url, "gone-1") == []
    with psycopg.connect(db_url) as other:  # an attempt whose outcome is unknown, as a crash leaves it
        payment_id = other.execute("SELECT id FROM payment_transactions WHERE order_id = 'gone-1'").fetchone()
        assert payment_id is not None
        other.execute(
            "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, status) "
            "VALUES (%s, 'gone-1', 'gone-1-rf-1', 90000, 'requested')",
            payment_id,
        )
    dashboard_refund(sandbox, gateway, "gone-1", 90000)  # refunded in full another way meanwhile
    with pytest.raises(MidpayError, match="is refund: all 90000 of it has been refunded"):
        refunds.refund(conn, gateway, "gone-1")
    assert [r[2:] for r in _ledger(db_url, "gone-1")] == [("rejected", "midpay"), ("done", "outside")]
    assert paid_out(sandbox, "gone-1") == 90000


def _settled_here(conn: psycopg.Connection[Any], gateway: Any, sandbox: Any, order_id: str, amount: int) -> None:
    gateway.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"k-{order_id}")
    sandbox.pay(order_id, "settlement")
    conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) VALUES (%s, %s, 'gopay', %s)",
        (order_id, amount, "settlement"),
    )
    conn.commit()


# --- refunds made elsewhere --------------------------------------------------------------


def test_a_dashboard_refund_arriving_as_a_notification_then_the_rest(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, notes: Path
) -> None:
    order_id = _settled(cli, sandbox, 120000)
    dashboard_refund(sandbox, gateway, order_id, 45000)
    bodies = _refund_notifications(notes)
    assert bodies, "the sandbox sends refund notifications"
    replayed = cli("replay-webhook", *map(str, bodies), "--json")
    assert replayed.exit_code == 0, replayed

    shown = cli("status", order_id, "--no-refresh", "--json").json()
    assert shown["status"] == "partial_refund"
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (45000, 75000)
    [outside] = shown["refunds"]
    assert (outside["amount"], outside["origin"], outside["status"]) == (45000, "outside", "done")
    assert outside["refund_key"] and outside["refund_chargeback_id"] is not None
    human = cli("status", order_id, "--no-refresh")
    assert "outside midpay" in human.stdout and "Rp 75.000" in human.stdout

    rest = cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0, rest
    assert rest.json()["refund"]["amount"] == 75000 and rest.json()["payment"]["status"] == "refund"
    assert paid_out(sandbox, order_id) == 120000


def test_a_dashboard_refund_never_notified_still_counts(cli: Any, db_url: str, sandbox: Any, gateway: Any) -> None:
    order_id = _settled(cli, sandbox, 30000)
    dashboard_refund(sandbox, gateway, order_id, 10000)  # its notification never reached midpay
    too_much = cli("refund", order_id, "--amount", "25000", "--yes")
    assert too_much.exit_code == 2 and "more than the 20000 rupiah left" in too_much.stderr
    assert paid_out(sandbox, order_id) == 10000
    rest = cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0 and rest.json()["refund"]["amount"] == 20000
    assert paid_out(sandbox, order_id) == 30000


def test_an_older_refund_notification_never_moves_the_total_back(
    cli: Any, db_url: str, sandbox: Any, notes: Path
) -> None:
    order_id = _settled(cli, sandbox, 90000)
    assert cli("refund", order_id, "--amount", "10000", "--yes").exit_code == 0
    first = _refund_notifications(notes)
    assert cli("refund", order_id, "--amount", "20000", "--yes").exit_code == 0
    replay = cli("replay-webhook", *map(str, first), "--json")  # the older bodies, after the newer
    assert replay.exit_code == 0, replay
    doc = cli("status", order_id, "--no-refresh", "--json").json()
    assert (doc["status"], doc["refunded_amount"]) == ("partial_refund", 30000)
    assert paid_out(sandbox, order_id) == 30000


# --- how refunds show --------------------------------------------------------------------


def test_payments_lists_what_was_refunded(cli: Any, sandbox: Any) -> None:
    order_id = _settled(cli, sandbox, 40000)
    assert cli("refund", order_id, "--amount", "5000", "--yes").exit_code == 0
    rows = cli("payments", "--json").json()["payments"]
    [row] = [r for r in rows if r["order_id"] == order_id]
    assert (row["refunded_amount"], row["refundable_amount"], len(row["refunds"])) == (5000, 35000, 1)
    listing = cli("payments")
    assert "refunded" in listing.stdout and "Rp 5.000" in listing.stdout


def test_a_reason_is_printed_as_text_never_as_markup(cli: Any, sandbox: Any) -> None:
    order_id = _settled(cli, sandbox, 20000)
    reason = "[bold red]refund[/] \x1b[31m"
    assert cli("refund", order_id, "--amount", "1000", "--reason", reason, "--yes").exit_code == 0
    shown = cli("status", order_id)
    assert "[bold red]refund[/]" in shown.stdout and "\x1b" not in shown.stdout and "\\x1b[31m" in shown.stdout
    assert json.loads(cli("status", order_id, "--json").stdout)["refunds"][0]["reason"] == reason


def test_refund_keys_are_midtrans_safe_and_distinct() -> None:
    assert refunds.refund_key("mp-20261126101500-0a1b2c3d4e", 1) == "mp-20261126101500-0a1b2c3d4e-rf-1"
    odd = [refunds.refund_key(order_id, 12) for order_id in ("a.b", "a~b", "a_b", "x" * 50, "x" * 49 + "y")]
    assert len(set(odd)) == len(odd)
    for key in odd:
        assert len(key) <= 46 and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)


# --- reconcile ---------------------------------------------------------------------------


def _reconcile(cli: Any, *extra: str) -> dict[str, Any]:
    result = cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json", *extra)
    assert result.exit_code == 0, result
    doc: dict[str, Any] = result.json()
    return doc


def test_reconcile_finishes_a_refund_whose_answer_was_lost(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _settled(cli, sandbox, 64000)
    quiet = _settled(cli, sandbox, 10000)  # settled, no refund: reconcile leaves it alone
    _at(monkeypatch, "refund.row_committed", lambda: sandbox.set_faults(malformed_rate=1.0))
    assert cli("refund", order_id, "--amount", "4000", "--yes").exit_code == 3
    sandbox.set_faults(malformed_rate=0.0)
    doc = _reconcile(cli)
    assert [(r["order_id"], r["status_before"], r["status_after"]) for r in doc["results"]] == [
        (order_id, "settlement", "partial_refund")
    ]
    assert quiet not in {r["order_id"] for r in doc["results"]}
    assert _ledger(db_url, order_id) == [(f"{order_id}-rf-1", 4000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 4000


def test_reconcile_rechecks_partly_refunded_payments_at_their_own_pace(
    cli: Any, db_url: str, sandbox: Any, gateway: Any
) -> None:
    order_id = _settled(cli, sandbox, 50000)
    assert cli("refund", order_id, "--amount", "5000", "--yes").exit_code == 0
    first = _reconcile(cli)  # partial_refund: due once
    assert [r["order_id"] for r in first["results"]] == [order_id]
    dashboard_refund(sandbox, gateway, order_id, 7000)  # its notification never arrives
    assert _reconcile(cli)["results"] == []  # checked less than --refund-recheck-after (3600 s) ago
    caught = _reconcile(cli, "--refund-recheck-after", "0")
    assert [r["order_id"] for r in caught["results"]] == [order_id]
    assert [r[1:] for r in _ledger(db_url, order_id)] == [(5000, "done", "midpay"), (7000, "done", "outside")]
    shown = cli("status", order_id, "--no-refresh", "--json").json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (12000, 38000)


def test_the_rerun_window_is_a_day_but_an_outcome_found_late_is_still_this_refund(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _settled(cli, sandbox, 90000)
    assert cli("refund", order_id, "--amount", "10000", "--yes").exit_code == 0
    _at(monkeypatch, "refund.row_committed", lambda: sandbox.set_faults(malformed_rate=1.0))
    assert cli("refund", order_id, "--amount", "20000", "--yes").exit_code == 3  # made, answer lost
    sandbox.set_faults(malformed_rate=0.0)
    with psycopg.connect(db_url) as conn:  # both asked for two days ago
        conn.execute("UPDATE payment_refunds SET created_at = created_at - interval '2 days' WHERE order_id = %s",
                     (order_id,))
    late = cli("refund", order_id, "--amount", "20000", "--yes", "--json")
    assert late.exit_code == 0 and late.json()["result"] == "recorded", late
    assert paid_out(sandbox, order_id) == 30000
    # Two days after a refund that finished, the same amount again is a new refund.
    again = cli("refund", order_id, "--amount", "10000", "--yes", "--json")
    assert again.exit_code == 0 and again.json()["result"] == "refunded"
    assert again.json()["refund"]["refund_key"] == f"{order_id}-rf-3"
    assert paid_out(sandbox, order_id) == 40000


def test_the_two_refund_notifications_record_the_bank_confirmation(
    cli: Any, db_url: str, sandbox: Any, notes: Path
) -> None:
    if not hasattr(sandbox, "confirm_refunds"):
        pytest.skip("needs the sandbox's two refund notifications (the sandbox engineer's branch)")
    sandbox.auto_confirm_refunds = False
    order_id = _settled(cli, sandbox, 55000)
    assert cli("refund", order_id, "--amount", "25000", "--yes").exit_code == 0
    made = _refund_notifications(notes)
    assert cli("replay-webhook", *map(str, made)).exit_code == 0
    [row] = cli("status", order_id, "--no-refresh", "--json").json()["refunds"]
    assert (row["status"], row["bank_confirmed_at"]) == ("done", None)
    sandbox.confirm_refunds(order_id)
    confirmed = [p for p in _refund_notifications(notes) if p not in made]
    assert len(confirmed) == 1
    assert cli("replay-webhook", str(confirmed[0])).exit_code == 0
    [row] = cli("status", order_id, "--no-refresh", "--json").json()["refunds"]
    assert row["status"] == "done" and row["bank_confirmed_at"] and row["refund_method"]
    assert paid_out(sandbox, order_id) == 25000
