"""PostgreSQL access: connections, the payment and event rows, and their SQL.

The only module besides ``migrate`` that knows psycopg. Callers own transaction
boundaries (``with conn.transaction():``); every query here takes parameters as
``%s`` and returns dataclasses, never cursors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.config import Settings
from midpay.errors import DatabaseUnavailable, DataConflict, MidpayError, UsageError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

Connection = psycopg.Connection[Any]
CONNECT_TIMEOUT = 10


def resolve_url(settings: Settings, announce: Callable[[str], None] | None = None) -> str:
    """The PostgreSQL URL to use; ``embedded`` starts the embedded server on demand."""
    url = settings.require_database_url()
    if url == "embedded":
        from midpay import embedded

        url = embedded.ensure_server(settings.home)
        if announce is not None:
            announce(f"midpay: embedded PostgreSQL in {embedded.data_dir(settings.home)}")
    elif not url.startswith(("postgresql://", "postgres://")) and "=" not in url:
        raise UsageError("DATABASE_URL must be a postgresql:// URL or the word embedded")
    return url


def connect(url: str, *, autocommit: bool = False) -> Connection:
    """Open one connection; failures become ``DatabaseUnavailable`` without the password."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc


def open_pool(url: str, size: int) -> ConnectionPool[Connection]:
    """A pool of ``size`` connections, opened and checked before it is returned."""
    import logging

    from psycopg_pool import ConnectionPool, PoolTimeout

    # One plain connection first: an unreachable server fails at once, with libpq's
    # reason, instead of after the pool's timeout.
    connect(url).close()
    # The pool logs every failed reconnection as a warning; midpay reports failures itself.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    pool: ConnectionPool[Connection] = ConnectionPool(
        url, min_size=1, max_size=max(1, size), open=False, kwargs={"connect_timeout": CONNECT_TIMEOUT}
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailable("cannot connect to PostgreSQL: no connection within the timeout") from exc
    return pool


def map_error(exc: BaseException) -> MidpayError | None:
    """The midpay error for a psycopg failure that escaped a use case, if it is one."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}")
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg_pool is a dependency
        return None
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailable("PostgreSQL connection failed: no pooled connection within the timeout")
    return None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection-level psycopg failures raised inside the block into midpay errors."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        mapped = map_error(exc)
        assert mapped is not None
        raise mapped from exc


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def _first_line(exc: BaseException) -> str:
    """The first line of a psycopg error, with any password in a quoted URL masked."""
    text = str(exc).strip() or exc.__class__.__name__
    line = text.splitlines()[0]
    line = _URL_PASSWORD.sub(r"\1***@", line)
    return _KEYWORD_PASSWORD.sub(r"\1***", line)


# --- payments --------------------------------------------------------------------------


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


_PAYMENT_COLUMNS = (
    "id, user_id, order_id, gross_amount, payment_type, status, midtrans_transaction_id, "
    "midtrans_response_json, created_at, updated_at, paid_at, last_checked_at"
)


def insert_payment(
    conn: Connection, *, order_id: str, gross_amount: int, payment_type: str, user_id: int | None
) -> Payment | None:
    """Insert a ``created`` row; None when the order id is already taken."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, user_id) "
            f"VALUES (%s, %s, %s, 'created', %s) ON CONFLICT (order_id) DO NOTHING RETURNING {_PAYMENT_COLUMNS}",
            (order_id, gross_amount, payment_type, user_id),
        )
        return cur.fetchone()


def get_payment(conn: Connection, order_id: str, *, for_update: bool = False) -> Payment | None:
    """The payment of ``order_id``; ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = %s{lock}",
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
    "paid_at = COALESCE(paid_at, %s), updated_at = now()"
)
_SET_EVENT = "is_verified = %s, processed = %s, outcome = %s, processing_error = %s, processed_at = now()"


def update_payment(
    conn: Connection,
    payment_id: uuid.UUID,
    *,
    status: str,
    midtrans_transaction_id: str | None,
    response: Any,
    paid_at: datetime | None,
    event: EventOutcome | None = None,
) -> Payment:
    """Write Midtrans' view onto a locked row. ``paid_at`` is only ever filled, never replaced.

    The stored answer is merged key by key over the earlier ones, so the charge's
    ``actions``, ``qr_string`` and expiry survive later status answers that lack them.
    """
    params: tuple[Any, ...] = (status, midtrans_transaction_id, Jsonb(response), paid_at, payment_id)
    query = f"UPDATE payment_transactions SET {_SET_PAYMENT} WHERE id = %s RETURNING {_PAYMENT_COLUMNS}"
    if event is not None:  # one round trip for both rows
        query = (
            f"WITH p AS ({query}), "
            f"e AS (UPDATE payment_webhook_events SET {_SET_EVENT} WHERE id = %s) "
            "SELECT * FROM p"
        )
        params += (event.is_verified, event.outcome != "rejected", event.outcome, event.error, event.event_id)
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        try:
            cur.execute(query, params)
        except psycopg.IntegrityError as exc:
            # e.g. a transaction id that another payment already carries
            raise DataConflict(f"the database refused the update: {_first_line(exc)}") from exc
        row = cur.fetchone()
        assert row is not None
        return row


def database_now(conn: Connection) -> datetime:
    """The database server's clock (reconcile measures every age with it)."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


# Which open rows are due for a check, and in which order: one predicate for claiming,
# listing and counting. LEAST ignores a NULL %(started)s (no run to exclude).
_DUE_ROWS = (
    "status = ANY(%(statuses)s) "
    "AND created_at < now() - make_interval(secs => %(min_age)s) "
    "AND (last_checked_at IS NULL "
    "OR last_checked_at < LEAST(now() - make_interval(secs => %(recheck)s), %(started)s))"
)
_DUE_ORDER = "ORDER BY last_checked_at NULLS FIRST, created_at"


def _due_params(
    statuses: tuple[str, ...], min_age: float, recheck_after: float, started: datetime | None, limit: int | None
) -> dict[str, Any]:
    return {"statuses": list(statuses), "min_age": min_age, "recheck": recheck_after, "started": started,
            "limit": limit}


def claim_due(
    conn: Connection,
    *,
    statuses: tuple[str, ...],
    min_age: float,
    recheck_after: float,
    limit: int,
    run_started: datetime,
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
            RETURNING {", ".join("p." + c.strip() for c in _PAYMENT_COLUMNS.split(","))}
            """,
            _due_params(statuses, min_age, recheck_after, run_started, limit),
        )
        rows = cur.fetchall()
    rows.sort(key=lambda p: (p.created_at,))
    return rows


def select_due(
    conn: Connection, *, statuses: tuple[str, ...], min_age: float, recheck_after: float, limit: int | None
) -> list[Payment]:
    """The first ``limit`` rows ``claim_due`` would claim, without claiming them."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payment_transactions WHERE {_DUE_ROWS} {_DUE_ORDER} LIMIT %(limit)s",
            _due_params(statuses, min_age, recheck_after, None, limit),
        )
        return cur.fetchall()


def iter_due(
    conn: Connection, *, statuses: tuple[str, ...], min_age: float, recheck_after: float, limit: int | None
) -> Iterator[Payment]:
    """Every row ``claim_due`` would claim (for --dry-run), streamed through a server-side
    cursor so that memory stays flat however many are due; claims nothing."""
    with conn.transaction(), conn.cursor("midpay_due", row_factory=class_row(Payment)) as cur:
        cur.itersize = 500
        cur.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payment_transactions WHERE {_DUE_ROWS} {_DUE_ORDER} LIMIT %(limit)s",
            _due_params(statuses, min_age, recheck_after, None, limit),
        )
        yield from cur


def count_due(conn: Connection, *, statuses: tuple[str, ...], min_age: float, recheck_after: float) -> int:
    """How many open rows are due for a check now."""
    row = conn.execute(
        f"SELECT count(*) FROM payment_transactions WHERE {_DUE_ROWS}",
        _due_params(statuses, min_age, recheck_after, None, None),
    ).fetchone()
    return int(row[0]) if row else 0


def list_payments(
    conn: Connection, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[Payment]:
    """Most recent payments first, optionally of one status and after a time."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payment_transactions "
            "WHERE (%s::text IS NULL OR status = %s) AND (%s::timestamptz IS NULL OR created_at >= %s) "
            "ORDER BY created_at DESC, order_id LIMIT %s",
            (status, status, since, since, limit),
        )
        return cur.fetchall()


# --- notifications ---------------------------------------------------------------------


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


_EVENT_COLUMNS = (
    "id, received_at, order_id, midtrans_transaction_id, raw_body, signature_key, is_verified, "
    "processed, processing_error, source, outcome, processed_at"
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
    (``FOR UPDATE``) for the decision that follows: one round trip for both.
    """
    with conn.cursor() as cur:
        cur.execute(
            "WITH e AS (INSERT INTO payment_webhook_events "
            "(raw_body, source, order_id, midtrans_transaction_id, signature_key, is_verified, processed) "
            "VALUES (%s, %s, %s, %s, %s, false, false) RETURNING id) "
            f"SELECT e.id, p.* FROM e LEFT JOIN LATERAL ("
            f"SELECT {_PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = %s FOR UPDATE) p ON true",
            (
                Jsonb(raw_body), source, _clip(order_id), _clip(transaction_id), _clip(signature_key),
                lock_order_id,
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
        f"UPDATE payment_webhook_events SET {_SET_EVENT} WHERE id = %s",
        (is_verified, outcome != "rejected", outcome, error, event_id),
    )


def list_events(
    conn: Connection, *, order_id: str | None = None, rejected_only: bool = False, limit: int = 100
) -> list[WebhookEvent]:
    """Stored notifications, newest first."""
    with conn.cursor(row_factory=class_row(WebhookEvent)) as cur:
        cur.execute(
            f"SELECT {_EVENT_COLUMNS} FROM payment_webhook_events "
            "WHERE (%s::text IS NULL OR order_id = %s) AND (NOT %s OR NOT processed) "
            "ORDER BY received_at DESC, id LIMIT %s",
            (order_id, order_id, rejected_only, limit),
        )
        return cur.fetchall()


def _clip(value: str | None, size: int = 255) -> str | None:
    return None if value is None else value[:size]


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


# --- refunds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refund:
    """One row of payment_refunds: a refund asked of Midtrans under one refund_key."""

    id: uuid.UUID
    payment_id: uuid.UUID
    order_id: str
    refund_key: str
    amount: int
    reason: str | None
    status: str  # requested | done | rejected
    created_at: datetime
    updated_at: datetime
    midtrans_response_json: Any


_REFUND_COLUMNS = (
    "id, payment_id, order_id, refund_key, amount, reason, status, created_at, updated_at, midtrans_response_json"
)


def list_refunds(conn: Connection, payment_id: uuid.UUID) -> list[Refund]:
    """Every refund of a payment, oldest first."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            f"SELECT {_REFUND_COLUMNS} FROM payment_refunds WHERE payment_id = %s ORDER BY created_at, id",
            (payment_id,),
        )
        return cur.fetchall()


def insert_refund(
    conn: Connection, *, payment_id: uuid.UUID, order_id: str, refund_key: str, amount: int, reason: str | None
) -> Refund | None:
    """Record a ``requested`` refund; None when the refund_key is already taken."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, reason, status) "
            "VALUES (%s, %s, %s, %s, %s, 'requested') ON CONFLICT (refund_key) DO NOTHING "
            f"RETURNING {_REFUND_COLUMNS}",
            (payment_id, order_id, refund_key, amount, reason),
        )
        return cur.fetchone()


def finish_refund(conn: Connection, refund_id: uuid.UUID, *, status: str, response: Any) -> Refund:
    """Record Midtrans' definite answer to a refund: ``done`` or ``rejected``."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "UPDATE payment_refunds SET status = %s, midtrans_response_json = %s, updated_at = now() "
            f"WHERE id = %s RETURNING {_REFUND_COLUMNS}",
            (status, Jsonb(response), refund_id),
        )
        row = cur.fetchone()
        assert row is not None
        return row
