"""The rows of payment_transactions: read, insert, move forward, list.

The table may have been laid out by the older Node backend, so rows are read as what
they are, whatever the column types:

- times come back as ``timestamptz`` (``created_at::timestamptz``): a ``timestamp``
  column holds wall-clock times in the writing session's TimeZone (what
  ``current_timestamp`` wrote), and the cast reads them in this session's TimeZone,
  which ``db.connect`` leaves at the server's default, as the Node side's sessions have
  it. Writes (``now()``, an aware ``paid_at``) are converted back the same way;
- a ``numeric`` amount is an exact ``int`` when it is whole; one with a fraction of a
  rupiah stays a ``Decimal``, never equals Midtrans' whole amount, so nothing applies
  to it, and refunds refuse it (``whole_amount``);
- a status in any letter case reads as its lower-case self (``PENDING`` is
  ``pending``); it is written only when the payment moves forward;
- a charge answer stored as a JSON string reads as the object it encodes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db import schema
from midpay.db.core import Connection, columns, fetch_all, first_line
from midpay.errors import DataConflict, MidpayError, UsageError


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
    unconfirmed_since: datetime | None = None  # a notification awaits Midtrans' confirmation

    def __post_init__(self) -> None:
        status = self.status
        if not status.islower() or status != status.strip():
            object.__setattr__(self, "status", status.strip().lower())
        if isinstance(self.gross_amount, Decimal):
            object.__setattr__(self, "gross_amount", _exact(self.gross_amount))
        if isinstance(self.midtrans_response_json, str):
            object.__setattr__(self, "midtrans_response_json", _decoded(self.midtrans_response_json))


def _exact(amount: Decimal) -> Any:
    whole = amount.to_integral_value()
    return int(whole) if amount == whole else amount


def _decoded(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def whole_amount(payment: Payment) -> int:
    """The payment's amount, refusing one stored with a fraction of a rupiah."""
    if not isinstance(payment.gross_amount, int):
        raise MidpayError(
            f"order {payment.order_id} has gross_amount {payment.gross_amount} stored, not a whole number of "
            "rupiah: midpay does not act on it (fix the row first)"
        )
    return payment.gross_amount


# Times are read as timestamptz whatever the column type (see the module docstring).
# Each item stays valid when prefixed with a table alias ("p." + item).
PAYMENT_COLUMNS = (
    "id, user_id, order_id, gross_amount, payment_type, status, midtrans_transaction_id, "
    "midtrans_response_json, created_at::timestamptz AS created_at, updated_at::timestamptz AS updated_at, "
    "paid_at::timestamptz AS paid_at, last_checked_at::timestamptz AS last_checked_at, unconfirmed_since"
)

# The same row without the stored answer (a growing jsonb of every answer merged): what
# reconcile's claims and its batched writes read, which never look at that column.
CHECK_COLUMNS = PAYMENT_COLUMNS.replace("midtrans_response_json", "NULL::jsonb AS midtrans_response_json")

_TABLE = "payment_transactions"
_INSERTED = frozenset({"order_id", "gross_amount", "payment_type", "status", "user_id"})


def check_insert(conn: Connection, *, order_id: str, user_id: int | None) -> None:
    """Refuse, before anything is written, a row this database's layout would not take.

    An order id longer than the column, no ``--user-id`` where ``user_id`` is NOT NULL,
    or another NOT NULL column without a default that midpay has no value for.
    """
    layout = schema.of(conn)
    limit = layout.max_length(_TABLE, "order_id")
    if limit is not None and len(order_id) > limit:
        raise UsageError(
            f"order id {order_id[:60]!r} is {len(order_id)} characters, but {_TABLE}.order_id in this database "
            f"takes at most {limit}: give a shorter --order-id"
        )
    user = layout.column(_TABLE, "user_id")
    if user_id is None and user is not None and user.required:
        raise UsageError(
            f"this database needs a user for every payment ({_TABLE}.user_id is NOT NULL): give --user-id N"
        )
    unknown = [name for name in layout.required(_TABLE) if name not in _INSERTED]
    if unknown:
        raise UsageError(
            f"{_TABLE} in this database has NOT NULL columns without a default that midpay cannot fill: "
            f"{', '.join(unknown)}"
        )


def insert_payment(
    conn: Connection, *, order_id: str, gross_amount: int, payment_type: str, user_id: int | None
) -> Payment | None:
    """Insert a ``created`` row; None when the order id is already taken.

    Checked against the table's real layout first (``check_insert``): a value it would
    refuse is a usage error (exit 2), and nothing is written.
    """
    check_insert(conn, order_id=order_id, user_id=user_id)
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        try:
            cur.execute(
                f"INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, user_id) "
                f"VALUES (%s, %s, %s, 'created', %s) ON CONFLICT (order_id) DO NOTHING RETURNING {PAYMENT_COLUMNS}",
                (order_id, gross_amount, payment_type, user_id),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise UsageError(
                f"--user-id {user_id}: no such user ({exc.diag.message_detail or first_line(exc)})"
            ) from exc
        except psycopg.errors.NotNullViolation as exc:
            raise UsageError(
                f"{_TABLE}.{exc.diag.column_name or '?'} is NOT NULL in this database and midpay has no value for it"
            ) from exc
        except psycopg.errors.CheckViolation as exc:
            raise UsageError(f"the database refused the new payment: {first_line(exc)}") from exc
        return cur.fetchone()


def get_payment(conn: Connection, order_id: str, *, for_update: bool = False) -> Payment | None:
    """The payment of ``order_id``; ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions WHERE order_id = %s{lock}",
            (order_id,),
        )
        return cur.fetchone()


# The rows a batch locks, without the stored answer (LOCK_ORDERS) or with it; always in
# byte-wise order_id order (``lock_orders``). bench/bench_replay_offline.py sends the first.
LOCK_ORDERS = (
    f"SELECT {CHECK_COLUMNS} FROM payment_transactions WHERE order_id = ANY(%b) "
    'ORDER BY order_id COLLATE "C" FOR UPDATE'
)
_LOCK_ORDERS_WITH_ANSWERS = LOCK_ORDERS.replace(CHECK_COLUMNS, PAYMENT_COLUMNS)


def lock_orders(conn: Connection, order_ids: Sequence[str], *, answers: bool = False) -> dict[str, Payment]:
    """Lock the rows of these order ids until the transaction ends, in order_id order, byte-wise; by order id.

    Every batch locks its rows in that one order: here (the transition, reconcile's
    ``payments.answers``, the offline batches), or one by one in Python's ``sorted`` order
    (the confirmed replay, ``intake.batch``), which is code point order, as "C" is for
    UTF-8. So two batches over the same orders never deadlock. Read without the stored
    answer unless ``answers`` (``CHECK_COLUMNS``); rows that are gone are absent.
    """
    if not order_ids:
        return {}
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(_LOCK_ORDERS_WITH_ANSWERS if answers else LOCK_ORDERS, (list(order_ids),))
        return {p.order_id: p for p in cur.fetchall()}


def read_payments(conn: Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, Payment]:
    """The rows of ``ids`` as they are now, unlocked (``CHECK_COLUMNS``)."""
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        cur.execute(f"SELECT {CHECK_COLUMNS} FROM payment_transactions WHERE id = ANY(%s)", (ids,))
        return {p.id: p for p in cur.fetchall()}




@dataclass(frozen=True)
class PaymentWrite:
    """What the transition writes onto one locked row (``payments.transition`` decides it).

    ``status`` is the row's status after the write (the same one when only the rest
    changes). ``transaction_id`` and ``paid_at`` only fill an empty column; ``response``
    is merged key by key over the stored answer; ``payment_type`` replaces the stored
    one when given; ``unconfirmed`` True marks the row awaiting confirmation (keeping
    the first mark's time), False clears the mark, None leaves it.
    """

    payment_id: uuid.UUID
    status: str
    transaction_id: str | None = None
    response: Any = None  # a dict of Midtrans' answer; None merges nothing (and reads no answer back)
    paid_at: datetime | None = None
    payment_type: str | None = None
    unconfirmed: bool | None = None


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in columns.split(", "))


# The row as written; its stored answer only where one was merged (offline writes merge
# none, and reading the jsonb back would cost the batch more than the write itself).
_WRITTEN_COLUMNS = _prefixed(PAYMENT_COLUMNS, "p").replace(
    "p.midtrans_response_json",
    "CASE WHEN v.response IS NULL THEN NULL ELSE p.midtrans_response_json END AS midtrans_response_json",
)


# THE statement that changes a payment's status: one row or a batch, the same text.
# The stored answer is merged key by key over the earlier ones, so the charge's
# ``actions``, ``qr_string`` and expiry survive later status answers that lack them; with
# no answer to merge (offline) the stored one is left as it is, not rewritten.
# A module constant so that bench/bench_replay_offline.py sends pgbench exactly this.
WRITE_PAYMENTS = (
    "UPDATE payment_transactions p SET status = v.status, "
    "midtrans_transaction_id = COALESCE(p.midtrans_transaction_id, v.transaction_id), "
    "midtrans_response_json = CASE WHEN jsonb_typeof(p.midtrans_response_json) IS DISTINCT FROM 'object' "
    "THEN COALESCE(v.response, '{}'::jsonb) WHEN v.response IS NULL THEN p.midtrans_response_json "
    "ELSE p.midtrans_response_json || v.response END, "
    "paid_at = COALESCE(p.paid_at, v.paid_at), payment_type = COALESCE(v.payment_type, p.payment_type), "
    "unconfirmed_since = CASE WHEN v.unconfirmed IS NULL THEN p.unconfirmed_since "
    "WHEN v.unconfirmed THEN COALESCE(p.unconfirmed_since, now()) END, updated_at = now() "
    "FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::jsonb[], %b::timestamptz[], %b::text[], %b::boolean[]) "
    "AS v(id, status, transaction_id, response, paid_at, payment_type, unconfirmed) "
    f"WHERE p.id = v.id RETURNING {_WRITTEN_COLUMNS}"
)


def write_params(writes: Sequence[PaymentWrite]) -> tuple[list[Any], ...]:
    """``WRITE_PAYMENTS``' parameters for ``writes`` (one per row)."""
    return columns(
        (w.payment_id, w.status, w.transaction_id, None if w.response is None else Jsonb(w.response), w.paid_at,
         w.payment_type, w.unconfirmed)
        for w in writes
    )


def write_payments(conn: Connection, writes: Sequence[PaymentWrite], *, rows: bool = True) -> dict[uuid.UUID, Payment]:
    """Write onto locked rows, all in one statement; the rows as written, by id (none read unless ``rows``).

    Only ``payments.transition`` calls it.
    """
    if not writes:
        return {}
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        try:
            cur.execute(WRITE_PAYMENTS, write_params(writes))
        except psycopg.IntegrityError as exc:
            # e.g. a transaction id that another payment already carries
            raise DataConflict(f"the database refused the update: {first_line(exc)}") from exc
        return {p.id: p for p in cur.fetchall()} if rows else {}


def list_payments(
    conn: Connection, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[Payment]:
    """Most recent payments first, optionally of one status and after a time."""
    return fetch_all(
        conn, Payment,
        f"SELECT {PAYMENT_COLUMNS} FROM payment_transactions "
        "WHERE (%s::text IS NULL OR lower(status) = %s) AND (%s::timestamptz IS NULL OR created_at >= %s) "
        "ORDER BY created_at DESC, order_id LIMIT %s",
        (status, status, since, since, limit),
    )

