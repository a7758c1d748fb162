"""The rows of payment_webhook_events: every notification body received, and its outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from midpay.db import schema
from midpay.db.core import Connection, fetch_all


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
