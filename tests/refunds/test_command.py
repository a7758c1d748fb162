"""`midpay refund`: library and command line (refunds made elsewhere and views: test_refunds_elsewhere).

Against a real PostgreSQL and the sandbox over HTTP. Faults are the sandbox's
per-order ones aimed at the refund endpoint (``fault_order(..., endpoints=["refund"])``),
so the status check before the refund is answered normally and only the refund itself
times out or loses its answer.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from midpay.errors import MidpayError, MidtransRejected, OutcomeUnknown
from midpay.refunds import command as refunds
from tests.conftest import SERVER_KEY
from tests.helpers import payment_status
from tests.refund_support import (
    dashboard_refund,
    ledger_rows,
    paid_out,
    settled,
)

PAYMENT_KEYS = {
    "order_id", "status", "gross_amount", "payment_type", "user_id", "midtrans_transaction_id",
    "paid_at", "created_at", "updated_at", "actions", "qr_string", "expiry_time",
    "refunded_amount", "refundable_amount", "refunds",
}
REFUND_KEYS = {
    "refund_key", "refund_chargeback_id", "amount", "reason", "status", "origin", "created_at",
    "refunded_at", "bank_confirmed_at", "refund_method", "updated_at",
}


# --- the happy paths -----------------------------------------------------------------------


def test_refund_partly_then_the_rest(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = settled(cli, sandbox, 100000)
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
    assert payment_status(db_url, order_id) == "refund"
    assert ledger_rows(db_url, order_id) == [
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
    order_id = settled(cli, sandbox, 50000)
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
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 46000, "rejected", "midpay")]
    sandbox.pay(order_id, "settlement")
    assert cli("refund", order_id, "--yes").exit_code == 0
    assert ledger_rows(db_url, order_id)[-1] == (f"{order_id}-rf-2", 46000, "done", "midpay")
    assert paid_out(sandbox, order_id) == 46000


def test_the_confirmation_prompt_shows_midtrans_figures(cli: Any, monkeypatch: pytest.MonkeyPatch, sandbox: Any,
                                                       gateway: Any) -> None:
    order_id = settled(cli, sandbox, 80000)
    dashboard_refund(sandbox, order_id, 30000)
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
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 50000)
    os.environ["MIDPAY_TIMEOUT"] = "1"
    # The refund request stalls past the timeout; the sandbox makes the refund only after that.
    sandbox.fault_order(order_id, "stall", times=1, endpoints=["refund"], seconds=3)
    timed_out = cli("refund", order_id, "--yes")
    assert timed_out.exit_code == 3, timed_out
    assert "rerun the same command" in timed_out.stderr and f"{order_id}-rf-1" in timed_out.stderr
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 50000, "requested", "midpay")]
    assert payment_status(db_url, order_id) == "settlement"

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
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 50000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 50000


def test_refund_whose_answer_was_garbled_is_recorded_on_the_rerun_without_sending(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 70000)
    sandbox.fault_order(order_id, "malformed", times=1, endpoints=["refund"])  # made, its answer garbled
    lost = cli("refund", order_id, "--amount", "20000", "--yes")
    assert lost.exit_code == 3 and "stays requested" in lost.stderr, lost
    assert paid_out(sandbox, order_id) == 20000  # Midtrans made it; midpay never heard
    sandbox.reset_stats()
    retried = cli("refund", order_id, "--amount", "20000", "--yes", "--json")
    assert retried.exit_code == 0, retried
    assert retried.json()["result"] == "recorded" and retried.json()["payment"]["status"] == "partial_refund"
    assert sandbox.stats()["by_endpoint"]["refund"] == 0
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 20000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 20000


def test_status_finishes_a_refund_whose_answer_was_lost(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 60000)
    sandbox.fault_order(order_id, "malformed", times=1, endpoints=["refund"])  # made, its answer garbled
    assert cli("refund", order_id, "--amount", "15000", "--yes").exit_code == 3
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
    from midpay.midtrans.gateway import Gateway

    _settled_here(conn, gateway, sandbox, "gone-1", 90000)
    sandbox.set_faults(stall_rate=1.0, stall_seconds=0.3)
    with Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=0.2, retries=0) as impatient:
        # The status check stalls too: nothing is recorded and nothing is sent.
        with pytest.raises(OutcomeUnknown, match="nothing was sent to Midtrans"):
            refunds.refund(conn, impatient, "gone-1")
    sandbox.set_faults(stall_rate=0.0)
    assert ledger_rows(db_url, "gone-1") == []
    sandbox.fault_order("gone-1", "hangup", times=1, endpoints=["refund"])  # the refund never reached Midtrans
    with pytest.raises(OutcomeUnknown, match="stays requested"):
        refunds.refund(conn, gateway, "gone-1")
    assert ledger_rows(db_url, "gone-1") == [("gone-1-rf-1", 90000, "requested", "midpay")]
    dashboard_refund(sandbox, "gone-1", 90000)  # refunded in full another way meanwhile
    with pytest.raises(MidpayError, match="is refund: all 90000 of it has been refunded"):
        refunds.refund(conn, gateway, "gone-1")
    assert [r[2:] for r in ledger_rows(db_url, "gone-1")] == [("rejected", "midpay"), ("done", "outside")]
    assert paid_out(sandbox, "gone-1") == 90000


def _settled_here(conn: psycopg.Connection[Any], gateway: Any, sandbox: Any, order_id: str, amount: int) -> None:
    gateway.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"k-{order_id}")
    sandbox.pay(order_id, "settlement")
    conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) VALUES (%s, %s, 'gopay', %s)",
        (order_id, amount, "settlement"),
    )
    conn.commit()


def test_the_rerun_window_is_a_day_but_an_outcome_found_late_is_still_this_refund(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 90000)
    assert cli("refund", order_id, "--amount", "10000", "--yes").exit_code == 0
    sandbox.fault_order(order_id, "malformed", times=1, endpoints=["refund"])  # made, its answer garbled
    assert cli("refund", order_id, "--amount", "20000", "--yes").exit_code == 3  # made, answer lost
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



def test_refund_keys_are_midtrans_safe_and_distinct() -> None:
    assert refunds.refund_key("mp-20261126101500-0a1b2c3d4e", 1) == "mp-20261126101500-0a1b2c3d4e-rf-1"
    odd = [refunds.refund_key(order_id, 12) for order_id in ("a.b", "a~b", "a_b", "x" * 50, "x" * 49 + "y")]
    assert len(set(odd)) == len(odd)
    for key in odd:
        assert len(key) <= 46 and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
