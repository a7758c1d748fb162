"""webhook_deliveries for `midpay deliver`: claiming due deliveries, storing bodies, recording attempts.

A delivery is due when it is pending, its ``next_attempt_at`` has come, nobody holds its
lease, its endpoint is enabled, and no earlier ``sequence`` of the same order is still
pending for the same endpoint (an order's events reach an endpoint in order). Claiming
locks the rows ``FOR UPDATE SKIP LOCKED`` and sets ``leased_until``, so several
processes share the work and none sends a delivery another one holds. Every clock here
is the database server's.

Each function is one statement (its own transaction): on the autocommit connections
`deliver` uses, one round trip each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from midpay.db.core import Connection

ERROR_CHARS = 500


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery: where it goes, how it is signed, and its event's body (None: not rendered yet)."""

    event_id: str
    endpoint_id: str
    order_id: str
    sequence: int
    attempts: int
    url: str
    secrets: tuple[str, ...]
    body: str | None
    leased_until: datetime | None = None  # the lease this claim took: only its holder gives it back


_CLAIM = """
WITH due AS (
    SELECT d.event_id, d.endpoint_id
      FROM webhook_deliveries AS d
      JOIN webhook_endpoints AS w ON w.id = d.endpoint_id
     WHERE d.status = 'pending'
       AND d.next_attempt_at <= LEAST(clock_timestamp(), COALESCE(%(due_before)s, clock_timestamp()))
       AND (d.leased_until IS NULL OR d.leased_until < clock_timestamp())
       AND w.enabled
       AND NOT EXISTS (
           SELECT 1 FROM webhook_deliveries AS p
            WHERE p.endpoint_id = d.endpoint_id AND p.order_id = d.order_id
              AND p.sequence < d.sequence AND p.status = 'pending')
     ORDER BY d.next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries AS d
   SET leased_until = clock_timestamp() + make_interval(secs => %(lease)s)
  FROM due, webhook_endpoints AS w, payment_events AS e
 WHERE d.event_id = due.event_id AND d.endpoint_id = due.endpoint_id
   AND w.id = d.endpoint_id AND e.id = d.event_id
RETURNING d.event_id, d.endpoint_id, d.order_id, d.sequence, d.attempts, d.leased_until, w.url, w.secret,
          CASE WHEN w.previous_secret_until > clock_timestamp() THEN w.previous_secret END AS previous_secret,
          e.body
"""


def claim_due(
    conn: Connection, *, limit: int, lease_seconds: float, due_before: datetime | None = None
) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries (due no later than ``due_before``, if given), oldest first."""
    params = {"limit": limit, "lease": lease_seconds, "due_before": due_before}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_CLAIM, params).fetchall()
    rows.sort(key=lambda r: (r["order_id"], r["sequence"]))
    return [_delivery(r) for r in rows]


def _delivery(r: dict[str, Any]) -> Delivery:
    secrets = (r["secret"],) if r["previous_secret"] is None else (r["secret"], r["previous_secret"])
    return Delivery(
        event_id=r["event_id"], endpoint_id=r["endpoint_id"], order_id=r["order_id"], sequence=r["sequence"],
        attempts=r["attempts"], url=r["url"], secrets=secrets, body=r["body"], leased_until=r["leased_until"],
    )


def release(conn: Connection, deliveries: list[Delivery]) -> None:
    """Give back the leases of claimed deliveries that were not sent (a process stopping): due again, to anyone.

    A lease that ran out and was taken by another process since is not this one's to give back.
    """
    conn.execute(
        "UPDATE webhook_deliveries AS d SET leased_until = NULL"
        "  FROM unnest(%(events)s::text[], %(endpoints)s::text[], %(leases)s::timestamptz[]) AS v(e, w, lease)"
        " WHERE d.event_id = v.e AND d.endpoint_id = v.w AND d.leased_until = v.lease AND d.status = 'pending'",
        {"events": [d.event_id for d in deliveries], "endpoints": [d.endpoint_id for d in deliveries],
         "leases": [d.leased_until for d in deliveries]},
    )


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    status_code: int | None
    duration_ms: int
    error: str | None
    delivered: bool
    gone: bool
    started_at: datetime | None = None  # None: when it is recorded


_RECORD = """
WITH v AS (
    SELECT * FROM unnest(%(event_ids)s::text[], %(endpoint_ids)s::text[], %(started)s::timestamptz[],
                         %(codes)s::int[], %(durations)s::int[], %(errors)s::text[], %(delivered)s::bool[],
                         %(gone)s::bool[], %(delays)s::float8[])
        AS v(event_id, endpoint_id, started_at, status_code, duration_ms, error, delivered, gone, delay)
), attempt AS (
    INSERT INTO webhook_attempts (event_id, endpoint_id, attempted_at, status_code, duration_ms, error)
    SELECT event_id, endpoint_id, COALESCE(started_at, clock_timestamp()), status_code, duration_ms, error FROM v
), gone AS (
    UPDATE webhook_endpoints AS w SET enabled = false, disabled_reason = '410 Gone'
      FROM v WHERE v.gone AND w.id = v.endpoint_id AND w.enabled
)
UPDATE webhook_deliveries AS d
   SET attempts = d.attempts + 1,
       status = CASE WHEN v.delivered THEN 'delivered'
                     WHEN clock_timestamp() >= e.created_at + make_interval(secs => %(give_up)s) THEN 'failed'
                     ELSE 'pending' END,
       next_attempt_at = LEAST(clock_timestamp() + make_interval(secs => v.delay),
                               e.created_at + make_interval(secs => %(give_up)s)),
       delivered_at = CASE WHEN v.delivered THEN clock_timestamp() END,
       leased_until = NULL,
       last_status_code = v.status_code,
       last_error = v.error
  FROM v, payment_events AS e
 WHERE d.event_id = v.event_id AND d.endpoint_id = v.endpoint_id AND e.id = d.event_id AND d.status = 'pending'
RETURNING d.event_id, d.endpoint_id, d.status
"""

Key = tuple[str, str]  # (event_id, endpoint_id): one delivery


def record_attempts(
    conn: Connection, attempts: list[tuple[Delivery, Attempt, float]], *, give_up_after: float
) -> dict[Key, str]:
    """Keep the attempts and move each delivery on: delivered, pending again in its retry delay, or failed for good.

    ``attempts`` holds (delivery, attempt, seconds until the next try). A 410 also disables
    the endpoint; the delivery stays pending, so re-enabling the endpoint resumes its events
    in order. Returns each delivery's status afterwards; one that was no longer pending
    (another run had finished it) is left out.
    """
    rows = conn.execute(_RECORD, {
        "event_ids": [d.event_id for d, _, _ in attempts], "endpoint_ids": [d.endpoint_id for d, _, _ in attempts],
        "started": [a.started_at for _, a, _ in attempts], "codes": [a.status_code for _, a, _ in attempts],
        "durations": [a.duration_ms for _, a, _ in attempts],
        "errors": [None if a.error is None else a.error[:ERROR_CHARS] for _, a, _ in attempts],
        "delivered": [a.delivered for _, a, _ in attempts], "gone": [a.gone for _, a, _ in attempts],
        "delays": [delay for _, _, delay in attempts], "give_up": give_up_after,
    }).fetchall()
    return {(str(e), str(w)): str(status) for e, w, status in rows}


def seconds_to_next_due(conn: Connection) -> float | None:
    """Seconds until the earliest pending delivery of an enabled endpoint comes due (None: nothing pending)."""
    row = conn.execute(
        "SELECT EXTRACT(EPOCH FROM min(d.next_attempt_at) - clock_timestamp())::float8"
        "  FROM webhook_deliveries AS d JOIN webhook_endpoints AS w ON w.id = d.endpoint_id"
        " WHERE d.status = 'pending' AND w.enabled AND d.next_attempt_at > clock_timestamp()",
    ).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def database_clock(conn: Connection) -> datetime:
    """The server's clock now (a --once run's cut-off)."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def refresh_statistics(conn: Connection) -> bool:
    """ANALYZE webhook_deliveries when its planner statistics are missing or well behind; True when it did.

    The claim is quick only on the plan that walks the due index in ``next_attempt_at``
    order and stops at ``limit``; a table never analyzed (a new install, a burst of
    events before autovacuum's next round) looks tiny to the planner, which then sorts
    every due row on each claim. Without the right to ANALYZE, PostgreSQL skips it with a
    warning and autovacuum's rounds are left.
    """
    row = conn.execute(
        "SELECT n_live_tup, n_mod_since_analyze, COALESCE(last_analyze, last_autoanalyze) IS NULL"
        "  FROM pg_stat_user_tables WHERE relid = 'webhook_deliveries'::regclass"
    ).fetchone()
    if row is None:
        return False
    live, modified, never = row
    if not (modified > 1000 + live // 5 or (never and live > 100)):
        return False
    conn.execute("ANALYZE webhook_deliveries")
    return True
