"""The SQL of the notification intake: storing bodies in batches, recording outcomes, finding copies.

The statements are module constants so that bench/bench_replay_offline.py can send
pgbench exactly what midpay sends (with the values inlined).

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

from midpay.db.core import Connection, execute_rows
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
    raw_body_json: str | None = None  # raw_body already serialized (json.dumps), by whoever prepared it


def _as_is(text: str) -> str:
    return text


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
# One statement for the batch, its arrays sent in binary (no escaping of the bodies).
STORE = (
    "INSERT INTO payment_webhook_events (id, received_at, raw_body, raw_bytes, source, order_id, "
    "midtrans_transaction_id, signature_key, is_verified, processed) "
    "SELECT x.id, clock_timestamp(), x.raw_body, x.raw_bytes, x.source, x.order_id, x.transaction_id, "
    "x.signature_key, false, false "
    "FROM unnest(%b::uuid[], %b::jsonb[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "WITH ORDINALITY AS x(id, raw_body, raw_bytes, source, order_id, transaction_id, signature_key, i) ORDER BY x.i"
)


def store_events(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Insert received bodies, undecided: one statement for the lot."""
    execute_rows(conn, STORE, [
        (e.id, _body(e), e.raw_bytes, e.source, _clip(e.order_id), _clip(e.transaction_id), _clip(e.signature_key))
        for e in events
    ])


def _body(event: NewEvent) -> Jsonb:
    return Jsonb(event.raw_body) if event.raw_body_json is None else Jsonb(event.raw_body_json, dumps=_as_is)


FINISH = (
    "UPDATE payment_webhook_events e SET is_verified = x.is_verified, processed = x.processed, "
    "outcome = x.outcome, processing_error = x.error, processed_at = now(), "
    "confirmed_at = CASE WHEN x.confirmed THEN now() ELSE e.confirmed_at END "
    "FROM unnest(%b::uuid[], %b::boolean[], %b::boolean[], %b::text[], %b::text[], %b::boolean[]) "
    "AS x(id, is_verified, processed, outcome, error, confirmed) WHERE e.id = x.id"
)


def record_outcomes(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    """Write what became of stored bodies (one statement); only applied and unchanged ones count as processed."""
    last = {o.event_id: o for o in outcomes}  # one outcome per body: the last one given
    execute_rows(conn, FINISH, [
        (o.event_id, o.is_verified, o.outcome in DONE_OUTCOMES, o.outcome, o.error, o.confirmed) for o in last.values()
    ])


PAYMENTS_BY_ORDER = f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = ANY(%b)"


def payments_by_order(conn: Connection, order_ids: Sequence[str]) -> dict[str, Payment]:
    """The payments of these order ids (unlocked), by order id."""
    if not order_ids:
        return {}
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(PAYMENTS_BY_ORDER, (list(order_ids),))
        return {p.order_id: p for p in cur.fetchall()}


COPIES_BY_ID = (
    "SELECT x.i - 1 FROM unnest(%b::text[], %b::uuid[]) WITH ORDINALITY AS x(order_id, id, i) "
    "JOIN payment_webhook_events n ON n.id = x.id "
    "WHERE EXISTS (SELECT 1 FROM payment_webhook_events e WHERE e.order_id = x.order_id "
    "AND e.confirmed_at IS NOT NULL AND e.raw_body = n.raw_body)"
)
COPIES_BY_BODY = (
    "SELECT x.i - 1 FROM unnest(%b::text[], %b::jsonb[]) WITH ORDINALITY AS x(order_id, body, i) "
    "WHERE EXISTS (SELECT 1 FROM payment_webhook_events e WHERE e.order_id = x.order_id "
    "AND e.confirmed_at IS NOT NULL AND e.raw_body = x.body)"
)


def confirmed_copies(conn: Connection, bodies: Sequence[tuple[str, Any]],
                     event_ids: Sequence[uuid.UUID | None] = ()) -> set[int]:
    """Positions in ``bodies`` ((order_id, JSON) pairs) of which an identical body was confirmed before.

    Identical means equal as jsonb: the same keys and values, whatever the spacing or key order.
    With the bodies' stored ``event_ids`` (all of them), the stored bodies are compared
    and only the ids are sent.
    """
    if not bodies:
        return set()
    ids = list(event_ids)
    orders = [o for o, _ in bodies]
    params: tuple[list[Any], list[Any]]
    if len(ids) == len(bodies) and all(i is not None for i in ids):
        query, params = COPIES_BY_ID, (orders, ids)
    else:
        query, params = COPIES_BY_BODY, (orders, [Jsonb(b) for _, b in bodies])
    return {int(r[0]) for r in conn.execute(query, params).fetchall()}


def mark_unconfirmed(conn: Connection, order_ids: Sequence[str]) -> None:
    """Flag payments that now have a notification awaiting confirmation (reconcile checks them)."""
    if order_ids:
        conn.execute(
            "UPDATE payment_transactions SET unconfirmed_since = COALESCE(unconfirmed_since, now()) "
            "WHERE order_id = ANY(%s) AND unconfirmed_since IS NULL",
            (list(order_ids),),
        )


SETTLE_AWAITING = (
    "UPDATE payment_webhook_events e SET processed = true, outcome = x.outcome, processing_error = NULL, "
    "processed_at = now(), confirmed_at = now() FROM unnest(%b::text[], %b::text[]) AS x(order_id, outcome) "
    "WHERE e.order_id = x.order_id AND e.outcome = 'awaiting' AND NOT e.processed"
)


def settle_awaiting_many(conn: Connection, settled: Sequence[tuple[str, str]]) -> None:
    """Record the awaiting notifications of orders as decided by confirmed answers just applied:
    (order_id, outcome) pairs, one statement."""
    if settled:
        conn.execute(SETTLE_AWAITING, ([o for o, _ in settled], [outcome for _, outcome in settled]))


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
