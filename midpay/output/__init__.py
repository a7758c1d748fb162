"""Rendering: data as text, JSON documents, Rich tables and panels, the terminal QR. No decisions here.

    text       the one helper every value goes through (``text``, ``visible``), money, times, JSON
    layout     lists of records that keep values whole: a table, or stacked blocks when narrow
    refunds    a payment's refund ledger, as JSON fields and for people (below documents and views)
    documents  the JSON documents of every command
    views      payments, refunds, notifications, events, reconcile, migrations
    system     the embedded server and the doctor's checks (imported by the commands that show them)

Each module imports only those above it in this list; nothing here imports a use case at
run time (the types it reads are annotations only).
"""

from midpay.output.documents import (
    event_document,
    migration_document,
    notification_document,
    payment_actions,
    payment_document,
    payment_expiry,
    reconcile_result,
    reconcile_summary,
    refund_document,
)
from midpay.output.layout import Column, records
from midpay.output.text import (
    ESCAPE_STYLE,
    console,
    iso,
    join,
    json_text,
    rupiah,
    status_text,
    text,
    visible,
    when,
    write_json,
)
from midpay.output.views import (
    render_events,
    render_migration_status,
    render_notifications,
    render_payment,
    render_payments,
    render_qr,
    render_reconcile,
    render_refund,
)

__all__ = [
    "ESCAPE_STYLE",
    "Column",
    "console",
    "event_document",
    "iso",
    "join",
    "json_text",
    "migration_document",
    "notification_document",
    "payment_actions",
    "payment_document",
    "payment_expiry",
    "reconcile_result",
    "reconcile_summary",
    "records",
    "refund_document",
    "render_events",
    "render_migration_status",
    "render_notifications",
    "render_payment",
    "render_payments",
    "render_qr",
    "render_reconcile",
    "render_refund",
    "rupiah",
    "status_text",
    "text",
    "visible",
    "when",
    "write_json",
]
