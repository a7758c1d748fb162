"""The rows of payment_refunds: refunds asked of Midtrans, one per refund_key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db.core import Connection


@dataclass(frozen=True)
class Refund:
    """One row of payment_refunds: a refund asked of Midtrans under one refund_key."""

    id: uuid.UUID
    payment_id: uuid.UUID
    order_id: str
    refund_key: str
    amount: int
    reason: str | None
    status: str  # requested | done | rejected
    created_at: datetime
    updated_at: datetime
    midtrans_response_json: Any


_REFUND_COLUMNS = (
    "id, payment_id, order_id, refund_key, amount, reason, status, created_at, updated_at, midtrans_response_json"
)


def list_refunds(conn: Connection, payment_id: uuid.UUID) -> list[Refund]:
    """Every refund of a payment, oldest first."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            f"SELECT {_REFUND_COLUMNS} FROM payment_refunds WHERE payment_id = %s ORDER BY created_at, id",
            (payment_id,),
        )
        return cur.fetchall()


def insert_refund(
    conn: Connection, *, payment_id: uuid.UUID, order_id: str, refund_key: str, amount: int, reason: str | None
) -> Refund | None:
    """Record a ``requested`` refund; None when the refund_key is already taken."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, reason, status) "
            "VALUES (%s, %s, %s, %s, %s, 'requested') ON CONFLICT (refund_key) DO NOTHING "
            f"RETURNING {_REFUND_COLUMNS}",
            (payment_id, order_id, refund_key, amount, reason),
        )
        return cur.fetchone()


def finish_refund(conn: Connection, refund_id: uuid.UUID, *, status: str, response: Any) -> Refund:
    """Record Midtrans' definite answer to a refund: ``done`` or ``rejected``."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "UPDATE payment_refunds SET status = %s, midtrans_response_json = %s, updated_at = now() "
            f"WHERE id = %s RETURNING {_REFUND_COLUMNS}",
            (status, Jsonb(response), refund_id),
        )
        row = cur.fetchone()
        assert row is not None
        return row
