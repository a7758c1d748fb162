"""The refund ledger, payment_refunds: refunds midpay asked for, and every refund Midtrans reports.

A row is matched to Midtrans' report by its ``refund_key`` or by Midtrans'
``refund_chargeback_id``. Rows only move forward: ``requested`` (asked, outcome not
seen) becomes ``done`` (Midtrans reports it) or ``rejected`` (Midtrans refused it);
a refund Midtrans reports that midpay never asked for gets an ``outside`` row. Every
write here happens with the payment's row locked (``FOR UPDATE``) by the caller, so
two writers of one payment's ledger never interleave.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from midpay.db.core import Connection, fetch_all


@dataclass(frozen=True)
class Refund:
    """One row of payment_refunds."""

    id: uuid.UUID
    payment_id: uuid.UUID
    order_id: str
    refund_key: str | None
    amount: int
    reason: str | None
    status: str  # requested | done | rejected
    origin: str  # midpay | outside | unitemized
    refund_chargeback_id: int | None
    refunded_at: datetime | None  # Midtrans' created_at of the refund
    bank_confirmed_at: datetime | None
    refund_method: str | None
    created_at: datetime
    updated_at: datetime
    midtrans_response_json: Any


_COLUMNS = (
    "id, payment_id, order_id, refund_key, amount, reason, status, origin, refund_chargeback_id, "
    "refunded_at, bank_confirmed_at, refund_method, created_at, updated_at, midtrans_response_json"
)
_ORDER = "ORDER BY created_at, id"


def list_refunds(conn: Connection, payment_id: uuid.UUID) -> list[Refund]:
    """Every refund of a payment, oldest first."""
    query = f"SELECT {_COLUMNS} FROM payment_refunds WHERE payment_id = %s {_ORDER}"
    return fetch_all(conn, Refund, query, (payment_id,))


def refunds_of(conn: Connection, payment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Refund]]:
    """The refunds of several payments at once (for listings), oldest first within each."""
    found: dict[uuid.UUID, list[Refund]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return found
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM payment_refunds WHERE payment_id = ANY(%s) {_ORDER}", (list(payment_ids),)
        )
        for row in cur:
            found.setdefault(row.payment_id, []).append(row)
    return found


def insert_refund(
    conn: Connection, *, payment_id: uuid.UUID, order_id: str, refund_key: str, amount: int, reason: str | None
) -> Refund | None:
    """Record a ``requested`` refund midpay is about to ask for; None when the key is taken."""
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, reason, status, origin) "
            "VALUES (%s, %s, %s, %s, %s, 'requested', 'midpay') ON CONFLICT (payment_id, refund_key) DO NOTHING "
            f"RETURNING {_COLUMNS}",
            (payment_id, order_id, refund_key, amount, reason),
        )
        return cur.fetchone()


def finish_refund(
    conn: Connection, refund_id: uuid.UUID, *, status: str, response: Any, chargeback_id: int | None = None
) -> Refund:
    """Record Midtrans' definite answer to a refund: ``done`` or ``rejected``.

    A row Midtrans has already reported as done stays done (a refusal of a retried key
    that was paid the first time changes nothing).
    """
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(
            "UPDATE payment_refunds SET "
            "status = CASE WHEN status = 'done' THEN status ELSE %s END, "
            "refund_chargeback_id = COALESCE(refund_chargeback_id, %s), "
            "midtrans_response_json = CASE WHEN jsonb_typeof(midtrans_response_json) = 'object' "
            "THEN midtrans_response_json ELSE '{}'::jsonb END || %s, updated_at = now() "
            f"WHERE id = %s RETURNING {_COLUMNS}",
            (status, chargeback_id, Jsonb(response if isinstance(response, dict) else {"answer": response}),
             refund_id),
        )
        row = cur.fetchone()
        assert row is not None
        return row


# --- what Midtrans reports --------------------------------------------------------------


@dataclass(frozen=True)
class ReportedRefund:
    """One item of the ``refunds[]`` of a Midtrans answer."""

    refund_key: str | None
    chargeback_id: int | None
    amount: int
    reason: str | None
    created_at: datetime | None
    bank_confirmed_at: datetime | None
    refund_method: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class RefundReport:
    """What one Midtrans answer says about a payment's refunds."""

    transaction_status: str
    items: tuple[ReportedRefund, ...]
    listed: bool  # the answer carried a refunds[] list (possibly empty)
    total: int  # refund_amount, or the sum of the items when that is larger
    unreadable: int  # items that could not be read (skipped)


# --- merging Midtrans' report into the ledger --------------------------------------------


@dataclass(frozen=True)
class LedgerSync:
    """What merging one answer into a payment's ledger changed."""

    added: tuple[Refund, ...] = ()  # refunds midpay had no row for (made outside midpay)
    finished: tuple[Refund, ...] = ()  # midpay's own requested or rejected rows that Midtrans reports as made
    abandoned: tuple[Refund, ...] = ()  # requested rows that can never be paid (fully refunded without them)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.finished or self.abandoned)


_MERGE = (
    "UPDATE payment_refunds SET status = 'done', "
    "refund_key = COALESCE(refund_key, %(refund_key)s), "
    "refund_chargeback_id = COALESCE(refund_chargeback_id, %(chargeback_id)s), "
    "amount = %(amount)s, "
    "refunded_at = COALESCE(refunded_at, %(created_at)s), "
    "bank_confirmed_at = COALESCE(bank_confirmed_at, %(bank_confirmed_at)s), "
    "refund_method = COALESCE(refund_method, %(refund_method)s), "
    "midtrans_response_json = CASE WHEN jsonb_typeof(midtrans_response_json) = 'object' "
    "THEN midtrans_response_json ELSE '{}'::jsonb END || %(raw)s, "
    "updated_at = now() "
    "WHERE id = %(id)s AND (status <> 'done' OR refund_key IS DISTINCT FROM COALESCE(refund_key, %(refund_key)s) "
    "OR refund_chargeback_id IS DISTINCT FROM COALESCE(refund_chargeback_id, %(chargeback_id)s) "
    "OR amount <> %(amount)s "
    "OR refunded_at IS DISTINCT FROM COALESCE(refunded_at, %(created_at)s) "
    "OR bank_confirmed_at IS DISTINCT FROM COALESCE(bank_confirmed_at, %(bank_confirmed_at)s) "
    "OR refund_method IS DISTINCT FROM COALESCE(refund_method, %(refund_method)s)) "
    f"RETURNING {_COLUMNS}"
)
_ADD = (
    "INSERT INTO payment_refunds (payment_id, order_id, refund_key, refund_chargeback_id, amount, reason, "
    "status, origin, refunded_at, bank_confirmed_at, refund_method, midtrans_response_json) "
    "VALUES (%(payment_id)s, %(order_id)s, %(refund_key)s, %(chargeback_id)s, %(amount)s, %(reason)s, "
    f"'done', 'outside', %(created_at)s, %(bank_confirmed_at)s, %(refund_method)s, %(raw)s) RETURNING {_COLUMNS}"
)


def sync_ledger(conn: Connection, payment: Any, report: RefundReport) -> LedgerSync:
    """Merge what a Midtrans answer reports about refunds into ``payment``'s ledger.

    Call it with the payment locked, and only with an answer from Midtrans (Get
    Status, a refund answer, a notification confirmed by Get Status), already checked
    to be about this payment. Rows only move forward, so an older answer changes
    nothing a newer one wrote: the refunded total never goes backwards.

    - each ``refunds[]`` item is matched by refund_key, then refund_chargeback_id; a
      matched row becomes ``done`` and gains Midtrans' id, times and method; an item
      with no row gets an ``outside`` row;
    - Midtrans' ``refund_amount`` beyond the items' sum is kept as one ``unitemized``
      row, which shrinks as itemized refunds explain it;
    - once Midtrans lists refunds adding up to the whole payment, a ``requested`` row
      it does not list can never be paid any more: it is marked ``rejected``.
    """
    if not report.items and report.total <= 0:
        return LedgerSync()
    rows = list_refunds(conn, payment.id)
    itemized_before = _itemized(rows)
    added: list[Refund] = []
    finished: list[Refund] = []
    for item in report.items:
        if item.refund_key is None and item.chargeback_id is None:
            continue  # nothing to match it by: it counts through the total only
        row = _match(rows, item)
        if row is None:
            new = _add(conn, payment, item)
            rows.append(new)
            added.append(new)
            continue
        merged = _merge(conn, rows, row, item)
        if merged is not None:
            rows[rows.index(row)] = merged
            if row.status != "done" and row.origin == "midpay":
                finished.append(merged)
    _settle_unitemized(conn, payment, rows, report, itemized_before)
    abandoned = _abandon_unlisted(conn, rows, report, payment.gross_amount)
    return LedgerSync(tuple(added), tuple(finished), tuple(abandoned))


def _itemized(rows: Iterable[Refund]) -> int:
    return sum(r.amount for r in rows if r.status == "done" and r.origin != "unitemized")


def _match(rows: list[Refund], item: ReportedRefund) -> Refund | None:
    if item.refund_key is not None:
        for row in rows:
            if row.refund_key == item.refund_key and row.origin != "unitemized":
                return row
    if item.chargeback_id is not None:
        for row in rows:
            if row.refund_chargeback_id == item.chargeback_id:
                return row
    return None


def _params(item: ReportedRefund) -> dict[str, Any]:
    """``_MERGE``'s and ``_ADD``'s parameters: the item's fields by their names, its body as JSON."""
    return {**vars(item), "raw": Jsonb(item.raw)}


def _merge(conn: Connection, rows: list[Refund], row: Refund, item: ReportedRefund) -> Refund | None:
    params = {**_params(item), "id": row.id}
    # Never take a key or an id another row of this payment already holds (inconsistent report).
    if item.refund_key is not None and any(r.refund_key == item.refund_key and r.id != row.id for r in rows):
        params["refund_key"] = None
    if item.chargeback_id is not None and any(
        r.refund_chargeback_id == item.chargeback_id and r.id != row.id for r in rows
    ):
        params["chargeback_id"] = None
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(_MERGE, params)
        return cur.fetchone()


def _add(conn: Connection, payment: Any, item: ReportedRefund) -> Refund:
    params = {**_params(item), "payment_id": payment.id, "order_id": payment.order_id}
    with conn.cursor(row_factory=class_row(Refund)) as cur:
        cur.execute(_ADD, params)
        row = cur.fetchone()
        assert row is not None
        return row


def _settle_unitemized(
    conn: Connection, payment: Any, rows: list[Refund], report: RefundReport, itemized_before: int
) -> None:
    """Keep Midtrans' total beyond its listed refunds as the one ``unitemized`` row."""
    itemized = _itemized(rows)
    current = next((r for r in rows if r.origin == "unitemized"), None)
    before = current.amount if current is not None else 0
    explained = max(0, itemized - itemized_before)
    wanted = max(0, report.total - itemized, before - explained)
    wanted = min(wanted, max(0, payment.gross_amount - itemized))
    if wanted == before:
        return
    if current is not None and wanted == 0:
        conn.execute("DELETE FROM payment_refunds WHERE id = %s", (current.id,))
        rows.remove(current)
    elif current is not None:
        conn.execute("UPDATE payment_refunds SET amount = %s, updated_at = now() WHERE id = %s", (wanted, current.id))
    else:
        conn.execute(
            "INSERT INTO payment_refunds (payment_id, order_id, amount, status, origin, reason) "
            "VALUES (%s, %s, %s, 'done', 'unitemized', %s)",
            (payment.id, payment.order_id, wanted, "refunded at Midtrans without details (its refund_amount)"),
        )


def _abandon_unlisted(conn: Connection, rows: list[Refund], report: RefundReport, gross: int) -> list[Refund]:
    listed_total = sum(i.amount for i in report.items)
    if report.transaction_status != "refund" or not report.listed or listed_total < gross:
        return []
    keys = {i.refund_key for i in report.items if i.refund_key is not None}
    abandoned = []
    for row in rows:
        if row.status == "requested" and row.refund_key not in keys:
            note = {"error": "Midtrans reports the payment fully refunded without this refund_key"}
            abandoned.append(finish_refund(conn, row.id, status="rejected", response=note))
    return abandoned
