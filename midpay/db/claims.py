"""Which payments are due for a check, and the leases reconcile holds on them.

A claim is a lease: the row carries the claiming run's owner token and a deadline,
which the run renews while it lives. ``complete`` ends a check that completed: it
stamps ``last_checked_at`` (the time of the last *completed* check), forgets earlier
failures and ends the lease. ``fail`` records a failed check (the attempt, the reason,
when the row may be tried again) and keeps the lease until the run ends (``finish``),
so a run already under way never takes the row moments later; the next run to start
does. ``release`` gives a row back unchecked (the run stopped before its turn). A run
that dies leaves its leases to expire.

Every query here uses the one due-row predicate below, so claiming, counting and
``--dry-run`` always agree. Rows come in two paces (checked again after --recheck-after,
or after --refund-recheck-after); each pace's due rows are one range of the due index
(sql/008), so a claim reads the rows it takes and next to nothing else, however many
settled or refund-watched payments the table holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from midpay.db.core import Connection, fetch_all
from midpay.db.payments import CHECK_COLUMNS, PAYMENT_COLUMNS, Payment

# The statuses reconcile keeps checking, lower-cased (states.OPEN_STATES). Written into
# the SQL as literals so that the planner can prove the partial index of
# sql/008_refund_rechecks.sql applies; another backend may store them upper-case.
OPEN_STATUSES: tuple[str, ...] = ("created", "pending", "authorize", "capture")
_OPEN = "lower(status) IN (" + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")"

# After the first failed check a row is due again at once (on the next run); after
# the n-th, 2^(n-2) minutes later, at most an hour: a row that always fails is asked
# about about once an hour and never crowds out the others.
RETRY_BASE_SECONDS = 60.0
RETRY_CAP_SECONDS = 3600.0

# Rows worth asking Midtrans about: open ones; any row awaiting confirmation (a
# notification not yet confirmed, or a paid state found without paid_at: sql/004); and
# payments whose refunds are not settled between midpay and Midtrans (refunds, issue
# 11): refund_watch, kept by a trigger on payment_refunds (sql/008), says 'requested'
# (a refund whose outcome midpay has not seen) or 'unconfirmed' (a refund the bank has
# not confirmed); partial_refund payments are watched for refunds made elsewhere.
_CANDIDATES = (
    f"({_OPEN} OR unconfirmed_since IS NOT NULL OR refund_watch IS NOT NULL OR lower(status) = 'partial_refund')"
)
# Each candidate's pace: 0, checked again after --recheck-after (open, awaiting
# confirmation, a refund's outcome not seen); 1, after --refund-recheck-after (the
# others: a refund the bank has not confirmed, partial_refund).
_PACE = f"(CASE WHEN {_OPEN} OR unconfirmed_since IS NOT NULL OR refund_watch = 'requested' THEN 0 ELSE 1 END)"
REFUND_RECHECK_SECONDS = 3600.0

# The order rows are taken in, least recently looked at first: a row whose last check
# failed, and a row never checked, come first (-infinity; then the oldest first), then
# by the time of the last completed check. A row that failed is due only once its
# retry time has come (below), so one that always fails does not crowd out the others;
# its key stays below every pace's bound, so the range of its pace always holds it.
_ORDER_KEY = (
    "(CASE WHEN check_attempts > 0 THEN '-infinity' ELSE COALESCE(last_checked_at, '-infinity') END)"
)

# The due index of sql/008 is (_PACE, _ORDER_KEY, created_at) WHERE _CANDIDATES, these
# very expressions: change them only together with a migration that rebuilds it, or
# the index no longer serves the queries. Each pace is one range of it: the rows whose
# key is older than that pace's interval, in the order they are taken.
#
# A row is due when it is a candidate of the pace, its key is older than the pace's
# interval (%(recheck)s or %(refund_recheck)s), it is old enough, not leased by a live
# run, not claimed since this run started (%(started)s; NULL for a listing), and, when
# its last check failed, its retry time has come.
_DUE_IN_PACE = (
    f"{_CANDIDATES} AND {_PACE} = {{pace}} AND {_ORDER_KEY} < now() - make_interval(secs => %({{interval}})s) "
    "AND created_at < now() - make_interval(secs => %(min_age)s) "
    "AND (check_lease_until IS NULL OR check_lease_until < now()) "
    "AND (%(started)s::timestamptz IS NULL OR check_claimed_at IS NULL OR check_claimed_at < %(started)s) "
    "AND (check_attempts = 0 OR check_retry_at IS NULL OR check_retry_at <= now())"
)
_PACES = ((0, "recheck"), (1, "refund_recheck"))


def _due_ids(*, lock: bool) -> str:
    """The first %(limit)s due rows (id, due_key, due_created), merged from the two paces in taking order.

    Each pace is read from its own range of the index; with ``lock``, its rows are
    locked as they are read, skipping rows another claimer holds (a locking SELECT
    cannot be a member of a UNION, so each pace is a WITH query of its own).
    """
    paces = ", ".join(
        f"pace{pace} AS (SELECT id, {_ORDER_KEY} AS due_key, created_at AS due_created FROM payment_transactions "
        f"WHERE {_DUE_IN_PACE.format(pace=pace, interval=interval)} "
        f"ORDER BY {_ORDER_KEY}, created_at LIMIT %(limit)s{' FOR UPDATE SKIP LOCKED' if lock else ''})"
        for pace, interval in _PACES
    )
    merged = " UNION ALL ".join(f"SELECT * FROM pace{pace}" for pace, _ in _PACES)
    return f"WITH {paces} SELECT * FROM ({merged}) AS paced ORDER BY due_key, due_created LIMIT %(limit)s"


_PAYMENT = ", ".join("p." + c.strip() for c in PAYMENT_COLUMNS.split(","))
# A claim reads only what a check needs: not the stored answer (db.payments.CHECK_COLUMNS).
_CLAIMED = ", ".join("p." + c.strip() for c in CHECK_COLUMNS.split(",")).replace("p.NULL::jsonb", "NULL::jsonb")
_SELECT_DUE = (
    f"SELECT {_PAYMENT} FROM ({_due_ids(lock=False)}) AS due JOIN payment_transactions AS p ON p.id = due.id "
    "ORDER BY due.due_key, due.due_created"
)

_COUNT_DUE = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM payment_transactions WHERE {_DUE_IN_PACE.format(pace=pace, interval=interval)})"
    for pace, interval in _PACES
)


def _due_params(
    min_age: float, recheck_after: float, refund_recheck_after: float, started: datetime | None, limit: int | None
) -> dict[str, Any]:
    return {"min_age": min_age, "recheck": recheck_after, "refund_recheck": refund_recheck_after,
            "started": started, "limit": limit}


def claim_due(
    conn: Connection,
    *,
    owner: uuid.UUID,
    min_age: float,
    recheck_after: float,
    limit: int,
    run_started: datetime,
    lease_seconds: float,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> list[Payment]:
    """Lease up to ``limit`` due rows to ``owner`` for ``lease_seconds``, least recently looked at first.

    Committed at once. Rows locked by a concurrent claimer are skipped, and a leased
    row is not due for anyone else, so two runs never check the same row at the same
    time; a row claimed since ``run_started`` is never claimed again by this run.
    """
    with conn.transaction(), conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"""
            UPDATE payment_transactions AS p
               SET check_lease_owner = %(owner)s,
                   check_lease_until = now() + make_interval(secs => %(lease)s),
                   check_claimed_at = now()
              FROM ({_due_ids(lock=True)}) AS due
             WHERE p.id = due.id
            RETURNING {_CLAIMED}
            """,
            {**_due_params(min_age, recheck_after, refund_recheck_after, run_started, limit),
             "owner": owner, "lease": lease_seconds},
        )
        rows = cur.fetchall()
    rows.sort(key=lambda p: (p.created_at,))
    return rows


def _locked(where: str) -> str:
    """The rows matching ``where``, locked first in byte-wise order_id order, the one order of every
    multi-row locker (``db.payments.lock_orders``): an UPDATE over them then waits for a replay or a
    reconcile batch holding some of them, instead of deadlocking with it."""
    return f'SELECT id FROM payment_transactions WHERE {where} ORDER BY order_id COLLATE "C" FOR UPDATE'


def renew_leases(conn: Connection, *, owner: uuid.UUID, lease_seconds: float) -> int:
    """Push the deadline of every lease ``owner`` holds ``lease_seconds`` into the future."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE payment_transactions AS p SET check_lease_until = now() + make_interval(secs => %s) "
            f"FROM ({_locked('check_lease_owner = %s')}) AS l WHERE p.id = l.id",
            (lease_seconds, owner),
        )
        return cur.rowcount


def complete(conn: Connection, *, owner: uuid.UUID, ids: Sequence[uuid.UUID]) -> None:
    """The checks of ``ids`` completed: stamp ``last_checked_at``, forget failures, end the leases.

    Only rows ``owner`` still holds are touched: if a lease was lost (the run stalled
    past its deadline and another run took the row), the other run's lease stands.
    """
    if not ids:
        return
    with conn.transaction():
        conn.execute(
            "UPDATE payment_transactions AS p SET last_checked_at = now(), check_attempts = 0, check_error = NULL, "
            "check_retry_at = NULL, check_lease_owner = NULL, check_lease_until = NULL "
            f"FROM ({_locked('id = ANY(%s) AND check_lease_owner = %s')}) AS l WHERE p.id = l.id",
            (list(ids), owner),
        )


def fail(conn: Connection, *, owner: uuid.UUID, failures: Sequence[tuple[uuid.UUID, str]]) -> None:
    """The checks of these rows failed (id, reason): count the attempt, keep the reason, set the retry time.

    The lease stays with ``owner`` until ``finish``: a run already under way when the
    check failed does not take the row again moments later; the next run to start does.
    """
    if not failures:
        return
    with conn.transaction():
        conn.execute(
            "UPDATE payment_transactions AS p SET check_attempts = p.check_attempts + 1, check_error = f.error, "
            "check_retry_at = now() + make_interval(secs => CASE WHEN p.check_attempts = 0 THEN 0 "
            "ELSE LEAST(%(cap)s, %(base)s * power(2, LEAST(p.check_attempts - 1, 30))) END) "
            "FROM unnest(%(ids)s::uuid[], %(errors)s::text[]) AS f(id, error), "
            f"({_locked('id = ANY(%(ids)s) AND check_lease_owner = %(owner)s')}) AS l "
            "WHERE p.id = f.id AND p.id = l.id",
            {
                "ids": [i for i, _ in failures],
                "errors": [e for _, e in failures],
                "owner": owner,
                "base": RETRY_BASE_SECONDS,
                "cap": RETRY_CAP_SECONDS,
            },
        )


def release(conn: Connection, *, owner: uuid.UUID, ids: Sequence[uuid.UUID]) -> None:
    """Give rows back unchecked (the run stopped before their turn): due again at once, for any run."""
    if not ids:
        return
    with conn.transaction():
        conn.execute(
            "UPDATE payment_transactions AS p SET check_lease_owner = NULL, check_lease_until = NULL "
            f"FROM ({_locked('id = ANY(%s) AND check_lease_owner = %s')}) AS l WHERE p.id = l.id",
            (list(ids), owner),
        )


def finish(conn: Connection, *, owner: uuid.UUID) -> None:
    """The run ends: end every lease it still holds (its failed rows), due for runs that start from now on."""
    with conn.transaction():
        conn.execute(
            "UPDATE payment_transactions AS p SET check_lease_owner = NULL, check_lease_until = NULL, "
            f"check_claimed_at = now() FROM ({_locked('check_lease_owner = %s')}) AS l WHERE p.id = l.id",
            (owner,),
        )


def select_due(
    conn: Connection,
    *,
    min_age: float,
    recheck_after: float,
    limit: int | None,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> list[Payment]:
    """The first ``limit`` rows ``claim_due`` would claim, without claiming them."""
    return fetch_all(conn, Payment, _SELECT_DUE, _due_params(min_age, recheck_after, refund_recheck_after, None, limit))


def iter_due(
    conn: Connection,
    *,
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
            _SELECT_DUE,
            _due_params(min_age, recheck_after, refund_recheck_after, None, limit),
        )
        yield from cur


def count_due(
    conn: Connection, *, min_age: float, recheck_after: float, refund_recheck_after: float = REFUND_RECHECK_SECONDS
) -> int:
    """How many rows are due for a check now."""
    row = conn.execute(
        _COUNT_DUE,
        _due_params(min_age, recheck_after, refund_recheck_after, None, None),
    ).fetchone()
    return int(row[0]) if row else 0
