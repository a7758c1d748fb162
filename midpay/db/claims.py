"""Which open payments are due for a check, and claiming them for one reconcile run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from midpay.db.core import Connection
from midpay.db.payments import PAYMENT_COLUMNS, Payment

# Which rows are due for a check, and in which order: one predicate for claiming,
# listing and counting. Open rows, and any row marked as awaiting confirmation (a
# notification not yet confirmed, or a paid state found without paid_at: sql/004). LEAST
# ignores a NULL %(started)s (no run to exclude).
# Refunds keep a settled payment due too (refunds, issue 11): one with a refund whose
# outcome midpay has not seen, at the usual pace; partial_refund payments and refunds
# the bank has not confirmed, at their own low pace (%(refund_recheck)s). An older backend
# may store the state upper-case; the two spellings keep the status index usable.
_NOT_CHECKED_FOR = (
    "(last_checked_at IS NULL "
    "OR last_checked_at < LEAST(now() - make_interval(secs => %({0})s), %(started)s))"
)
_DUE_ROWS = (
    "created_at < now() - make_interval(secs => %(min_age)s) AND ("
    "((status = ANY(%(statuses)s) OR unconfirmed_since IS NOT NULL OR id = ANY(ARRAY("
    "SELECT payment_id FROM payment_refunds WHERE status = 'requested'))) "
    f"AND {_NOT_CHECKED_FOR.format('recheck')}) "
    "OR ((status IN ('partial_refund', 'PARTIAL_REFUND') OR id = ANY(ARRAY("
    "SELECT payment_id FROM payment_refunds WHERE status = 'done' AND bank_confirmed_at IS NULL "
    "AND origin <> 'unitemized'))) "
    f"AND {_NOT_CHECKED_FOR.format('refund_recheck')}))"
)
REFUND_RECHECK_SECONDS = 3600.0
_DUE_ORDER = "ORDER BY last_checked_at NULLS FIRST, created_at"


def _due_params(
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    started: datetime | None,
    limit: int | None,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> dict[str, Any]:
    return {"statuses": list(statuses), "min_age": min_age, "recheck": recheck_after, "started": started,
            "limit": limit, "refund_recheck": refund_recheck_after}


def claim_due(
    conn: Connection,
    *,
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    limit: int,
    run_started: datetime,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> list[Payment]:
    """Claim up to ``limit`` open rows for checking, least recently checked first.

    The claim stamps ``last_checked_at`` and commits at once; rows locked by a
    concurrent claimer are skipped, and a row claimed by an overlapping run is no
    longer due, so two runs never check the same row. A row checked since
    ``run_started`` is never due again in the same run, whatever ``recheck_after``.
    """
    with conn.transaction(), conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"""
            UPDATE payment_transactions AS p SET last_checked_at = clock_timestamp()
              FROM (
                SELECT id FROM payment_transactions WHERE {_DUE_ROWS} {_DUE_ORDER}
                 LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED
              ) AS due
             WHERE p.id = due.id
            RETURNING {", ".join("p." + c.strip() for c in PAYMENT_COLUMNS.split(","))}
            """,
            _due_params(statuses, min_age, recheck_after, run_started, limit, refund_recheck_after),
        )
        rows = cur.fetchall()
    rows.sort(key=lambda p: (p.created_at,))
    return rows


def select_due(
    conn: Connection,
    *,
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    limit: int | None,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> list[Payment]:
    """The first ``limit`` rows ``claim_due`` would claim, without claiming them."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE {_DUE_ROWS} {_DUE_ORDER} LIMIT %(limit)s",
            _due_params(statuses, min_age, recheck_after, None, limit, refund_recheck_after),
        )
        return cur.fetchall()


def iter_due(
    conn: Connection,
    *,
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    limit: int | None,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> Iterator[Payment]:
    """Every row ``claim_due`` would claim (for --dry-run), streamed through a server-side
    cursor so that memory stays flat however many are due; claims nothing."""
    with conn.transaction(), conn.cursor("midpay_due", row_factory=class_row(Payment)) as cur:
        cur.itersize = 500
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE {_DUE_ROWS} {_DUE_ORDER} LIMIT %(limit)s",
            _due_params(statuses, min_age, recheck_after, None, limit, refund_recheck_after),
        )
        yield from cur


def count_due(
    conn: Connection,
    *,
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> int:
    """How many open rows are due for a check now."""
    row = conn.execute(
        f"SELECT count(*) FROM payment_transactions WHERE {_DUE_ROWS}",
        _due_params(statuses, min_age, recheck_after, None, None, refund_recheck_after),
    ).fetchone()
    return int(row[0]) if row else 0

