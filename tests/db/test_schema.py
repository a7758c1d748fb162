"""The layout facts midpay reads from information_schema, on midpay's own migrations and on a narrower table."""

from __future__ import annotations

from typing import Any

import psycopg

from midpay.db import schema


def test_layout_of_midpays_own_tables(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        found = schema.read_layout(conn)
    order_id = found.column("payment_transactions", "order_id")
    assert order_id is not None and order_id.max_length == 255 and not order_id.nullable
    assert found.column("payment_transactions", "created_at").data_type == "timestamp with time zone"  # type: ignore[union-attr]
    assert found.max_length("payment_webhook_events", "signature_key") == 255
    assert found.max_length("payment_refunds", "refund_key") == 255
    assert found.column("payment_transactions", "no_such_column") is None


def test_layout_sees_a_backend_that_laid_the_table_out_differently(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "CREATE TABLE payment_transactions (order_id varchar(40) NOT NULL, gross_amount numeric(12,2), "
            "created_at timestamp DEFAULT current_timestamp)"
        )
        conn.commit()
        found = schema.read_layout(conn)
    assert found.max_length("payment_transactions", "order_id") == 40
    amount = found.column("payment_transactions", "gross_amount")
    assert amount is not None and amount.data_type == "numeric" and amount.nullable
    created = found.column("payment_transactions", "created_at")
    assert created is not None and created.data_type == "timestamp without time zone" and created.has_default


def test_layout_is_read_once_per_key(db_url: str, empty_db_url: str) -> None:
    schema.forget()
    try:
        with psycopg.connect(db_url) as conn:
            first = schema.layout(conn, "k")
        with psycopg.connect(empty_db_url) as other:  # a different database, same key: the cached facts
            again: Any = schema.layout(other, "k")
        assert again is first
    finally:
        schema.forget()
