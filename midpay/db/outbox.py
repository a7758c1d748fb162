"""The rows of payment_events: what changed, read back with the payment as it was then.

The events are written by a trigger (sql/009_payment_events.sql), never here. Each keeps
the payment row after its change (``payment``, ``to_jsonb`` of the row) and the payment's
refund rows at that moment (``refunds``). They are read back through the tables' own row
types (``jsonb_populate_record``), so a snapshot of the older backend's layout reads
exactly as the live row does (``db.payments``): ``timestamp`` columns as ``timestamptz``
in this session's TimeZone, a ``numeric`` amount as an exact number.

``body`` is the event document, rendered once by whoever sends the event first
(``store_body``) and never changed after, so every retry sends the same bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from midpay.db.core import Connection
from midpay.db.payments import PAYMENT_COLUMNS, Payment
from midpay.db.refunds import Refund


@dataclass(frozen=True)
class Event:
    """One row of payment_events, with its snapshot read into the payment and its refunds."""

    id: str
    payment_id: uuid.UUID
    order_id: str
    type: str
    sequence: int
    previous_status: str | None
    status: str
    paid: bool
    created_at: datetime
    body: str | None
    payment: Payment
    refunds: tuple[Refund, ...] = ()


_EVENT_COLUMNS = (
    "e.id, e.payment_id, e.order_id, e.type, e.sequence, e.previous_status, e.status, e.paid, e.created_at, e.body"
)
_EVENT_WIDTH = len(_EVENT_COLUMNS.split(", "))
_SNAPSHOT_COLUMNS = ", ".join(f"p.{column}" for column in PAYMENT_COLUMNS.split(", "))
_SELECT = (
    f"SELECT {_EVENT_COLUMNS}, {_SNAPSHOT_COLUMNS} FROM payment_events AS e "
    "CROSS JOIN LATERAL jsonb_populate_record(NULL::payment_transactions, e.payment) AS p "
)
_REFUNDS = (
    "SELECT e.id, r.id, r.payment_id, r.order_id, r.refund_key, r.amount, r.reason, r.status, r.origin, "
    "r.refund_chargeback_id, r.refunded_at::timestamptz, r.bank_confirmed_at::timestamptz, r.refund_method, "
    "r.created_at::timestamptz, r.updated_at::timestamptz, r.midtrans_response_json "
    "FROM payment_events AS e "
    "CROSS JOIN LATERAL jsonb_populate_recordset(NULL::payment_refunds, e.refunds) WITH ORDINALITY AS r "
    "WHERE e.id = ANY(%s) ORDER BY e.id, r.ordinality"
)


def events_of_order(conn: Connection, order_id: str) -> list[Event]:
    """Every event of an order, in sequence."""
    return _read(conn, _SELECT + "WHERE e.order_id = %s ORDER BY e.sequence", (order_id,))


def newest_events(conn: Connection, limit: int) -> list[Event]:
    """The ``limit`` newest events, newest first."""
    return _read(conn, _SELECT + "ORDER BY e.created_at DESC, e.id DESC LIMIT %s", (limit,))


def events_by_id(conn: Connection, ids: Sequence[str]) -> list[Event]:
    """The events of ``ids`` in that order; ids with no event are left out."""
    found = {e.id: e for e in _read(conn, _SELECT + "WHERE e.id = ANY(%s)", (list(ids),))}
    return [found[i] for i in ids if i in found]


def store_bodies(conn: Connection, bodies: dict[str, str]) -> dict[str, str]:
    """Keep each event's body unless one is kept already (the first to store wins); the bodies kept, by event id."""
    rows = conn.execute(
        "WITH stored AS ("
        "  UPDATE payment_events AS e SET body = v.body FROM unnest(%(ids)s::text[], %(bodies)s::text[]) AS v(id, body)"
        "   WHERE e.id = v.id AND e.body IS NULL RETURNING e.id, e.body)"
        " SELECT id, body FROM stored"
        " UNION ALL SELECT id, body FROM payment_events"  # kept before this statement: the snapshot shows them
        "  WHERE id = ANY(%(ids)s) AND body IS NOT NULL",
        {"ids": list(bodies), "bodies": list(bodies.values())},
    ).fetchall()
    return {str(i): str(b) for i, b in rows}


def store_body(conn: Connection, event_id: str, body: str) -> str:
    """``store_bodies`` for one event: the body kept for it."""
    kept = store_bodies(conn, {event_id: body})
    if event_id not in kept:
        raise LookupError(f"no payment event {event_id}")
    return kept[event_id]


def _read(conn: Connection, query: str, params: tuple[Any, ...]) -> list[Event]:
    rows = conn.execute(query, params).fetchall()
    refunds = _refunds(conn, [row[0] for row in rows])
    events = []
    for row in rows:
        event_id, payment_id, order_id, type_, sequence, previous, status, paid, created_at, body = row[:_EVENT_WIDTH]
        events.append(Event(
            id=event_id, payment_id=payment_id, order_id=order_id, type=type_, sequence=sequence,
            previous_status=previous, status=status, paid=paid, created_at=created_at, body=body,
            payment=Payment(*row[_EVENT_WIDTH:]), refunds=refunds.get(event_id, ()),
        ))
    return events


def _refunds(conn: Connection, event_ids: list[str]) -> dict[str, tuple[Refund, ...]]:
    if not event_ids:
        return {}
    found: dict[str, list[Refund]] = {}
    for row in conn.execute(_REFUNDS, (event_ids,)).fetchall():
        found.setdefault(row[0], []).append(Refund(*row[1:]))
    return {event_id: tuple(rows) for event_id, rows in found.items()}
