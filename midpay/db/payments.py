"""The rows of payment_transactions: read, insert, move forward, list."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db.core import Connection, first_line
from midpay.errors import DataConflict


@dataclass(frozen=True)
class Payment:
    """One row of payment_transactions."""

    id: uuid.UUID
    user_id: int | None
    order_id: str
    gross_amount: int
    payment_type: str
    status: str
    midtrans_transaction_id: str | None
    midtrans_response_json: Any
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None
    last_checked_at: datetime | None
    unconfirmed_since: datetime | None = None  # a notification awaits Midtrans' confirmation


PAYMENT_COLUMNS = (
    "id, user_id, order_id, gross_amount, payment_type, status, midtrans_transaction_id, "
    "midtrans_response_json, created_at, updated_at, paid_at, last_checked_at, unconfirmed_since"
)


def insert_payment(
    conn: Connection, *, order_id: str, gross_amount: int, payment_type: str, user_id: int | None
) -> Payment | None:
    """Insert a ``created`` row; None when the order id is already taken."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, user_id) "
            f"VALUES (%s, %s, %s, 'created', %s) ON CONFLICT (order_id) DO NOTHING RETURNING {PAYMENT_COLUMNS}",
            (order_id, gross_amount, payment_type, user_id),
        )
        return cur.fetchone()


def get_payment(conn: Connection, order_id: str, *, for_update: bool = False) -> Payment | None:
    """The payment of ``order_id``; ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = %s{lock}",
            (order_id,),
        )
        return cur.fetchone()



@dataclass(frozen=True)
class EventOutcome:
    """What became of a stored notification, written together with the payment it moved."""

    event_id: uuid.UUID
    is_verified: bool
    outcome: str  # applied | unchanged | rejected
    error: str | None = None


_SET_PAYMENT = (
    "status = %s, "
    "midtrans_transaction_id = COALESCE(midtrans_transaction_id, %s), "
    "midtrans_response_json = CASE WHEN jsonb_typeof(midtrans_response_json) = 'object' "
    "THEN midtrans_response_json ELSE '{}'::jsonb END || %s, "
    "paid_at = COALESCE(paid_at, %s), payment_type = COALESCE(%s, payment_type), "
    "unconfirmed_since = CASE WHEN %s::boolean IS NULL THEN unconfirmed_since "
    "WHEN %s::boolean THEN COALESCE(unconfirmed_since, now()) END, updated_at = now()"
)
SET_EVENT = "is_verified = %s, processed = %s, outcome = %s, processing_error = %s, processed_at = now()"


def update_payment(
    conn: Connection,
    payment_id: uuid.UUID,
    *,
    status: str,
    midtrans_transaction_id: str | None,
    response: Any,
    paid_at: datetime | None,
    event: EventOutcome | None = None,
    payment_type: str | None = None,
    unconfirmed: bool | None = None,
) -> Payment:
    """Write Midtrans' view onto a locked row. ``paid_at`` is only ever filled, never replaced.

    The stored answer is merged key by key over the earlier ones, so the charge's
    ``actions``, ``qr_string`` and expiry survive later status answers that lack them.
    ``payment_type`` replaces the stored one when given; ``unconfirmed`` True marks the
    row as awaiting confirmation (keeping the first mark's time), False clears the mark,
    None leaves it.
    """
    params: tuple[Any, ...] = (
        status, midtrans_transaction_id, Jsonb(response), paid_at, payment_type, unconfirmed, unconfirmed,
        payment_id,
    )
    query = f"UPDATE payment_transactions SET {_SET_PAYMENT} WHERE id = %s RETURNING {PAYMENT_COLUMNS}"
    if event is not None:  # one round trip for both rows
        query = (
            f"WITH p AS ({query}), "
            f"e AS (UPDATE payment_webhook_events SET {SET_EVENT} WHERE id = %s) "
            "SELECT * FROM p"
        )
        params += (event.is_verified, event.outcome != "rejected", event.outcome, event.error, event.event_id)
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        try:
            cur.execute(query, params)
        except psycopg.IntegrityError as exc:
            # e.g. a transaction id that another payment already carries
            raise DataConflict(f"the database refused the update: {first_line(exc)}") from exc
        row = cur.fetchone()
        assert row is not None
        return row


def list_payments(
    conn: Connection, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[Payment]:
    """Most recent payments first, optionally of one status and after a time."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions "
            "WHERE (%s::text IS NULL OR status = %s) AND (%s::timestamptz IS NULL OR created_at >= %s) "
            "ORDER BY created_at DESC, order_id LIMIT %s",
            (status, status, since, since, limit),
        )
        return cur.fetchall()

