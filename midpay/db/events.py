"""The rows of payment_webhook_events: every notification body received, and its outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db import schema
from midpay.db.core import Connection, fetch_all
from midpay.db.payments import PAYMENT_COLUMNS, SET_EVENT, Payment


@dataclass(frozen=True)
class WebhookEvent:
    """One row of payment_webhook_events."""

    id: uuid.UUID
    received_at: datetime
    order_id: str | None
    midtrans_transaction_id: str | None
    raw_body: Any
    signature_key: str | None
    is_verified: bool
    processed: bool
    processing_error: str | None
    source: str | None
    outcome: str | None
    processed_at: datetime | None


# Times read as timestamptz whatever the column type (see db.payments).
_EVENT_COLUMNS = (
    "id, received_at::timestamptz AS received_at, order_id, midtrans_transaction_id, raw_body, signature_key, "
    "is_verified, processed, processing_error, source, outcome, processed_at::timestamptz AS processed_at"
)


def insert_event(
    conn: Connection,
    *,
    raw_body: Any,
    source: str,
    order_id: str | None,
    transaction_id: str | None,
    signature_key: str | None,
    lock_order_id: str | None = None,
) -> tuple[uuid.UUID, Payment | None]:
    """Store a received body before anything is decided about it.

    With ``lock_order_id``, the same statement also reads and locks that payment
    (``FOR UPDATE``) for the decision that follows: one round trip for both. Text
    fields longer than this database's columns are cut to fit; ``raw_body`` keeps them whole.
    """
    layout = schema.of(conn)
    with conn.cursor() as cur:
        cur.execute(
            "WITH e AS (INSERT INTO payment_webhook_events "
            "(raw_body, source, order_id, midtrans_transaction_id, signature_key, is_verified, processed) "
            "VALUES (%s, %s, %s, %s, %s, false, false) RETURNING id) "
            f"SELECT e.id, p.* FROM e LEFT JOIN LATERAL ("
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = %s FOR UPDATE) p ON true",
            (
                Jsonb(raw_body), source, _clip(layout, "order_id", order_id),
                _clip(layout, "midtrans_transaction_id", transaction_id),
                _clip(layout, "signature_key", signature_key), lock_order_id,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    event_id: uuid.UUID = row[0]
    payment = Payment(*row[1:]) if row[1] is not None else None
    return event_id, payment


def finish_event(
    conn: Connection, event_id: uuid.UUID, *, is_verified: bool, outcome: str, error: str | None
) -> None:
    """Record what became of a stored body: verified or not, applied, unchanged or rejected."""
    conn.execute(
        f"UPDATE payment_webhook_events SET {SET_EVENT} WHERE id = %s",
        (is_verified, outcome != "rejected", outcome, error, event_id),
    )


def list_events(
    conn: Connection, *, order_id: str | None = None, rejected_only: bool = False, limit: int = 100
) -> list[WebhookEvent]:
    """Stored notifications, newest first."""
    return fetch_all(
        conn, WebhookEvent,
        f"SELECT {_EVENT_COLUMNS} FROM payment_webhook_events "
        "WHERE (%s::text IS NULL OR order_id = %s) AND (NOT %s OR NOT processed) "
        "ORDER BY received_at DESC, id LIMIT %s",
        (order_id, order_id, rejected_only, limit),
    )


def _clip(layout: schema.Layout, column: str, value: str | None) -> str | None:
    if value is None:
        return None
    size = layout.max_length("payment_webhook_events", column)
    return value if size is None else value[:size]


# --- reprocessing stored notifications -------------------------------------------------

# The rows `midpay events reprocess` takes: not processed (rejected, or stored and never
# decided, e.g. by the older backend), or with ``rejected_only`` only the rejected ones.
_UNPROCESSED = "NOT processed AND (NOT %s OR outcome = 'rejected') AND (%s::text IS NULL OR order_id = %s)"


def select_unprocessed_event_ids(
    conn: Connection, *, order_id: str | None = None, rejected_only: bool = False
) -> list[uuid.UUID]:
    """Ids of the stored notifications still to be processed, oldest first."""
    rows = conn.execute(
        f"SELECT id FROM payment_webhook_events WHERE {_UNPROCESSED} ORDER BY received_at, id",
        (rejected_only, order_id, order_id),
    ).fetchall()
    return [row[0] for row in rows]


def lock_unprocessed_event(
    conn: Connection, event_id: uuid.UUID, *, rejected_only: bool = False
) -> WebhookEvent | None:
    """Lock one stored notification if it is still unprocessed; None when another run has it or did it."""
    with conn.cursor(row_factory=class_row(WebhookEvent)) as cur:
        cur.execute(
            f"SELECT {_EVENT_COLUMNS} FROM payment_webhook_events WHERE id = %s AND {_UNPROCESSED} "
            "FOR UPDATE SKIP LOCKED",
            (event_id, rejected_only, None, None),
        )
        return cur.fetchone()

