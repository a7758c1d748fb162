"""``transition`` on many rows in one transaction: each answer checked once, each row written once, one statement."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from midpay import db
from midpay.db import payments as payment_rows
from midpay.errors import NotFoundError
from midpay.midtrans.notifications import parse_view
from midpay.payments import answers, transition
from midpay.payments.transition import AnswerMismatch, ApplyResult, Change, Proven


def _insert(url: str, order_id: str, status: str, amount: int = 10000) -> db.Payment:
    with db.connect(url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES (%s, %s, 'gopay', %s)",
            (order_id, amount, status),
        )
        payment = db.get_payment(conn, order_id)
    assert payment is not None
    return payment


def _view(order_id: str, status: str, amount: str = "10000.00", txn: str | None = None) -> Any:
    body = {
        "order_id": order_id, "gross_amount": amount, "transaction_status": status, "status_code": "200",
        "transaction_id": txn or f"txn-{order_id}", "payment_type": "gopay", "fraud_status": "accept",
        "transaction_time": "2026-11-26 10:00:00", "settlement_time": "2026-11-26 10:01:00",
    }
    return parse_view(body)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"check": [], "write": []}
    real_check, real_write = transition.check_answer, payment_rows.write_payments

    def check(payment: Any, view: Any) -> str:
        calls["check"].append(payment.order_id)
        return real_check(payment, view)

    def write(conn: Any, writes: Any, **kwargs: Any) -> Any:
        calls["write"].append(len(writes))
        return real_write(conn, writes, **kwargs)

    monkeypatch.setattr(transition, "check_answer", check)
    monkeypatch.setattr(db, "write_payments", write)
    return calls


def test_a_batch_checks_each_answer_once_and_writes_in_one_statement(db_url: str, counted: dict[str, list[Any]]
                                                                     ) -> None:
    _insert(db_url, "b-paid", "pending")
    _insert(db_url, "b-wrong", "pending")
    _insert(db_url, "b-offline", "created")
    changes = [
        Change("b-paid", _view("b-paid", "settlement")),
        Change("b-wrong", _view("b-wrong", "settlement", amount="1.00")),
        Change("b-offline", Proven("pending", exact=True)),
        Change("b-offline", Proven("settlement", exact=True)),
        Change("b-missing", _view("b-missing", "settlement")),
    ]
    with db.connect(db_url) as conn, conn.transaction():
        moved = transition.transition(conn, changes)
    assert counted["check"] == ["b-paid", "b-wrong"]
    assert counted["write"] == [2]  # b-paid and b-offline, its two moves written as one
    paid, wrong, first, second, missing = moved
    assert isinstance(paid, ApplyResult) and (paid.status_before, paid.status_after, paid.applied) == (
        "pending", "settlement", True)
    assert paid.payment is not None and paid.payment.paid_at is not None
    assert isinstance(wrong, AnswerMismatch) and "amount mismatch for b-wrong" in str(wrong)
    assert isinstance(first, ApplyResult) and (first.status_before, first.status_after) == ("created", "pending")
    assert isinstance(second, ApplyResult) and (second.status_before, second.status_after) == ("pending", "settlement")
    assert isinstance(missing, NotFoundError)
    with psycopg.connect(db_url) as check:
        rows = dict(check.execute("SELECT order_id, status FROM payment_transactions").fetchall())
    assert rows == {"b-paid": "settlement", "b-wrong": "pending", "b-offline": "settlement"}


def test_an_answer_applied_by_the_batch_path_is_checked_once(db_url: str, counted: dict[str, list[Any]]) -> None:
    """Reconcile's and status' one path (``answers.apply_batch``): one check per changed row, no other."""
    claimed = [_insert(db_url, f"r-{n}", "pending") for n in range(3)]
    batch = [answers.Answered(p, _view(p.order_id, "settlement")) for p in claimed]
    assert all(transition.needs_write(a.payment, a.view) for a in batch)  # compares; does not check
    assert counted["check"] == []
    with db.connect(db_url) as conn:
        written = answers.apply_batch(conn, batch)
    assert counted["check"] == ["r-0", "r-1", "r-2"] and counted["write"] == [3]
    assert [(w.checked.status_before, w.checked.status_after) for w in written if w.checked] == [
        ("pending", "settlement")] * 3
