"""A backend of the same lineage: numeric amounts, varchar(32) order ids, upper-case statuses.

Built by node-pg-migrate from ./migrations-sibling and seeded by the same create route
and webhook handler, storing statuses upper-cased (``NODE_BACKEND_STATUS_CASE=upper``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from .conftest import NodeDb
from .test_takeover import original_columns, snapshot

UPPER = {"NODE_BACKEND_STATUS_CASE": "upper"}


@pytest.fixture
def sibling(sibling_db: NodeDb, sibling_cli: Any) -> dict[str, Any]:
    seeded: dict[str, Any] = sibling_db.node("seed.js", extra=UPPER)
    with psycopg.connect(sibling_db.url) as conn:
        # A row the backend wrote by hand once: 15000.50, a fraction of a rupiah.
        conn.execute(
            "INSERT INTO payment_transactions (user_id, order_id, gross_amount, payment_type, status) "
            "VALUES (%s, 'FRACTION-1', 15000.50, 'gopay', 'SETTLEMENT')",
            (seeded["users"]["budi"],),
        )
    migrated = sibling_cli("migrate")
    assert migrated.exit_code == 0, migrated
    return seeded


def test_statuses_in_upper_case_read_filter_and_refund_as_lower_case(
    sibling_db: NodeDb, sibling_cli: Any, sibling: dict[str, Any]
) -> None:
    orders = sibling["orders"]
    with psycopg.connect(sibling_db.url) as conn:
        raw = dict(conn.execute("SELECT order_id, status FROM payment_transactions").fetchall())
    assert raw[orders["pending"]] == "PENDING" and raw[orders["settled"]] == "SETTLEMENT"

    shown = sibling_cli("status", orders["settled"], "--json")
    assert shown.exit_code == 0, shown
    assert (shown.json()["status"], shown.json()["gross_amount"]) == ("settlement", 154600)
    assert isinstance(shown.json()["gross_amount"], int)
    listed = sibling_cli("payments", "--status", "pending", "--json").json()["payments"]
    assert {p["order_id"] for p in listed} == {
        orders[k] for k in ("pending", "lost", "crashed", "to_cancel", "to_expire", "to_replay")
    }
    assert {p["status"] for p in listed} == {"pending"}
    human = sibling_cli("payments", "--status", "settlement")
    assert "SETTLEMENT" not in human.stdout and orders["to_refund"] in human.stdout

    refund = sibling_cli("refund", orders["to_refund"], "--amount", "1000", "--yes", "--json")
    assert refund.exit_code == 0, refund
    assert refund.json()["payment"]["status"] == "partial_refund"

    # A status refresh that changes nothing leaves the upper-case value as the backend wrote it.
    assert sibling_cli("status", orders["pending"], "--json").json()["status"] == "pending"
    with psycopg.connect(sibling_db.url) as conn:
        row = conn.execute("SELECT status FROM payment_transactions WHERE order_id = %s", (orders["pending"],))
        assert row.fetchone() == ("PENDING",)


def test_reconcile_finds_open_rows_in_upper_case(sibling_db: NodeDb, sibling_cli: Any, sibling: dict[str, Any]) -> None:
    orders = sibling["orders"]
    result = sibling_cli("reconcile", "--min-age", "0", "--json")
    moved = {r["order_id"]: r["status_after"] for r in result.json()["results"]}
    assert moved.get(orders["lost"]) == "settlement"
    assert moved.get(orders["crashed"]) == "settlement"


def test_a_fractional_amount_is_shown_exactly_and_never_acted_on(
    sibling_db: NodeDb, sibling_cli: Any, sibling: dict[str, Any]
) -> None:
    before = snapshot(sibling_db.url, original_columns(sibling_db.url))
    shown = sibling_cli("status", "FRACTION-1", "--json")
    assert shown.exit_code == 0, shown
    assert shown.json()["gross_amount"] == "15000.50", "exact, as text: never rounded, never a float"
    refused = sibling_cli("refund", "FRACTION-1", "--yes")
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "Error: order FRACTION-1 has gross_amount 15000.50 stored, not a whole number of rupiah: "
        "midpay does not act on it (fix the row first)"
    )
    whole = sibling_cli("status", sibling["orders"]["to_refund"], "--json").json()["gross_amount"]
    assert whole == 99000
    assert snapshot(sibling_db.url, original_columns(sibling_db.url))["payment_transactions"] == {
        k: v for k, v in before["payment_transactions"].items()
    }
    with psycopg.connect(sibling_db.url) as conn:
        assert conn.execute("SELECT count(*) FROM payment_refunds").fetchone() == (0,)
        amount = conn.execute("SELECT gross_amount FROM payment_transactions WHERE order_id = 'FRACTION-1'")
        assert amount.fetchone() == (Decimal("15000.50"),)


def test_an_order_id_longer_than_the_column_is_refused_before_anything_is_written(
    sibling_db: NodeDb, sibling_cli: Any, sibling: dict[str, Any], sandbox: Any
) -> None:
    user = str(sibling["users"]["sari"])
    too_long = "shop-order-2026-11-26-000000000042"  # 34 characters: Midtrans takes it, the column does not
    refused = sibling_cli("charge", "--amount", "20000", "--user-id", user, "--order-id", too_long)
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        f"Error: order id '{too_long}' is 34 characters, but payment_transactions.order_id in this database "
        "takes at most 32: give a shorter --order-id"
    )
    assert sandbox.get_order(too_long) is None, "Midtrans was not asked"
    with psycopg.connect(sibling_db.url) as conn:
        written = conn.execute("SELECT count(*) FROM payment_transactions WHERE order_id = %s", (too_long,))
        assert written.fetchone() == (0,)
    charged = sibling_cli("charge", "--amount", "20000", "--user-id", user, "--json")
    assert charged.exit_code == 0, charged
    doc = charged.json()
    assert (doc["status"], doc["gross_amount"]) == ("pending", 20000)
    with psycopg.connect(sibling_db.url) as conn:
        row = conn.execute("SELECT gross_amount FROM payment_transactions WHERE order_id = %s", (doc["order_id"],))
        assert row.fetchone() == (Decimal("20000.00"),)
