"""The delivery log: webhook_deliveries and webhook_attempts as people read them, and redelivery.

``midpay deliver`` claims, sends and records (db/deliveries.py); this module only lists
what happened and queues deliveries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from midpay.db.core import Connection


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint: where it stands."""

    event_id: str
    endpoint_id: str
    order_id: str
    type: str
    sequence: int
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One try at a delivery."""

    event_id: str
    endpoint_id: str
    attempted_at: datetime
    status_code: int | None
    duration_ms: int | None
    error: str | None


_DELIVERY_COLUMNS = (
    "d.event_id, d.endpoint_id, d.order_id, e.type, d.sequence, d.status, d.attempts, d.last_status_code, "
    "d.last_error, d.next_attempt_at, d.delivered_at, d.created_at"
)


def list_deliveries(
    conn: Connection, *, endpoint_id: str | None, order_id: str | None, failed_only: bool, limit: int
) -> list[Delivery]:
    """Deliveries, newest first (an order's later events before its earlier ones)."""
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        cur.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN payment_events e ON e.id = d.event_id "
            "WHERE (%(endpoint)s::text IS NULL OR d.endpoint_id = %(endpoint)s) "
            "AND (%(order)s::text IS NULL OR d.order_id = %(order)s) "
            "AND (NOT %(failed)s OR d.status = 'failed') "
            "ORDER BY d.created_at DESC, d.sequence DESC, d.endpoint_id LIMIT %(limit)s",
            {"endpoint": endpoint_id, "order": order_id, "failed": failed_only, "limit": limit},
        )
        return cur.fetchall()


def attempts_of(conn: Connection, deliveries: Sequence[Delivery]) -> list[Attempt]:
    """Every attempt of these deliveries, oldest first."""
    if not deliveries:
        return []
    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        cur.execute(
            "SELECT a.event_id, a.endpoint_id, a.attempted_at, a.status_code, a.duration_ms, a.error "
            "FROM webhook_attempts a JOIN unnest(%s::text[], %s::text[]) AS k(event_id, endpoint_id) "
            "ON a.event_id = k.event_id AND a.endpoint_id = k.endpoint_id ORDER BY a.attempted_at, a.id",
            ([d.event_id for d in deliveries], [d.endpoint_id for d in deliveries]),
        )
        return cur.fetchall()


def events_with_deliveries(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` that have a delivery."""
    rows = conn.execute(
        "SELECT DISTINCT event_id FROM webhook_deliveries WHERE event_id = ANY(%s)", (list(event_ids),)
    ).fetchall()
    return {row[0] for row in rows}


def existing_events(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` that payment_events has."""
    rows = conn.execute("SELECT id FROM payment_events WHERE id = ANY(%s)", (list(event_ids),)).fetchall()
    return {row[0] for row in rows}


def add_deliveries(conn: Connection, event_ids: Sequence[str], endpoint_id: str) -> int:
    """A pending delivery of each of these events to ``endpoint_id`` that has none yet; how many were made."""
    cur = conn.execute(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, order_id, sequence) "
        "SELECT e.id, %s, e.order_id, e.sequence FROM payment_events e WHERE e.id = ANY(%s) "
        "ON CONFLICT (event_id, endpoint_id) DO NOTHING",
        (endpoint_id, list(event_ids)),
    )
    return cur.rowcount


# Pending and leased: a `deliver` process is sending it right now. Queueing it again
# would let a second process send it at the same time, so it is left to finish.
_IN_FLIGHT = "(d.status = 'pending' AND d.leased_until IS NOT NULL AND d.leased_until > clock_timestamp())"


def resend(
    conn: Connection, *, event_ids: Sequence[str] | None, failed_only: bool, endpoint_id: str | None
) -> tuple[list[Delivery], list[Delivery]]:
    """Queue the chosen deliveries again, due now (their attempts are kept); returns (queued, in flight).

    Chosen: those of ``event_ids`` (or all), only the failed ones with ``failed_only``,
    only to ``endpoint_id`` when given. In-flight ones are left as they are.
    """
    chosen = (
        "(%(ids)s::text[] IS NULL OR d.event_id = ANY(%(ids)s)) AND (NOT %(failed)s OR d.status = 'failed') "
        "AND (%(endpoint)s::text IS NULL OR d.endpoint_id = %(endpoint)s)"
    )
    params = {"ids": list(event_ids) if event_ids is not None else None, "failed": failed_only, "endpoint": endpoint_id}
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        cur.execute(
            "WITH d AS (UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = clock_timestamp(), "
            f"leased_until = NULL, delivered_at = NULL WHERE {chosen} AND NOT ({_IN_FLIGHT}) RETURNING d.*) "
            f"SELECT {_DELIVERY_COLUMNS} FROM d JOIN payment_events e ON e.id = d.event_id "
            "ORDER BY d.created_at, d.sequence, d.endpoint_id",
            params,
        )
        queued = cur.fetchall()
        cur.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN payment_events e ON e.id = d.event_id "
            f"WHERE {chosen} AND {_IN_FLIGHT} ORDER BY d.created_at, d.sequence, d.endpoint_id",
            params,
        )
        return queued, cur.fetchall()
