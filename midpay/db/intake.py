"""The SQL of the notification intake: storing bodies in batches, recording outcomes, finding copies.

Beside ``events`` (one row at a time, as the older backend's rows are read), these
statements work on many stored notifications at once: a replayed day's log is stored in
one round trip per batch, and its outcomes recorded the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db.core import Connection
from midpay.db.payments import PAYMENT_COLUMNS, Payment

# Outcomes after which a stored notification needs nothing more: `events reprocess`
# takes every other one (rejected, awaiting confirmation, never decided).
DONE_OUTCOMES = ("applied", "unchanged")


@dataclass(frozen=True)
class NewEvent:
    """A received body to store: its exact bytes, its JSON for raw_body, what it names."""

    id: uuid.UUID
    raw_body: Any
    raw_bytes: bytes
    source: str
    order_id: str | None
    transaction_id: str | None
    signature_key: str | None


@dataclass(frozen=True)
class Outcome:
    """What became of one stored body. ``confirmed``: Midtrans' own answer decided it."""

    event_id: uuid.UUID
    is_verified: bool
    outcome: str  # applied | unchanged | awaiting | rejected
    error: str | None
    confirmed: bool = False


@dataclass(frozen=True)
class StoredBody:
    """A stored notification as reprocessing reads it back."""

    id: uuid.UUID
    raw_body: Any
    raw_bytes: bytes | None
    outcome: str | None


def _clip(value: str | None, size: int = 255) -> str | None:
    return None if value is None else value[:size]


# clock_timestamp(), not the transaction's now(): the bodies of one batch keep the order
# they arrived in (``events`` lists, and ``events reprocess`` takes, by received_at).
_INSERT = (
    "INSERT INTO payment_webhook_events (id, received_at, raw_body, raw_bytes, source, order_id, "
    "midtrans_transaction_id, signature_key, is_verified, processed) "
    "VALUES (%s, clock_timestamp(), %s, %s, %s, %s, %s, %s, false, false)"
)


def store_events(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Insert received bodies, undecided (a pipeline: one round trip for the lot)."""
    rows = [
        (e.id, Jsonb(e.raw_body), e.raw_bytes, e.source, _clip(e.order_id), _clip(e.transaction_id),
         _clip(e.signature_key))
        for e in events
    ]
    with conn.cursor() as cur:
        cur.executemany(_INSERT, rows)


_FINISH = (
    "UPDATE payment_webhook_events SET is_verified = %s, processed = %s, outcome = %s, processing_error = %s, "
    "processed_at = now(), confirmed_at = CASE WHEN %s THEN now() ELSE confirmed_at END WHERE id = %s"
)


def record_outcomes(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    """Write what became of stored bodies; only applied and unchanged ones count as processed."""
    if not outcomes:
        return
    rows = [
        (o.is_verified, o.outcome in DONE_OUTCOMES, o.outcome, o.error, o.confirmed, o.event_id) for o in outcomes
    ]
    with conn.cursor() as cur:
        cur.executemany(_FINISH, rows)


def payments_by_order(conn: Connection, order_ids: Sequence[str]) -> dict[str, Payment]:
    """The payments of these order ids (unlocked), by order id."""
    if not order_ids:
        return {}
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = ANY(%s)", (list(order_ids),)
        )
        return {p.order_id: p for p in cur.fetchall()}


def confirmed_copies(conn: Connection, bodies: Sequence[tuple[str, Any]]) -> set[int]:
    """Positions in ``bodies`` ((order_id, JSON) pairs) of which an identical body was confirmed before.

    Identical means equal as jsonb: the same keys and values, whatever the spacing or key order.
    """
    if not bodies:
        return set()
    rows = conn.execute(
        "SELECT x.i - 1 FROM unnest(%s::text[], %s::jsonb[]) WITH ORDINALITY AS x(order_id, body, i) "
        "WHERE EXISTS (SELECT 1 FROM payment_webhook_events e WHERE e.order_id = x.order_id "
        "AND e.confirmed_at IS NOT NULL AND e.raw_body = x.body)",
        ([o for o, _ in bodies], [Jsonb(b) for _, b in bodies]),
    ).fetchall()
    return {int(r[0]) for r in rows}


def mark_unconfirmed(conn: Connection, order_ids: Sequence[str]) -> None:
    """Flag payments that now have a notification awaiting confirmation (reconcile checks them)."""
    if order_ids:
        conn.execute(
            "UPDATE payment_transactions SET unconfirmed_since = COALESCE(unconfirmed_since, now()) "
            "WHERE order_id = ANY(%s) AND unconfirmed_since IS NULL",
            (list(order_ids),),
        )


def settle_awaiting(conn: Connection, order_id: str, outcome: str) -> None:
    """Record the awaiting notifications of an order as decided by a confirmed answer just applied."""
    conn.execute(
        "UPDATE payment_webhook_events SET processed = true, outcome = %s, processing_error = NULL, "
        "processed_at = now(), confirmed_at = now() WHERE order_id = %s AND outcome = 'awaiting' AND NOT processed",
        (outcome, order_id),
    )


def stored_bodies(conn: Connection, ids: Sequence[uuid.UUID]) -> list[StoredBody]:
    """The stored bodies of these events, in the order of ``ids`` (missing ones left out)."""
    if not ids:
        return []
    with conn.cursor(row_factory=class_row(StoredBody)) as cur:
        cur.execute(
            "SELECT id, raw_body, raw_bytes, outcome FROM payment_webhook_events WHERE id = ANY(%s)", (list(ids),)
        )
        found = {row.id: row for row in cur.fetchall()}
    return [found[i] for i in ids if i in found]


def lock_payments(conn: Connection, order_ids: Sequence[str]) -> dict[str, Payment]:
    """Lock the payments of these order ids, in order_id order (so batches never deadlock), by order id."""
    if not order_ids:
        return {}
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE",
            (list(order_ids),),
        )
        return {p.order_id: p for p in cur.fetchall()}
