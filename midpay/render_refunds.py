"""Rendering of the refund ledger: JSON fields and Rich rows. No decisions here.

Every value from the ledger (keys, reasons made on the Midtrans dashboard, ...) is
rendered as plain ``Text``, never parsed as Rich markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from midpay.db import Refund
    from midpay.ledger import Ledger
    from midpay.refunds import RefundOutcome

_STATE_STYLE = {"requested": "yellow", "done": "green", "rejected": "red"}
_ORIGIN = {"midpay": "midpay", "outside": "outside midpay", "unitemized": "Midtrans total"}


def _plain(value: object) -> Text:
    """``value`` as inert Rich text: never markup, control and format characters shown escaped."""
    import unicodedata

    from rich.text import Text

    raw = "-" if value is None else str(value)
    shown = "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Cn", "Zl", "Zp") else ch for ch in raw
    )
    return Text(shown)


def _iso(value: Any) -> str | None:
    from midpay.output import iso

    return iso(value)


def refund_item(refund: Refund) -> dict[str, Any]:
    """One refund as JSON (an item of a payment document's ``refunds``)."""
    return {
        "refund_key": refund.refund_key,
        "refund_chargeback_id": refund.refund_chargeback_id,
        "amount": refund.amount,
        "reason": refund.reason,
        "status": refund.status,
        "origin": refund.origin,
        "created_at": _iso(refund.created_at),
        "refunded_at": _iso(refund.refunded_at),
        "bank_confirmed_at": _iso(refund.bank_confirmed_at),
        "refund_method": refund.refund_method,
        "updated_at": _iso(refund.updated_at),
    }


def ledger_fields(ledger: Ledger) -> dict[str, Any]:
    """What ``status --json`` and ``payments --json`` add to a payment document."""
    return {
        "refunded_amount": ledger.refunded,
        "refundable_amount": ledger.refundable,
        "refunds": [refund_item(r) for r in ledger.rows],
    }


def outcome_document(outcome: RefundOutcome) -> dict[str, Any]:
    """The JSON of ``refund --json``: what happened, the refund, and the payment with its ledger."""
    from midpay.output import payment_document

    return {
        "result": outcome.result,
        "refund": {"order_id": outcome.refund.order_id, **refund_item(outcome.refund)},
        "payment": payment_document(outcome.payment, ledger=outcome.ledger),
    }


def add_ledger_rows(grid: Table, ledger: Ledger) -> None:
    """The refunded total and the refundable remainder, as rows of a payment's panel."""
    from midpay.output import rupiah

    if not ledger.rows and ledger.refundable == 0:
        return
    grid.add_row("refunded", rupiah(ledger.refunded))
    grid.add_row("refundable", rupiah(ledger.refundable))
    waiting = sum(r.amount for r in ledger.in_flight)
    if waiting:
        grid.add_row("outcome unknown", rupiah(waiting))


def render_ledger(con: Console, ledger: Ledger) -> None:
    """A table of the payment's refunds (nothing when it has none)."""
    from rich.table import Table
    from rich.text import Text

    from midpay.output import rupiah

    if not ledger.rows:
        return
    table = Table(title="Refunds", title_justify="left")
    for name in ("refund key", "amount", "reason", "state", "made by", "refunded at", "bank confirmed"):
        table.add_column(name, overflow="fold")
    for r in ledger.rows:
        table.add_row(
            _plain(r.refund_key),
            Text(rupiah(r.amount)),
            _plain(r.reason),
            Text(r.status, style=_STATE_STYLE.get(r.status, "")),
            Text(_ORIGIN.get(r.origin, r.origin)),
            Text(_iso(r.refunded_at) or "-"),
            Text(_iso(r.bank_confirmed_at) or "-"),
        )
    con.print(table)
    for r in ledger.in_flight:
        con.print(
            _plain(
                f"refund {r.refund_key} of {rupiah(r.amount)}: outcome not seen yet; "
                "rerun the same refund command to finish it (the same refund_key is sent, Midtrans pays it once)"
            )
        )


def refunded_cell(ledger: Ledger | None) -> Text:
    """The ``refunded`` column of the payments listing."""
    from rich.text import Text

    from midpay.output import rupiah

    if ledger is None or not ledger.rows:
        return Text("-")
    cell = rupiah(ledger.refunded)
    if ledger.in_flight:
        cell += " (+ unknown)"
    return Text(cell)


def render_outcome(con: Console, outcome: RefundOutcome) -> None:
    """The payment after ``refund``, its refunds, and one line saying what was done."""
    from midpay.output import render_payment, rupiah

    title = "Already refunded" if outcome.result == "already" else "Refunded"
    render_payment(con, outcome.payment, title=title, ledger=outcome.ledger)
    r = outcome.refund
    amount, key = rupiah(r.amount), r.refund_key
    line = {
        "refunded": f"refunded {amount} under refund_key {key}",
        "resent": f"refunded {amount} under refund_key {key} (sent again: an earlier attempt's answer was lost; "
        "Midtrans pays a refund_key once)",
        "recorded": f"refund {key} of {amount} had been made already (an earlier attempt's answer was lost); "
        "recorded now, nothing sent",
        "already": f"this refund was made already: {amount} under refund_key {key} at {_iso(r.created_at)}; "
        "nothing was sent (to refund the same amount again, give a different --reason)",
    }[outcome.result]
    con.print(_plain(line))
