"""The refund ledger mirrors what Midtrans reports: db.sync_ledger and refunds.report.read_report.

Against a real PostgreSQL. The refund answers are Midtrans' published samples
(tests/fixtures/midtrans, REFERENCE.md §4); status answers carrying ``refunds[]`` are
built from the item fields Midtrans documents (refund_chargeback_id, refund_amount,
created_at, reason, refund_key, and after the bank's confirmation refund_method and
bank_confirmed_at), since no verbatim GoPay sample of one is published.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay import db
from midpay.midtrans.notifications import JAKARTA
from midpay.payments.transition import apply_answer
from midpay.refunds.ledger import ledger as read_ledger
from midpay.refunds.ledger import unsettled
from midpay.refunds.report import chargeback_id, read_report

FIXTURES = Path(__file__).parents[1] / "fixtures" / "midtrans"


def _fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


def _payment(conn: psycopg.Connection[Any], order_id: str, amount: int, status: str = "settlement") -> db.Payment:
    conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, paid_at) "
        "VALUES (%s, %s, 'gopay', %s, now())",
        (order_id, amount, status),
    )
    payment = db.get_payment(conn, order_id)
    assert payment is not None
    conn.commit()
    return payment


def _item(number: int, amount: int, key: str | None, *, confirmed: bool = False, reason: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {
        "refund_chargeback_id": number,
        "refund_amount": f"{amount}.00",
        "created_at": f"2026-11-26 10:0{number}:00",
        "reason": reason,
        "refund_key": key,
    }
    if confirmed:
        item["refund_method"] = "online"
        item["bank_confirmed_at"] = f"2026-11-26 10:1{number}:00"
    return item


def _status(order_id: str, gross: int, items: list[dict[str, Any]], *, total: int | None = None) -> dict[str, Any]:
    refunded = sum(int(i["refund_amount"][:-3]) for i in items) if total is None else total
    return {
        "status_code": "200",
        "status_message": "Success, transaction is found",
        "transaction_id": f"txn-{order_id}",
        "order_id": order_id,
        "payment_type": "gopay",
        "transaction_time": "2026-11-26 09:00:00",
        "transaction_status": "refund" if refunded >= gross else "partial_refund",
        "gross_amount": f"{gross}.00",
        "fraud_status": "accept",
        "refund_amount": f"{refunded}.00",
        "refunds": items,
    }


def _sync(conn: psycopg.Connection[Any], order_id: str, answer: dict[str, Any]) -> db.LedgerSync:
    with conn.transaction():
        payment = db.get_payment(conn, order_id, for_update=True)
        assert payment is not None
        return db.sync_ledger(conn, payment, read_report(answer))


def _rows(conn: psycopg.Connection[Any], order_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT refund_key, refund_chargeback_id, amount, status, origin FROM payment_refunds "
        "WHERE order_id = %s ORDER BY created_at, id",
        (order_id,),
    ).fetchall()


def _requested(conn: psycopg.Connection[Any], payment: db.Payment, key: str, amount: int) -> db.Refund:
    row = db.insert_refund(
        conn, payment_id=payment.id, order_id=payment.order_id, refund_key=key, amount=amount, reason=None
    )
    assert row is not None
    conn.commit()
    return row


# --- reading a report ----------------------------------------------------------------------


def test_the_published_refund_answers_read_as_their_figures() -> None:
    partial = read_report(_fixture("refund_partial.json"))
    assert (partial.transaction_status, partial.total, partial.items, partial.listed) == (
        "partial_refund", 5000, (), False,
    )
    denied = read_report(_fixture("refund_direct_denied.json"))
    assert (denied.transaction_status, denied.total) == ("settlement", 0)
    assert read_report(_fixture("status_settlement_card.json")).total == 0


def test_items_are_read_exactly_and_unreadable_ones_are_counted_not_guessed() -> None:
    answer = _status("o", 100000, [_item(7, 25000, "k-1", confirmed=True, reason="size")])
    answer["refunds"] += [
        {"refund_amount": "12.50", "refund_key": "fraction"},  # a fraction of a rupiah
        {"refund_amount": 1e3, "refund_key": "float"},
        {"refund_amount": "0.00", "refund_key": "zero"},
        "not an object",
    ]
    report = read_report(answer)
    [item] = report.items
    assert (item.refund_key, item.chargeback_id, item.amount, item.reason, item.refund_method) == (
        "k-1", 7, 25000, "size", "online",
    )
    assert item.created_at == datetime(2026, 11, 26, 10, 7, tzinfo=JAKARTA)
    assert item.bank_confirmed_at == datetime(2026, 11, 26, 10, 17, tzinfo=JAKARTA)
    assert report.unreadable == 4 and report.total == 25000
    assert chargeback_id("47594") == 47594 and chargeback_id(True) is None and chargeback_id("-1") is None


# --- merging ---------------------------------------------------------------------------------


def test_midpays_refund_is_finished_and_a_dashboard_refund_gets_its_row(conn: psycopg.Connection[Any]) -> None:
    payment = _payment(conn, "led-1", 100000)
    mine = _requested(conn, payment, "led-1-rf-1", 30000)
    answer = _status("led-1", 100000, [_item(1, 30000, "led-1-rf-1"), _item(2, 20000, "8f3c-dashboard-uuid")])
    change = _sync(conn, "led-1", answer)
    assert [r.id for r in change.finished] == [mine.id] and [r.refund_key for r in change.added] == [
        "8f3c-dashboard-uuid"
    ]
    assert _rows(conn, "led-1") == [
        ("led-1-rf-1", 1, 30000, "done", "midpay"),
        ("8f3c-dashboard-uuid", 2, 20000, "done", "outside"),
    ]
    assert read_ledger(conn, payment).refunded == 50000


def test_the_same_answer_twice_and_an_older_one_change_nothing(conn: psycopg.Connection[Any]) -> None:
    _payment(conn, "led-2", 100000, "partial_refund")
    newer = _status("led-2", 100000, [_item(1, 10000, "a", confirmed=True), _item(2, 15000, "b")])
    older = _status("led-2", 100000, [_item(1, 10000, "a")])
    assert _sync(conn, "led-2", newer).changed
    stamp = conn.execute("SELECT max(updated_at) FROM payment_refunds").fetchone()
    assert not _sync(conn, "led-2", newer).changed
    assert not _sync(conn, "led-2", older).changed
    assert conn.execute("SELECT max(updated_at) FROM payment_refunds").fetchone() == stamp
    confirmed = conn.execute(
        "SELECT refund_key, bank_confirmed_at IS NOT NULL FROM payment_refunds ORDER BY refund_key"
    ).fetchall()
    assert confirmed == [("a", True), ("b", False)]  # the older answer did not clear the confirmation
    assert conn.execute("SELECT sum(amount) FROM payment_refunds WHERE status = 'done'").fetchone() == (25000,)


def test_the_second_refund_notification_adds_the_bank_confirmation(conn: psycopg.Connection[Any]) -> None:
    payment = _payment(conn, "led-3", 40000)
    _requested(conn, payment, "led-3-rf-1", 40000)
    _sync(conn, "led-3", _status("led-3", 40000, [_item(4, 40000, "led-3-rf-1")]))
    assert unsettled(db.list_refunds(conn, payment.id))  # done, but the bank has not confirmed it
    _sync(conn, "led-3", _status("led-3", 40000, [_item(4, 40000, "led-3-rf-1", confirmed=True)]))
    [row] = db.list_refunds(conn, payment.id)
    assert (row.status, row.refund_method, row.bank_confirmed_at) == (
        "done", "online", datetime(2026, 11, 26, 10, 14, tzinfo=JAKARTA),
    )
    assert not unsettled([row])


def test_a_keyless_refund_is_matched_by_midtrans_id(conn: psycopg.Connection[Any]) -> None:
    _payment(conn, "led-4", 50000)
    _sync(conn, "led-4", _status("led-4", 50000, [_item(9, 5000, None)]))
    _sync(conn, "led-4", _status("led-4", 50000, [_item(9, 5000, "now-with-a-key")]))
    assert _rows(conn, "led-4") == [("now-with-a-key", 9, 5000, "done", "outside")]


def test_a_total_beyond_the_listed_refunds_is_kept_until_the_items_explain_it(conn: psycopg.Connection[Any]) -> None:
    payment = _payment(conn, "led-5", 90000)
    _sync(conn, "led-5", _status("led-5", 90000, [], total=30000))
    assert _rows(conn, "led-5") == [(None, None, 30000, "done", "unitemized")]
    assert read_ledger(conn, payment).refunded == 30000
    _sync(conn, "led-5", _status("led-5", 90000, [], total=10000))  # older: the total never goes back
    assert read_ledger(conn, payment).refunded == 30000
    _sync(conn, "led-5", _status("led-5", 90000, [_item(1, 20000, "x")], total=30000))
    assert sorted(_rows(conn, "led-5"), key=str) == sorted(
        [(None, None, 10000, "done", "unitemized"), ("x", 1, 20000, "done", "outside")], key=str
    )
    _sync(conn, "led-5", _status("led-5", 90000, [_item(1, 20000, "x"), _item(2, 10000, "y")]))
    assert [r[4] for r in _rows(conn, "led-5")] == ["outside", "outside"]
    assert read_ledger(conn, payment).refunded == 30000


def test_a_fully_refunded_payment_abandons_a_requested_refund_it_does_not_list(conn: psycopg.Connection[Any]) -> None:
    payment = _payment(conn, "led-6", 60000)
    lost = _requested(conn, payment, "led-6-rf-1", 60000)
    partial = _status("led-6", 60000, [_item(1, 20000, "elsewhere")])
    assert not _sync(conn, "led-6", partial).abandoned  # it may still be paid
    full = _status("led-6", 60000, [_item(1, 20000, "elsewhere"), _item(2, 40000, "elsewhere-2")])
    change = _sync(conn, "led-6", full)
    assert [r.id for r in change.abandoned] == [lost.id]
    assert _rows(conn, "led-6")[0] == ("led-6-rf-1", None, 60000, "rejected", "midpay")


def test_refund_keys_are_unique_per_payment_not_across_payments(conn: psycopg.Connection[Any]) -> None:
    _payment(conn, "led-7", 10000)
    _payment(conn, "led-8", 10000)
    _sync(conn, "led-7", _status("led-7", 10000, [_item(1, 1000, "1")]))
    _sync(conn, "led-8", _status("led-8", 10000, [_item(1, 1000, "1")]))
    assert len(_rows(conn, "led-7")) == len(_rows(conn, "led-8")) == 1


def test_the_apply_path_merges_refunds_from_any_answer(conn: psycopg.Connection[Any]) -> None:
    """A status answer, whoever applies it (status, reconcile, a confirmed notification)."""
    payment = _payment(conn, "led-9", 80000)
    result = apply_answer(conn, "led-9", _status("led-9", 80000, [_item(3, 80000, "dash")]))
    assert result.status_after == "refund"
    assert read_ledger(conn, payment).refunded == 80000
    # An older partial_refund answer after it: refused, and the ledger keeps its total.
    older = apply_answer(conn, "led-9", _status("led-9", 80000, [], total=5000))
    assert not older.applied and read_ledger(conn, payment).refunded == 80000


@pytest.mark.parametrize("status", ["pending", "settlement", "expire"])
def test_a_payment_with_nothing_to_refund_shows_nothing_refundable(conn: psycopg.Connection[Any], status: str) -> None:
    payment = _payment(conn, f"led-s-{status}", 10000, status)
    assert read_ledger(conn, payment).refundable == (10000 if status == "settlement" else 0)
