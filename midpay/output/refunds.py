"""Rendering of a payment's refund ledger: its JSON fields and what people read. No decisions here.

Below ``documents`` and ``views``, which add it to a payment (and show the outcome of
``refund``); it imports nothing of theirs.

Every value from the ledger (keys, reasons typed on the Midtrans dashboard, ...) goes
through ``output.text``: never Rich markup, never a character a terminal acts on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midpay.output.layout import Column, records
from midpay.output.text import iso, join, rupiah, text, when

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from midpay.db import Refund
    from midpay.refunds.ledger import Ledger

_STATE_STYLE = {"requested": "yellow", "done": "green", "rejected": "red"}
_ORIGIN = {"midpay": "midpay", "outside": "outside midpay", "unitemized": "Midtrans total"}
REFUNDED_COLUMN = Column("refunded", justify="right")
REFUND_COLUMNS = (
    Column("refund key"),
    Column("amount", justify="right"),
    Column("state"),
    Column("made by"),
    Column("refunded at"),
    Column("bank confirmed"),
    Column("reason", fold=True),
)


def refund_item(refund: Refund) -> dict[str, Any]:
    """One refund as JSON (an item of a payment document's ``refunds``)."""
    return {
        "refund_key": refund.refund_key,
        "refund_chargeback_id": refund.refund_chargeback_id,
        "amount": refund.amount,
        "reason": refund.reason,
        "status": refund.status,
        "origin": refund.origin,
        "created_at": iso(refund.created_at),
        "refunded_at": iso(refund.refunded_at),
        "bank_confirmed_at": iso(refund.bank_confirmed_at),
        "refund_method": refund.refund_method,
        "updated_at": iso(refund.updated_at),
    }


def ledger_fields(ledger: Ledger) -> dict[str, Any]:
    """What ``status --json`` and ``payments --json`` add to a payment document."""
    return {
        "refunded_amount": ledger.refunded,
        "refundable_amount": ledger.refundable,
        "refunds": [refund_item(r) for r in ledger.rows],
    }


def ledger_rows(ledger: Ledger) -> list[tuple[str, Text]]:
    """The refunded total and the refundable remainder, as fields of a payment's panel."""
    if not ledger.rows and ledger.refundable == 0:
        return []
    fields = [("refunded", text(rupiah(ledger.refunded))), ("refundable", text(rupiah(ledger.refundable)))]
    waiting = sum(r.amount for r in ledger.in_flight)
    if waiting:
        fields.append(("outcome unknown", text(rupiah(waiting), "yellow")))
    return fields


def render_ledger(con: Console, ledger: Ledger) -> None:
    """The payment's refunds, oldest first (nothing when it has none)."""
    if not ledger.rows:
        return
    rows = [
        [
            text(r.refund_key), text(rupiah(r.amount)), text(r.status, _STATE_STYLE.get(r.status, "")),
            text(_ORIGIN.get(r.origin, r.origin)), text(when(r.refunded_at)), text(when(r.bank_confirmed_at)),
            text(r.reason),
        ]
        for r in ledger.rows
    ]
    records(con, REFUND_COLUMNS, rows, title="Refunds (times in WIB)", empty="")
    for r in ledger.in_flight:
        con.print(join(
            "refund ", text(r.refund_key), f" of {rupiah(r.amount)}: outcome not seen yet; rerun the same refund "
            "command to finish it (the same refund_key is sent, and Midtrans pays it once)",
        ))


def refunded_cell(ledger: Ledger | None) -> Text:
    """The ``refunded`` column of the payments listing."""
    if ledger is None or not ledger.rows:
        return text("-")
    return text(rupiah(ledger.refunded) + (" + unknown" if ledger.in_flight else ""))
