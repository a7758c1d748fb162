"""The JSON documents of every command (CONTRACT.md fixes their shapes). No printing here."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from midpay.output.refunds import ledger_fields, refund_item
from midpay.output.text import iso

if TYPE_CHECKING:
    from midpay.db import Payment, WebhookEvent
    from midpay.db.migrate import MigrationStatus
    from midpay.intake.pipeline import NotificationResult
    from midpay.reconcile.job import ReconcileResult, ReconcileSummary
    from midpay.refunds.command import RefundOutcome
    from midpay.refunds.ledger import Ledger


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
    from midpay.midtrans.notifications import parse_time

    raw = _response(payment)
    value = raw.get("expiry_time") or raw.get("expire_time")
    try:
        return parse_time(value, "expiry_time")
    except InvalidPayload:
        return None


def payment_document(payment: Payment, *, ledger: Ledger | None = None) -> dict[str, Any]:
    """The JSON shape of ``status --json`` and ``charge --json`` (CONTRACT.md); with ``ledger``,
    also its refunds (``refunded_amount``, ``refundable_amount``, ``refunds``)."""
    qr = _response(payment).get("qr_string")
    doc = {
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
    if ledger is not None:
        doc.update(ledger_fields(ledger))
    return doc


def refund_document(outcome: RefundOutcome) -> dict[str, Any]:
    """The JSON of ``refund --json``: what happened, the refund, and the payment with its ledger."""
    return {
        "result": outcome.result,
        "refund": {"order_id": outcome.refund.order_id, **refund_item(outcome.refund)},
        "payment": payment_document(outcome.payment, ledger=outcome.ledger),
    }


def notification_document(results: list[NotificationResult]) -> dict[str, Any]:
    """The JSON shape of ``replay-webhook --json``."""
    summary = {
        "total": len(results),
        "applied": sum(r.outcome == "applied" for r in results),
        "unchanged": sum(r.outcome == "unchanged" for r in results),
        "awaiting": sum(r.outcome == "awaiting" for r in results),
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
                "outcome": r.outcome,
                "confirmed": r.confirmed,
            }
            for r in results
        ],
        "summary": summary,
    }


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


def reconcile_result(r: ReconcileResult) -> dict[str, Any]:
    return {"order_id": r.order_id, "status_before": r.status_before, "status_after": r.status_after, "error": r.error}


def reconcile_summary(s: ReconcileSummary) -> dict[str, int]:
    return {"checked": s.checked, "changed": s.changed, "unchanged": s.unchanged, "errors": s.errors}


def migration_document(status: MigrationStatus) -> dict[str, Any]:
    """The JSON shape of ``migrate --status --json``."""
    return {
        "applied": [
            {"version": a.version, "name": a.name, "checksum": a.checksum, "applied_at": iso(a.applied_at)}
            for a in status.applied
        ],
        "pending": [{"version": f.version, "name": f.name, "checksum": f.checksum} for f in status.pending],
        "adoption": status.found.as_json(),
    }
