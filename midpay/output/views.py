"""What people read: one payment, lists of payments and notifications, reconcile and migrations.

Every value from data goes through ``text``; times are WIB to the second; amounts,
order ids and times are never cut (``layout.records``). URLs are printed on lines of
their own, outside any border, so that they copy whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from midpay.output.documents import notification_document, payment_actions, payment_expiry, reconcile_summary
from midpay.output.layout import Column, columns, records
from midpay.output.refunds import REFUNDED_COLUMN, ledger_rows, refunded_cell, render_ledger
from midpay.output.text import join, rupiah, status_text, text, when

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from midpay.db import Payment, WebhookEvent
    from midpay.db.migrate import MigrationStatus
    from midpay.intake.pipeline import NotificationResult
    from midpay.reconcile.job import ReconcileResult, ReconcileSummary
    from midpay.refunds.command import RefundOutcome
    from midpay.refunds.ledger import Ledger

ACTION_LABELS = {"generate-qr-code": "QR image", "deeplink-redirect": "deeplink"}
MOST_ROWS = 500


# --- one payment -----------------------------------------------------------------------


def render_payment(
    con: Console, payment: Payment, *, title: str = "Payment", show_qr: bool = False, ledger: Ledger | None = None
) -> None:
    """One payment: its fields in a panel (plain lines when the panel would not fit), then its links;
    with its ``ledger``, what was refunded and a list of its refunds."""
    from rich.cells import cell_len
    from rich.panel import Panel
    from rich.table import Table

    fields: list[tuple[str, Text]] = [
        ("order id", text(payment.order_id)),
        ("status", status_text(payment.status)),
        ("amount", text(rupiah(payment.gross_amount))),
        ("payment type", text(payment.payment_type)),
    ]
    if payment.user_id is not None:
        fields.append(("user id", text(payment.user_id)))
    fields += [
        ("midtrans id", text(payment.midtrans_transaction_id)),
        ("created", text(when(payment.created_at, zone=True))),
        ("updated", text(when(payment.updated_at, zone=True))),
        ("paid at", text(when(payment.paid_at, zone=True))),
    ]
    expiry = payment_expiry(payment)
    if expiry is not None:
        fields.append(("expires", text(when(expiry, zone=True))))
    if ledger is not None:
        fields += ledger_rows(ledger)
    label_width = max(len(label) for label, _ in fields)
    value_width = max(cell_len(value.plain) for _, value in fields)
    if label_width + 2 + value_width + 4 <= con.width:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ignore")
        for label, value in fields:
            grid.add_row(label, value)
        con.print(Panel(grid, title=title, title_align="left", expand=False))
    else:
        con.print(text(title, "bold"))
        for label, value in fields:
            con.print(join(f"{label:<{label_width}}  ", value), soft_wrap=True)
    for action in payment_actions(payment):
        # Alone on its line and never wrapped by Rich: a terminal copies it whole.
        con.print(text(ACTION_LABELS.get(action["name"], action["name"]) + ":", "bold cyan"))
        con.print(text(action["url"]), soft_wrap=True)
    if ledger is not None:
        render_ledger(con, ledger)
    if show_qr:
        qr = payment_qr_string(payment)
        if qr:
            render_qr(con, qr)


def render_refund(con: Console, outcome: RefundOutcome) -> None:
    """The payment after ``refund``, its refunds, and one line saying what was done."""
    title = "Already refunded" if outcome.result == "already" else "Refunded"
    render_payment(con, outcome.payment, title=title, ledger=outcome.ledger)
    r = outcome.refund
    amount, key = rupiah(r.amount), text(r.refund_key)
    line = {
        "refunded": join(f"refunded {amount} under refund_key ", key),
        "resent": join(
            f"refunded {amount} under refund_key ", key,
            " (sent again: an earlier attempt's answer was lost; Midtrans pays a refund_key once)",
        ),
        "recorded": join(
            "refund ", key, f" of {amount} had been made already (an earlier attempt's answer was lost); "
            "recorded now, nothing sent",
        ),
        "already": join(
            f"this refund was made already: {amount} under refund_key ", key,
            f" at {when(r.created_at, zone=True)}; nothing was sent (to refund the same amount again, "
            "give a different --reason)",
        ),
    }[outcome.result]
    con.print(line)


def payment_qr_string(payment: Payment) -> str | None:
    raw = payment.midtrans_response_json
    value = raw.get("qr_string") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None


def render_qr(con: Console, data: str) -> None:
    """Draw a scannable QR code with half-block characters."""
    import segno

    qr = segno.make(data, error="m")
    rows = [[bool(cell) for cell in row] for row in qr.matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        chars = []
        for t, b in zip(top, bottom, strict=True):
            # Dark modules drawn as spaces on a light background scan best on dark terminals.
            chars.append({(False, False): "█", (True, False): "▄", (False, True): "▀", (True, True): " "}[(t, b)])
        lines.append("".join(chars))
    con.print("\n".join(lines), style="white on black", highlight=False, markup=False, soft_wrap=True)
    con.print("Scan with GoPay or any QRIS app.", style="dim", markup=False)


# --- lists -----------------------------------------------------------------------------

PAYMENT_COLUMNS = (
    Column("order id"),
    Column("status"),
    Column("amount", justify="right"),
    Column("type"),
    Column("created"),
    Column("paid at"),
)


def render_payments(
    con: Console, payments: Iterable[Payment], *, wide: bool = False, ledgers: dict[Any, Ledger] | None = None
) -> None:
    """Recent payments; no column folds (each value is whole), stacked when the table would not fit.

    With ``ledgers`` (by payment id), a ``refunded`` column.
    """
    rows = [
        [
            text(p.order_id), status_text(p.status), text(rupiah(p.gross_amount)), text(p.payment_type),
            text(when(p.created_at)), text(when(p.paid_at)),
            *([refunded_cell(ledgers.get(p.id))] if ledgers is not None else []),
        ]
        for p in payments
    ]
    columns = (*PAYMENT_COLUMNS, REFUNDED_COLUMN) if ledgers is not None else PAYMENT_COLUMNS
    records(con, columns, rows, title="Payments (times in WIB)", empty="No payments match.", wide=wide)


EVENT_COLUMNS = columns(
    "received", "order id", "status", "verified", "outcome", "error", "source", folded=("error", "source")
)


def render_events(con: Console, events: Iterable[WebhookEvent], *, wide: bool = False) -> None:
    """Stored notifications; the error and source columns may fold, the rest stay whole."""
    rows = []
    for e in events:
        status = e.raw_body.get("transaction_status") if isinstance(e.raw_body, dict) else None
        rows.append([
            text(when(e.received_at)), text(e.order_id), text(status), text("yes" if e.is_verified else "no"),
            text(e.outcome or ("processed" if e.processed else "-")), text(e.processing_error, missing=""),
            text(e.source, missing=""),
        ])
    records(con, EVENT_COLUMNS, rows, title="Stored notifications (times in WIB)",
            empty="No stored notifications match.", wide=wide)


NOTIFICATION_COLUMNS = (
    Column("source", fold=True),
    Column("order id"),
    Column("verified"),
    Column("result"),
    Column("detail", fold=True),
)
_OUTCOME_STYLE = {"applied": "green", "unchanged": "", "awaiting": "yellow", "rejected": "red"}


def render_notifications(con: Console, results: list[NotificationResult], *, dry_run: bool) -> None:
    """One line per body (at most 200, the failures first when there are more), then the summary."""
    doc = notification_document(results)
    shown = results if len(results) <= 200 else [r for r in results if r.outcome != "applied"][:200]
    rows = []
    for r in shown:
        change = f"{r.status_before} → {r.status_after}" if r.status_before else ""
        label = "would apply" if dry_run and r.outcome == "applied" else r.outcome
        rows.append([
            text(r.source), text(r.order_id), text("yes" if r.verified else "no"),
            text(label, _OUTCOME_STYLE.get(r.outcome, "")), text(r.error or r.note or change, missing=""),
        ])
    title = "Notifications" + (" (dry run: nothing written)" if dry_run else "")
    if rows:
        records(con, NOTIFICATION_COLUMNS, rows, title=title, empty="")
    s = doc["summary"]
    applied = f"{s['applied']} would apply" if dry_run else f"{s['applied']} applied"
    con.print(join(
        f"{s['total']} bodies: ", text(applied, "green"), f", {s['unchanged']} unchanged, ",
        text(f"{s['awaiting']} awaiting confirmation", "yellow" if s["awaiting"] else "green"), ", ",
        text(f"{s['rejected']} rejected", "red" if s["rejected"] else "green"),
    ))


RECONCILE_COLUMNS = (Column("order id"), Column("before"), Column("after"), Column("error", fold=True))


def render_reconcile(con: Console, notable: list[ReconcileResult], summary: ReconcileSummary, *, dry_run: bool) -> None:
    """Changed rows and errors (at most 500), then the summary line."""
    if notable:
        rows = [
            [text(r.order_id), status_text(r.status_before), status_text(r.status_after), text(r.error, missing="")]
            for r in notable[:MOST_ROWS]
        ]
        title = "Reconcile" + (" (dry run: nothing written)" if dry_run else "")
        records(con, RECONCILE_COLUMNS, rows, title=title, empty="")
        if len(notable) > MOST_ROWS:
            con.print(text(f"… and {len(notable) - MOST_ROWS} more (use --json for all)"))
    s = reconcile_summary(summary)
    con.print(join(
        f"checked {s['checked']}: {s['changed']} changed, {s['unchanged']} unchanged, ",
        text(f"{s['errors']} errors", "red" if s["errors"] else "green"),
    ))


MIGRATION_COLUMNS = (Column("version"), Column("name"), Column("state"), Column("checksum"), Column("applied at"))


def render_migration_status(con: Console, status: MigrationStatus) -> None:
    """Applied then pending migration files, with the start of their checksums."""
    rows = [
        [text(a.version), text(a.name), text("applied", "green"), text(a.checksum[:12]), text(when(a.applied_at))]
        for a in status.applied
    ]
    rows += [[text(f.version), text(f.name), text("pending", "yellow"), text(f.checksum[:12]), text("-")]
             for f in status.pending]
    records(con, MIGRATION_COLUMNS, rows, title="Migrations (times in WIB)", empty="No migration files.")
    render_adoption(con, status)


def render_adoption(con: Console, status: MigrationStatus) -> None:
    """What the migrations found in tables another backend had laid out (nothing when none)."""
    found = status.found
    if found.is_empty():
        return
    lines = []
    if found.tables_adopted:
        adopted = text(", ".join(found.tables_adopted))
        lines.append(join("tables adopted (there before midpay's first migration): ", adopted))
    for e in found.indexes_reused:
        lines.append(join("index reused: ", text(e["existing"]), " (instead of midpay's ", text(e["name"]), ")"))
    for e in found.constraints_reused:
        lines.append(join("constraint reused: ", text(e["existing"]), " (instead of midpay's ", text(e["name"]), ")"))
    for e in found.indexes_dropped:
        lines.append(join("duplicate dropped: midpay's ", text(e["name"]), " (the same as ", text(e["existing"]), ")"))
    for e in found.columns_added:
        lines.append(join("column added: ", text(f"{e['table']}.{e['column']}"), f" ({e['version']:03d})"))
    for line in lines:
        con.print(line)
