"""The one apply path, on a real PostgreSQL: every answer checked against the row asked about, then decided."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest

from midpay import db
from midpay.errors import GatewayProtocolError, NotFoundError
from midpay.midtrans.notifications import JAKARTA, parse_view
from midpay.payments import transition as apply
from midpay.payments.transition import AnswerMismatch, ApplyResult, Change, Proven, apply_answer, needs_write
from tests.helpers import payment_row

TXN = "11111111-2222-4333-8444-555555555555"


def _insert(conn: psycopg.Connection[Any], order_id: str, status: str = "pending", *, amount: int = 10000,
            txn: str | None = TXN, paid_at: str | None = None, payment_type: str = "gopay") -> None:
    conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, midtrans_transaction_id, "
        "paid_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (order_id, amount, payment_type, status, txn, paid_at),
    )
    conn.commit()


def _answer(order_id: str, status: str, *, amount: str = "10000.00", txn: str | None = TXN, **extra: Any
            ) -> dict[str, Any]:
    """A Get Status answer shaped like Midtrans' (and the sandbox's)."""
    body: dict[str, Any] = {
        "transaction_time": "2026-11-26 10:00:00",
        "gross_amount": amount,
        "currency": "IDR",
        "order_id": order_id,
        "payment_type": "gopay",
        "status_code": "200",
        "transaction_status": status,
        "fraud_status": "accept",
        "status_message": "Success, transaction is found",
    }
    if txn is not None:
        body["transaction_id"] = txn
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


# --- the answer is about the order that was asked about --------------------------------


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_answer("other-order", "settlement"), "is about order 'other-order'"),
        (_answer("a-1", "settlement", amount="10001.00"), "amount mismatch for a-1: Midtrans says 10001.00"),
        (_answer("a-1", "settlement", txn="99999999-0000-4000-8000-000000000000"), "answer is about transaction"),
        (_answer("a-1", "chargeback"), "transaction_status 'chargeback', which midpay does not know"),
        (_answer("a-1", "created"), "transaction_status 'created', which midpay does not know"),
        (_answer("a-1", "settlement", fraud_status="deny"), "settlement with fraud_status 'deny'"),
        (_answer("a-1", "settlement", fraud_status="challenge"), "contradict each other"),
        (_answer("a-1", "refund", fraud_status="deny"), "contradict each other"),
    ],
)
def test_an_answer_that_does_not_fit_changes_nopayment_row(conn: psycopg.Connection[Any], answer: dict[str, Any],
                                                    message: str) -> None:
    _insert(conn, "a-1")
    _insert(conn, "other-order", txn=None)
    before = (payment_row(conn, "a-1"), payment_row(conn, "other-order"))
    with pytest.raises(AnswerMismatch, match=message) as caught:
        apply_answer(conn, "a-1", answer)
    assert "\n" not in str(caught.value) and "nothing applied" in str(caught.value)
    assert AnswerMismatch.exit_code == 1
    assert (payment_row(conn, "a-1"), payment_row(conn, "other-order")) == before


def test_an_answer_about_another_order_never_settles_that_order(conn: psycopg.Connection[Any]) -> None:
    """The bug reconcile had: asked about A, it applied the answer to B, found by the answer's order_id."""
    _insert(conn, "asked", txn=None)
    _insert(conn, "named", txn=None)
    with pytest.raises(AnswerMismatch):
        apply_answer(conn, "asked", _answer("named", "settlement", txn=None, settlement_time="2026-11-26 10:05:00"))
    assert payment_row(conn, "asked")["status"] == payment_row(conn, "named")["status"] == "pending"


def test_an_answer_without_a_transaction_id_is_checked_on_the_rest(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "a-2")
    result = apply_answer(conn, "a-2", _answer("a-2", "expire", txn=None))
    assert (result.applied, result.status_after) == (True, "expire")


def test_the_first_transaction_id_is_stored_and_then_held_to(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "a-3", "created", txn=None)
    apply_answer(conn, "a-3", _answer("a-3", "pending", txn="aaaaaaaa-0000-4000-8000-000000000001"))
    assert payment_row(conn, "a-3")["midtrans_transaction_id"] == "aaaaaaaa-0000-4000-8000-000000000001"
    with pytest.raises(AnswerMismatch):
        apply_answer(conn, "a-3", _answer("a-3", "settlement", txn="bbbbbbbb-0000-4000-8000-000000000002"))
    assert payment_row(conn, "a-3")["status"] == "pending"


def test_unknown_order_and_garbled_answer(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(NotFoundError, match="no such order: nope"):
        apply_answer(conn, "nope", _answer("nope", "settlement"))
    with pytest.raises(GatewayProtocolError, match="order x"):
        apply_answer(conn, "x", {"order_id": "x"})


# --- fraud_status -----------------------------------------------------------------------


def test_a_challenged_capture_is_not_paid(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "f-1", "created", txn=None)
    result = apply_answer(conn, "f-1", _answer("f-1", "capture", fraud_status="challenge"))
    row = payment_row(conn, "f-1")
    assert (result.status_after, row["status"], row["paid_at"]) == ("pending", "pending", None)
    # Midtrans' fraud check then accepts it: paid.
    apply_answer(conn, "f-1", _answer("f-1", "capture", fraud_status="accept"))
    row = payment_row(conn, "f-1")
    assert row["status"] == "capture" and row["paid_at"] == datetime(2026, 11, 26, 10, 0, tzinfo=JAKARTA)


@pytest.mark.parametrize("fraud", [None, "accept", "ACCEPT"])
def test_settlement_or_capture_accepted_or_without_fraud_status_is_paid(conn: psycopg.Connection[Any],
                                                                       fraud: str | None) -> None:
    _insert(conn, "f-2")
    apply_answer(conn, "f-2", _answer("f-2", "settlement", fraud_status=fraud, settlement_time="2026-11-26 10:07:00"))
    row = payment_row(conn, "f-2")
    assert row["status"] == "settlement" and row["paid_at"] == datetime(2026, 11, 26, 10, 7, tzinfo=JAKARTA)


def test_a_denied_settlement_leaves_an_open_row_open_for_reconcile(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "f-3")
    with pytest.raises(AnswerMismatch):
        apply_answer(conn, "f-3", _answer("f-3", "settlement", fraud_status="deny"))
    assert payment_row(conn, "f-3")["status"] == "pending"
    # deny with deny is an ordinary denial
    apply_answer(conn, "f-3", _answer("f-3", "deny", fraud_status="deny"))
    assert payment_row(conn, "f-3")["status"] == "deny" and payment_row(conn, "f-3")["paid_at"] is None


# --- the whole graph after lost notifications --------------------------------------------


@pytest.mark.parametrize("start", ["created", "pending"])
@pytest.mark.parametrize("end", ["refund", "partial_refund"])
def test_refunded_while_the_notifications_were_lost(conn: psycopg.Connection[Any], start: str, end: str) -> None:
    _insert(conn, "r-1", start, txn=None if start == "created" else TXN)
    result = apply_answer(conn, "r-1", _answer("r-1", end, settlement_time="2026-11-26 10:03:04",
                                                refund_amount="10000.00" if end == "refund" else "4000.00"))
    row = payment_row(conn, "r-1")
    assert (result.applied, row["status"]) == (True, end)
    assert row["paid_at"] == datetime(2026, 11, 26, 10, 3, 4, tzinfo=JAKARTA), "paid_at from settlement_time"


def test_a_row_paid_without_paid_at_gets_it_from_midtrans(conn: psycopg.Connection[Any]) -> None:
    """An older backend wrote `settlement` and no paid_at: the next answer fills it, once."""
    _insert(conn, "r-2", "settlement")
    result = apply_answer(conn, "r-2", _answer("r-2", "settlement", settlement_time="2026-11-26 11:00:00"))
    assert result.applied and result.status_before == result.status_after == "settlement"
    assert payment_row(conn, "r-2")["paid_at"] == datetime(2026, 11, 26, 11, 0, tzinfo=JAKARTA)
    again = apply_answer(conn, "r-2", _answer("r-2", "settlement", settlement_time="2026-11-27 11:00:00"))
    assert not again.applied
    assert payment_row(conn, "r-2")["paid_at"] == datetime(2026, 11, 26, 11, 0, tzinfo=JAKARTA), "set once"


def test_a_refused_move_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "r-3", "expire")
    before = payment_row(conn, "r-3")
    result = apply_answer(conn, "r-3", _answer("r-3", "settlement", settlement_time="2026-11-26 11:00:00"))
    assert not result.applied and result.note == "not applied: settlement after expire (status only moves forward)"
    assert payment_row(conn, "r-3") == before


# --- payment_type follows Midtrans -----------------------------------------------------------


def test_a_gopay_charge_paid_by_qris_scan_becomes_qris(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "q-1")
    apply_answer(conn, "q-1", _answer("q-1", "settlement", payment_type="qris", settlement_time="2026-11-26 10:00:09"))
    assert payment_row(conn, "q-1")["payment_type"] == "qris"


@pytest.mark.parametrize("odd", ["QRIS ", "x" * 33, "qr is", "", "qr\u0131s"])
def test_a_payment_type_that_does_not_fit_is_not_written(conn: psycopg.Connection[Any], odd: str) -> None:
    _insert(conn, "q-2")
    apply_answer(conn, "q-2", _answer("q-2", "settlement", payment_type=odd))
    assert payment_row(conn, "q-2")["payment_type"] == ("qris" if odd == "QRIS " else "gopay")


# --- offline: what a signature alone proves --------------------------------------------------


def _locked(conn: psycopg.Connection[Any], order_id: str) -> db.Payment:
    payment = db.get_payment(conn, order_id, for_update=True)
    assert payment is not None
    return payment


def _prove(conn: psycopg.Connection[Any], payment: db.Payment, state: str | None, *, exact: bool) -> ApplyResult:
    """Offline evidence for one locked row, as ``intake.pipeline.decide_offline`` hands it to the transition."""
    [result] = apply.transition(conn, [Change(payment.order_id, Proven(state, exact))],
                                locked={payment.order_id: payment})
    assert isinstance(result, ApplyResult)
    return result


@pytest.mark.parametrize(
    ("start", "state", "exact", "after", "applied", "marked"),
    [
        ("created", "pending", True, "pending", True, False),
        ("pending", "pending", True, "pending", False, False),
        ("settlement", "pending", True, "settlement", False, False),
        ("pending", "expire", True, "expire", True, False),
        ("settlement", "expire", True, "settlement", False, False),
        ("created", "pending", False, "pending", True, True),  # a floor moves only `created`
        ("pending", "pending", False, "pending", False, True),
        ("settlement", "pending", False, "settlement", False, True),
        ("pending", None, False, "pending", False, True),
    ],
)
def test_a_proof_applies_only_what_it_proves(conn: psycopg.Connection[Any], start: str, state: str | None,
                                             exact: bool, after: str, applied: bool, marked: bool) -> None:
    _insert(conn, "o-1", start, txn=None)
    with conn.transaction():
        result = _prove(conn, _locked(conn, "o-1"), state, exact=exact)
    row = payment_row(conn, "o-1")
    assert (result.applied, row["status"]) == (applied, after)
    assert (row["unconfirmed_since"] is not None) is marked
    assert row["paid_at"] is None and row["midtrans_transaction_id"] is None
    assert row["midtrans_response_json"] in (None, {})


def test_a_confirmed_answer_clears_the_mark_and_settles_awaiting_notifications(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "m-1", txn=None)
    conn.execute(
        "INSERT INTO payment_webhook_events (order_id, raw_body, is_verified, processed, outcome) "
        "VALUES ('m-1', '{}', true, false, 'awaiting')"
    )
    with conn.transaction():
        _prove(conn, _locked(conn, "m-1"), "pending", exact=False)
    payment = db.get_payment(conn, "m-1")
    assert payment is not None and payment.unconfirmed_since is not None
    answer = parse_view(_answer("m-1", "pending", txn=None))
    assert needs_write(payment, answer), "a marked row is written even when the state repeats"
    conn.commit()
    result = apply_answer(conn, "m-1", answer)
    assert not result.applied and payment_row(conn, "m-1")["unconfirmed_since"] is None
    events = conn.execute("SELECT processed, outcome, confirmed_at IS NOT NULL FROM payment_webhook_events").fetchall()
    assert events == [(True, "unchanged", True)]
    payment = db.get_payment(conn, "m-1")
    assert payment is not None and not needs_write(payment, answer)


@pytest.mark.parametrize(
    ("row", "answer", "expected"),
    [
        (dict(status="pending"), _answer("n-1", "pending"), False),
        (dict(status="pending"), _answer("n-1", "settlement"), True),
        (dict(status="settlement", paid_at="2026-11-26 10:00:00+07"), _answer("n-1", "settlement"), False),
        (dict(status="settlement"), _answer("n-1", "settlement"), True),  # paid_at to fill
        (dict(status="pending"), _answer("n-1", "pending", payment_type="qris"), True),
        (dict(status="pending"), _answer("n-2", "pending"), True),  # a mismatch: let the apply path say so
        (dict(status="pending", txn=None), _answer("n-1", "pending"), True),  # the transaction id to store
        (dict(status="pending"), _answer("n-1", "capture", fraud_status="challenge"), False),
    ],
)
def test_needs_write(
    conn: psycopg.Connection[Any], row: dict[str, Any], answer: dict[str, Any], expected: bool
) -> None:
    _insert(conn, "n-1", **row)
    payment = db.get_payment(conn, "n-1")
    assert payment is not None
    assert needs_write(payment, parse_view(answer)) is expected


def test_synthetic_failure_names_no_transaction() -> None:
    payment = db.Payment(
        id=__import__("uuid").uuid4(), user_id=None, order_id="s-1", gross_amount=5000, payment_type="gopay",
        status="created", midtrans_transaction_id=None, midtrans_response_json=None,
        created_at=datetime.now(JAKARTA), updated_at=datetime.now(JAKARTA), paid_at=None, last_checked_at=None,
    )
    view = apply.synthetic_failure(payment, "406", "duplicate", {"transaction_id": "x", "status_code": "406"})
    assert (view.transaction_status, view.transaction_id, view.gross_amount) == ("failure", None, 5000)
