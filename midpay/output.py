"""Rendering: JSON documents, Rich tables and panels, the terminal QR. No decisions here."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from midpay.db import Payment, Refund, WebhookEvent
    from midpay.intake import NotificationResult
    from midpay.migrate import MigrationStatus
    from midpay.reconcile import ReconcileResult, ReconcileSummary

_STATUS_STYLE = {
    "created": "yellow",
    "pending": "yellow",
    "authorize": "yellow",
    "capture": "green",
    "settlement": "bold green",
    "partial_refund": "magenta",
    "refund": "magenta",
    "deny": "red",
    "cancel": "red",
    "expire": "red",
    "failure": "bold red",
}


# --- data as text ----------------------------------------------------------------------
#
# Every value that comes from outside (a notification body, a Midtrans answer, a
# database row, a path) reaches the terminal through ``text`` or ``visible``: never as
# Rich markup, and never with a character the terminal would act on. Control
# characters (C0, DEL, C1: ESC sequences, OSC-8 links, BEL, backspace, carriage
# return), format characters (bidi overrides and isolates, zero-width joiners),
# line and paragraph separators, lone surrogates and unassigned code points are
# shown as escapes (``\x1b``, ``\u202e``, ``\n``), so the value stays one inert line.

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INERT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
_PLAIN_ASCII = re.compile(r"[ -~]*", re.ASCII)
ESCAPE_STYLE = "reverse"


def _escape_char(ch: str) -> str | None:
    """The visible escape of one character, or None when it may be printed as it is."""
    if unicodedata.category(ch) not in _INERT_CATEGORIES:
        return None
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    point = ord(ch)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def _pieces(value: object, missing: str) -> list[tuple[str, bool]]:
    """``value`` as (chunk, is_escape) pieces; most values are one plain chunk."""
    raw = missing if value is None else value if isinstance(value, str) else str(value)
    if _PLAIN_ASCII.fullmatch(raw):
        return [(raw, False)]
    pieces: list[tuple[str, bool]] = []
    plain: list[str] = []
    for ch in raw:
        escaped = _escape_char(ch)
        if escaped is None:
            plain.append(ch)
            continue
        if plain:
            pieces.append(("".join(plain), False))
            plain = []
        pieces.append((escaped, True))
    if plain:
        pieces.append(("".join(plain), False))
    return pieces


def visible(value: object, missing: str = "-") -> str:
    """``value`` as one line of plain, inert text (for stderr, prompts and plain writes).

    None becomes ``missing``. Markup characters stay as they are: this is for
    writing without Rich; anything printed through Rich takes ``text`` instead.
    """
    return "".join(chunk for chunk, _ in _pieces(value, missing))


def text(value: object, style: str = "", *, missing: str = "-") -> Text:
    """``value`` as a Rich ``Text``: shown literally, never parsed as markup, escapes marked.

    ``style`` is for the caller's own choice (a column's colour): never derive it from data.
    """
    from rich.text import Text

    out = Text(style=style, end="")
    for chunk, escaped in _pieces(value, missing):
        out.append(chunk, style=ESCAPE_STYLE if escaped else None)
    return out


def console(file: IO[str] | None = None) -> Console:
    """A Rich console on stdout (or ``file``); plain when not a terminal."""
    from rich.console import Console

    return Console(file=file or sys.stdout, highlight=False, soft_wrap=False)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in Jakarta time (WIB, +07:00, Midtrans' own zone), or None."""
    return _wib(value).isoformat() if value is not None else None


def _wib(value: datetime) -> datetime:
    from midpay.notifications import JAKARTA

    return value.astimezone(JAKARTA) if value.tzinfo is not None else value


def write_json(document: Any, file: IO[str] | None = None, *, compact: bool = False) -> None:
    """Exactly one JSON document on stdout; ``compact`` for large ones (indenting is slow)."""
    out = file or sys.stdout
    indent = None if compact else 2
    out.write(json.dumps(document, ensure_ascii=False, indent=indent, default=_json_default))
    out.write("\n")
    out.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --- payments --------------------------------------------------------------------------


def _response(payment: Payment) -> dict[str, Any]:
    raw = payment.midtrans_response_json
    return raw if isinstance(raw, dict) else {}


def payment_actions(payment: Payment) -> list[dict[str, str]]:
    """The ``actions`` Midtrans gave for this payment (QR image, deeplink, …)."""
    actions = _response(payment).get("actions")
    found: list[dict[str, str]] = []
    if isinstance(actions, list):
        for a in actions:
            if isinstance(a, dict):
                found.append({k: str(a.get(k, "")) for k in ("name", "method", "url")})
    return found


def payment_expiry(payment: Payment) -> datetime | None:
    """Midtrans' expiry time (``expiry_time`` or ``expire_time``), Jakarta time."""
    from midpay.errors import InvalidPayload
    from midpay.notifications import parse_time

    raw = _response(payment)
    value = raw.get("expiry_time") or raw.get("expire_time")
    try:
        return parse_time(value, "expiry_time")
    except InvalidPayload:
        return None


def payment_document(payment: Payment) -> dict[str, Any]:
    """The JSON shape of ``status --json`` and ``charge --json`` (CONTRACT.md)."""
    qr = _response(payment).get("qr_string")
    return {
        "order_id": payment.order_id,
        "status": payment.status,
        "gross_amount": payment.gross_amount,
        "payment_type": payment.payment_type,
        "user_id": payment.user_id,
        "midtrans_transaction_id": payment.midtrans_transaction_id,
        "paid_at": iso(payment.paid_at),
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
        "actions": payment_actions(payment),
        "qr_string": qr if isinstance(qr, str) else None,
        "expiry_time": iso(payment_expiry(payment)),
    }


def rupiah(amount: int) -> str:
    """``Rp 154.600``, the Indonesian way."""
    return "Rp " + f"{amount:,}".replace(",", ".")


def status_text(status: str) -> str:
    style = _STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/]"


def render_payment(con: Console, payment: Payment, *, title: str = "Payment", show_qr: bool = False) -> None:
    """A panel with one payment; optionally its QR code drawn in the terminal."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    doc = payment_document(payment)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    grid.add_row("order id", Text(payment.order_id))
    grid.add_row("status", status_text(payment.status))
    grid.add_row("amount", rupiah(payment.gross_amount))
    grid.add_row("payment type", payment.payment_type)
    if payment.user_id is not None:
        grid.add_row("user id", str(payment.user_id))
    grid.add_row("midtrans id", payment.midtrans_transaction_id or "-")
    grid.add_row("created", doc["created_at"] or "-")
    grid.add_row("updated", doc["updated_at"] or "-")
    grid.add_row("paid at", doc["paid_at"] or "-")
    if doc["expiry_time"]:
        grid.add_row("expires", doc["expiry_time"])
    for action in doc["actions"]:
        label = {"generate-qr-code": "QR image", "deeplink-redirect": "deeplink"}.get(action["name"], action["name"])
        grid.add_row(label, Text(action["url"], overflow="fold"))
    con.print(Panel(grid, title=title, expand=False))
    if show_qr and doc["qr_string"]:
        render_qr(con, doc["qr_string"])


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
    con.print("Scan with GoPay or any QRIS app.", style="dim")


def render_payments(con: Console, payments: Iterable[Payment]) -> None:
    """Recent payments in a table."""
    from rich.table import Table

    table = Table(title="Payments")
    for name in ("order id", "status", "amount", "type", "created", "paid at"):
        table.add_column(name, no_wrap=name in ("order id", "status"))
    count = 0
    for p in payments:
        count += 1
        table.add_row(
            p.order_id, status_text(p.status), rupiah(p.gross_amount), p.payment_type,
            _short(p.created_at), _short(p.paid_at),
        )
    if count:
        con.print(table)
    else:
        con.print("No payments match.")


def _short(value: datetime | None) -> str:
    return _wib(value).strftime("%Y-%m-%d %H:%M:%S WIB") if value else "-"


# --- notifications ---------------------------------------------------------------------


def notification_document(results: list[NotificationResult]) -> dict[str, Any]:
    """The JSON shape of ``replay-webhook --json``."""
    summary = {
        "total": len(results),
        "applied": sum(r.outcome == "applied" for r in results),
        "unchanged": sum(r.outcome == "unchanged" for r in results),
        "rejected": sum(r.outcome == "rejected" for r in results),
    }
    return {
        "results": [
            {
                "source": r.source,
                "order_id": r.order_id,
                "verified": r.verified,
                "applied": r.applied,
                "status_before": r.status_before,
                "status_after": r.status_after,
                "error": r.error,
            }
            for r in results
        ],
        "summary": summary,
    }


def render_notifications(con: Console, results: list[NotificationResult], *, dry_run: bool) -> None:
    """One line per body, then the summary."""
    from rich.table import Table

    doc = notification_document(results)
    table = Table(title="Notifications" + (" (dry run: nothing written)" if dry_run else ""))
    for name in ("source", "order id", "verified", "result", "detail"):
        table.add_column(name, overflow="fold")
    shown = results if len(results) <= 200 else [r for r in results if r.outcome != "applied"][:200]
    for r in shown:
        change = f"{r.status_before} → {r.status_after}" if r.status_before else ""
        outcome = {"applied": "[green]applied[/]", "unchanged": "unchanged", "rejected": "[red]rejected[/]"}[r.outcome]
        table.add_row(r.source, r.order_id or "-", "yes" if r.verified else "no", outcome, r.error or r.note or change)
    if shown:
        con.print(table)
    s = doc["summary"]
    con.print(
        f"{s['total']} bodies: [green]{s['applied']} applied[/], {s['unchanged']} unchanged, "
        f"[{'red' if s['rejected'] else 'green'}]{s['rejected']} rejected[/]"
    )


def render_events(con: Console, events: Iterable[WebhookEvent]) -> None:
    """Stored notifications with their verification and outcome."""
    from rich.table import Table

    table = Table(title="Stored notifications")
    for name in ("received", "order id", "status", "verified", "outcome", "error", "source"):
        table.add_column(name, overflow="fold")
    count = 0
    for e in events:
        count += 1
        status = e.raw_body.get("transaction_status") if isinstance(e.raw_body, dict) else None
        table.add_row(
            _short(e.received_at), e.order_id or "-", str(status or "-"), "yes" if e.is_verified else "no",
            e.outcome or ("processed" if e.processed else "-"), e.processing_error or "", e.source or "",
        )
    if count:
        con.print(table)
    else:
        con.print("No stored notifications match.")


def event_document(e: WebhookEvent) -> dict[str, Any]:
    """One stored notification as JSON."""
    return {
        "id": str(e.id),
        "received_at": iso(e.received_at),
        "order_id": e.order_id,
        "midtrans_transaction_id": e.midtrans_transaction_id,
        "transaction_status": e.raw_body.get("transaction_status") if isinstance(e.raw_body, dict) else None,
        "is_verified": e.is_verified,
        "processed": e.processed,
        "outcome": e.outcome,
        "processing_error": e.processing_error,
        "source": e.source,
    }


# --- reconcile -------------------------------------------------------------------------


def reconcile_result(r: ReconcileResult) -> dict[str, Any]:
    return {"order_id": r.order_id, "status_before": r.status_before, "status_after": r.status_after, "error": r.error}


def reconcile_summary(s: ReconcileSummary) -> dict[str, int]:
    return {"checked": s.checked, "changed": s.changed, "unchanged": s.unchanged, "errors": s.errors}


def render_reconcile(con: Console, notable: list[ReconcileResult], summary: ReconcileSummary, *, dry_run: bool) -> None:
    """Changed rows and errors, then the summary line."""
    from rich.table import Table

    if notable:
        table = Table(title="Reconcile" + (" (dry run: nothing written)" if dry_run else ""))
        for name in ("order id", "before", "after", "error"):
            table.add_column(name, overflow="fold")
        for r in notable[:500]:
            table.add_row(r.order_id, status_text(r.status_before), status_text(r.status_after), r.error or "")
        con.print(table)
        if len(notable) > 500:
            con.print(f"… and {len(notable) - 500} more (use --json for all)")
    s = reconcile_summary(summary)
    con.print(
        f"checked {s['checked']}: {s['changed']} changed, {s['unchanged']} unchanged, "
        f"[{'red' if s['errors'] else 'green'}]{s['errors']} errors[/]"
    )


# --- migrations ------------------------------------------------------------------------


def migration_document(status: MigrationStatus) -> dict[str, Any]:
    """The JSON shape of ``migrate --status --json``."""
    return {
        "applied": [
            {"version": a.version, "name": a.name, "checksum": a.checksum, "applied_at": iso(a.applied_at)}
            for a in status.applied
        ],
        "pending": [{"version": f.version, "name": f.name, "checksum": f.checksum} for f in status.pending],
    }


def render_migration_status(con: Console, status: MigrationStatus) -> None:
    from rich.table import Table

    table = Table(title="Migrations")
    for name in ("version", "name", "state", "checksum", "applied at"):
        table.add_column(name)
    for a in status.applied:
        table.add_row(str(a.version), a.name, "[green]applied[/]", a.checksum[:12], _short(a.applied_at))
    for f in status.pending:
        table.add_row(str(f.version), f.name, "[yellow]pending[/]", f.checksum[:12], "-")
    con.print(table)


# --- operator actions ------------------------------------------------------------------


def refund_document(refund: Refund) -> dict[str, Any]:
    """One refund as JSON (``refund --json`` puts it beside the payment)."""
    return {
        "refund_key": refund.refund_key,
        "order_id": refund.order_id,
        "amount": refund.amount,
        "reason": refund.reason,
        "status": refund.status,
        "created_at": iso(refund.created_at),
        "updated_at": iso(refund.updated_at),
    }


def render_refund(con: Console, refund: Refund, payment: Payment, *, retried: bool) -> None:
    """The payment after a refund, and one line about the refund itself."""
    render_payment(con, payment, title="Refunded")
    again = " (sent again: an earlier attempt's answer was lost)" if retried else ""
    con.print(f"refunded {rupiah(refund.amount)} under refund_key {refund.refund_key}{again}")
