"""The outbox trigger of sql/009: every status change and the first paid_at commit one event.

These write payment_transactions with plain SQL, as any backend sharing the table would,
and read payment_events back: types, sequence, previous_status, paid, the snapshot, the
deliveries made for matching endpoints, and the NOTIFY sent at commit.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import psycopg.sql
import pytest


def _insert(conn: psycopg.Connection[Any], order_id: str, status: str, *, paid: bool = False) -> None:
    conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, paid_at) "
        "VALUES (%s, 15000, 'gopay', %s, CASE WHEN %s THEN now() END)",
        (order_id, status, paid),
    )


def _set(conn: psycopg.Connection[Any], order_id: str, status: str, *, paid: bool = False) -> None:
    conn.execute(
        "UPDATE payment_transactions SET status = %s, "
        "paid_at = CASE WHEN %s THEN COALESCE(paid_at, now()) ELSE paid_at END WHERE order_id = %s",
        (status, paid, order_id),
    )


def _events(conn: psycopg.Connection[Any], order_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT sequence, type, previous_status, status, paid FROM payment_events "
        "WHERE order_id = %s ORDER BY sequence",
        (order_id,),
    ).fetchall()


def test_a_lifecycle_makes_one_event_per_change_and_one_paid(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-1", "created")
    _set(conn, "T-1", "PENDING ")  # the older backend's spelling is the same status
    _set(conn, "T-1", "pending")  # no change: no event
    _set(conn, "T-1", "settlement", paid=True)
    _set(conn, "T-1", "partial_refund", paid=True)
    _set(conn, "T-1", "refund", paid=True)
    conn.commit()
    assert _events(conn, "T-1") == [
        (1, "payment.pending", "created", "pending", False),
        (2, "payment.settlement", "pending", "settlement", True),
        (3, "payment.paid", "pending", "settlement", True),
        (4, "payment.partial_refund", "settlement", "partial_refund", True),
        (5, "payment.refund", "partial_refund", "refund", True),
    ]


def test_an_insert_past_created_is_an_event_with_no_previous_status(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-2", "pending")
    _insert(conn, "T-3", "settlement", paid=True)
    conn.commit()
    assert _events(conn, "T-2") == [(1, "payment.pending", None, "pending", False)]
    assert _events(conn, "T-3") == [
        (1, "payment.settlement", None, "settlement", True),
        (2, "payment.paid", None, "settlement", True),
    ]


def test_the_snapshot_is_the_row_after_the_change(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-4", "pending")
    _set(conn, "T-4", "settlement", paid=True)
    conn.commit()
    snapshot, row_paid_at = conn.execute(
        "SELECT e.payment, p.paid_at FROM payment_events e JOIN payment_transactions p ON p.id = e.payment_id "
        "WHERE e.order_id = 'T-4' AND e.type = 'payment.paid'"
    ).fetchone() or (None, None)
    assert snapshot["status"] == "settlement" and snapshot["order_id"] == "T-4"
    assert snapshot["paid_at"] is not None and row_paid_at is not None


def test_a_rolled_back_change_leaves_no_event(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-5", "pending")
    conn.commit()
    _set(conn, "T-5", "settlement", paid=True)
    conn.rollback()
    assert _events(conn, "T-5") == [(1, "payment.pending", None, "pending", False)]


def test_deliveries_are_made_for_enabled_endpoints_whose_patterns_match(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO webhook_endpoints (id, url, events, secret, enabled) VALUES "
        "('we_all', 'http://a.test/', '{*}', 'whsec_x', true), "
        "('we_paid', 'http://b.test/', '{payment.paid,payment.refund}', 'whsec_x', true), "
        "('we_payment', 'http://c.test/', '{payment.*}', 'whsec_x', true), "
        "('we_off', 'http://d.test/', '{*}', 'whsec_x', false), "
        "('we_other', 'http://e.test/', '{refund.*,payment.paidx}', 'whsec_x', true)"
    )
    _insert(conn, "T-6", "pending")
    _set(conn, "T-6", "settlement", paid=True)
    conn.commit()
    rows = conn.execute(
        "SELECT e.type, array_agg(d.endpoint_id ORDER BY d.endpoint_id), min(d.sequence) = e.sequence "
        "FROM payment_events e JOIN webhook_deliveries d ON d.event_id = e.id "
        "WHERE e.order_id = 'T-6' GROUP BY e.type, e.sequence ORDER BY e.sequence"
    ).fetchall()
    assert rows == [
        ("payment.pending", ["we_all", "we_payment"], True),
        ("payment.settlement", ["we_all", "we_payment"], True),
        ("payment.paid", ["we_all", "we_paid", "we_payment"], True),
    ]


def test_the_outbox_channel_is_notified_at_commit(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url) as writer:
        listener.execute("LISTEN midpay_outbox")
        _insert(writer, "T-7", "pending")
        _set(writer, "T-7", "settlement", paid=True)
        assert list(listener.notifies(timeout=0.1, stop_after=1)) == []  # nothing before the commit
        writer.commit()
        got = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.channel for n in got] == ["midpay_outbox"]


def test_other_columns_changing_make_no_event(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-8", "pending")
    conn.execute("UPDATE payment_transactions SET updated_at = now(), status = status WHERE order_id = 'T-8'")
    conn.execute("UPDATE payment_transactions SET last_checked_at = now() WHERE order_id = 'T-8'")
    conn.commit()
    assert len(_events(conn, "T-8")) == 1


@pytest.mark.parametrize("status", ["deny", "cancel", "expire", "failure", "capture"])
def test_every_status_names_its_event(conn: psycopg.Connection[Any], status: str) -> None:
    _insert(conn, "T-9", "pending")
    _set(conn, "T-9", status)
    conn.commit()
    assert [e[1] for e in _events(conn, "T-9")] == ["payment.pending", f"payment.{status}"]


def _status_document(conn: psycopg.Connection[Any], order_id: str) -> dict[str, Any]:
    from midpay import db
    from midpay.output.documents import payment_document
    from midpay.refunds.ledger import ledger

    payment = db.get_payment(conn, order_id)
    assert payment is not None
    doc = payment_document(payment, ledger=ledger(conn, payment))
    conn.commit()
    return doc


def test_render_makes_the_documented_body(conn: psycopg.Connection[Any]) -> None:
    import json

    from midpay.db import outbox
    from midpay.outbox.events import render

    _insert(conn, "T-10", "pending")
    _set(conn, "T-10", "settlement", paid=True)
    conn.commit()
    events = outbox.events_of_order(conn, "T-10")
    bodies = [json.loads(render(e)) for e in events]
    assert [list(b) for b in bodies] == [["id", "type", "created_at", "sequence", "data"]] * 3
    assert [(b["type"], b["sequence"]) for b in bodies] == [
        ("payment.pending", 1), ("payment.settlement", 2), ("payment.paid", 3)
    ]
    assert all(b["id"].startswith("evt_") and len(b["id"]) == 36 for b in bodies)
    assert bodies[0]["created_at"].endswith("+07:00")
    now = _status_document(conn, "T-10")
    assert bodies[2]["data"] == {**now, "previous_status": "pending", "paid": True}
    assert bodies[0]["data"]["paid_at"] is None and bodies[0]["data"]["previous_status"] is None
    assert render(events[2]) == render(outbox.events_by_id(conn, [events[2].id])[0])
    assert [e.id for e in outbox.newest_events(conn, 2)] == [events[2].id, events[1].id]


def test_a_body_is_stored_once(conn: psycopg.Connection[Any]) -> None:
    from midpay.db import outbox

    _insert(conn, "T-11", "pending")
    conn.commit()
    (event,) = outbox.events_of_order(conn, "T-11")
    assert event.body is None
    assert outbox.store_body(conn, event.id, "first") == "first"
    assert outbox.store_body(conn, event.id, "second") == "first"
    conn.commit()
    assert outbox.events_of_order(conn, "T-11")[0].body == "first"


def test_body_renders_once_and_keeps_it(conn: psycopg.Connection[Any]) -> None:
    from midpay.db import outbox
    from midpay.outbox.events import body, render

    _insert(conn, "T-14", "pending")
    conn.commit()
    (event,) = outbox.events_of_order(conn, "T-14")
    sent = body(conn, event)
    conn.commit()
    assert sent == render(event)
    conn.execute("UPDATE payment_transactions SET user_id = 99 WHERE order_id = 'T-14'")  # the row moves on
    (kept,) = outbox.events_of_order(conn, "T-14")
    assert kept.body == sent and body(conn, kept) == sent


def test_paid_is_written_once_even_if_paid_at_is_cleared_and_set_again(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-12", "pending")
    _set(conn, "T-12", "settlement", paid=True)
    conn.execute("UPDATE payment_transactions SET paid_at = NULL WHERE order_id = 'T-12'")
    _set(conn, "T-12", "refund", paid=True)
    conn.commit()
    assert [e[1] for e in _events(conn, "T-12")] == [
        "payment.pending", "payment.settlement", "payment.paid", "payment.refund"
    ]


def test_concurrent_changes_of_one_order_are_numbered_in_commit_order_without_gaps(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with psycopg.connect(db_url) as conn:
        _insert(conn, "T-13", "pending")
    statuses = ["settlement", "pending"]

    def writer(n: int) -> None:
        with psycopg.connect(db_url) as conn:
            for i in range(15):
                _set(conn, "T-13", statuses[(n + i) % 2])
                conn.commit()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT sequence, previous_status, status FROM payment_events WHERE order_id = 'T-13' "
            "ORDER BY created_at, sequence"
        ).fetchall()
    assert [f[0] for f in found] == list(range(1, len(found) + 1)), "commit order is sequence order"
    assert all(after[1] == before[2] != after[2] for before, after in itertools.pairwise(found))


def test_a_writer_with_another_search_path_still_writes_its_event(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "T-15", "pending")
    schema = conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    conn.execute("CREATE SCHEMA elsewhere")
    conn.execute("SET search_path = elsewhere")
    conn.execute(
        psycopg.sql.SQL("UPDATE {}.payment_transactions SET status = 'expire' WHERE order_id = 'T-15'").format(
            psycopg.sql.Identifier(schema[0])
        )
    )
    conn.execute("RESET search_path")
    conn.commit()
    assert [e[1] for e in _events(conn, "T-15")] == ["payment.pending", "payment.expire"]
