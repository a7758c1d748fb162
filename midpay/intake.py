"""A notification from any source: store it, verify it, apply it.

``replay-webhook`` (files, stdin), ``events reprocess`` (stored bodies) and ``listen``
(HTTP) all come through here; nothing about a notification is decided anywhere else.
The body is stored by the first statement of the transaction that then decides and
records its outcome, so a body and its outcome commit together.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from midpay import db
from midpay.apply import AmountMismatch, ApplyResult, apply_to
from midpay.bodies import Body, clean_text, decode_body
from midpay.errors import DataConflict, InvalidPayload
from midpay.notifications import TransactionView, parse_notification, verify_signature


@dataclass(frozen=True)
class NotificationResult:
    """One body of replay-webhook, as CONTRACT.md reports it."""

    source: str
    order_id: str | None
    verified: bool
    applied: bool
    status_before: str | None
    status_after: str | None
    error: str | None
    outcome: str  # applied | unchanged | rejected
    note: str | None = None


def _storable(body: Body) -> Any:
    """What goes into raw_body (jsonb): the JSON itself, or the raw text as a JSON string."""
    return body.parsed if body.parse_error is None else clean_text(body.text)


def _field(parsed: Any, name: str) -> str | None:
    if isinstance(parsed, dict):
        value = parsed.get(name)
        if isinstance(value, str):
            return value
    return None


@dataclass(frozen=True)
class _Verdict:
    """What a body says on its own, before any payment is looked at."""

    view: TransactionView | None
    verified: bool
    error: str | None


def _verify(body: Body, server_key: str) -> _Verdict:
    if body.parse_error is not None:
        return _Verdict(None, False, body.parse_error)
    try:
        view = parse_notification(body.parsed)
    except InvalidPayload as exc:
        return _Verdict(None, False, str(exc))
    if not verify_signature(body.parsed, server_key):
        return _Verdict(view, False, "signature mismatch: signature_key does not match this body and server key")
    return _Verdict(view, True, None)


def process_notification(
    conn: db.Connection, body: Body, server_key: str, *, dry_run: bool = False
) -> NotificationResult:
    """Store the body, then verify it (signature, known order, amount) and apply it.

    The body is inserted by the transaction's first statement (which also locks the
    payment it names); the decision follows and its outcome commits with the body. If
    anything fails while deciding (PostgreSQL refusing the payment's update, say), that
    transaction is rolled back and the body is stored again, rejected, with the reason:
    whatever happens, it is kept.
    ``dry_run`` verifies and decides without writing.
    """
    verdict = _verify(body, server_key)
    lock = verdict.view.order_id if verdict.verified and verdict.view is not None else None
    if dry_run:
        with conn.transaction(force_rollback=True):
            payment = db.get_payment(conn, lock) if lock is not None else None
            return _conclude(conn, body, verdict, payment, event_id=None)
    try:
        with conn.transaction():
            event_id, payment = db.insert_event(conn, **_event_fields(body), lock_order_id=lock)
            return _conclude(conn, body, verdict, payment, event_id=event_id)
    except Exception as exc:  # whatever went wrong deciding, the body is kept
        if db.map_error(exc) is not None:
            raise  # the connection itself is gone: nothing can be stored now; exit 3 says so
        reason = str(exc) if isinstance(exc, DataConflict) else f"not processed: {type(exc).__name__}: {exc}"
        with conn.transaction():
            event_id, _ = db.insert_event(conn, **_event_fields(body))
            db.finish_event(conn, event_id, is_verified=verdict.verified, outcome="rejected", error=reason)
        return _result(body, verdict, "rejected", reason)


def _event_fields(body: Body) -> dict[str, Any]:
    return {
        "raw_body": _storable(body),
        "source": body.source,
        "order_id": _field(body.parsed, "order_id"),
        "transaction_id": _field(body.parsed, "transaction_id"),
        "signature_key": _field(body.parsed, "signature_key"),
    }


def _result(
    body: Body, verdict: _Verdict, outcome: str, error: str | None, applied: ApplyResult | None = None
) -> NotificationResult:
    return NotificationResult(
        source=body.source,
        order_id=_field(body.parsed, "order_id"),
        verified=verdict.verified,
        applied=outcome == "applied",
        status_before=applied.status_before if applied else None,
        status_after=applied.status_after if applied else None,
        error=error,
        outcome=outcome,
        note=applied.note if applied else None,
    )


def _conclude(
    conn: db.Connection,
    body: Body,
    verdict: _Verdict,
    payment: db.Payment | None,
    *,
    event_id: uuid.UUID | None,
) -> NotificationResult:
    """Decide on a verified body against its locked payment; record the outcome on the event."""

    def finish(outcome: str, error: str | None, applied: ApplyResult | None = None) -> NotificationResult:
        if event_id is not None and not (applied is not None and applied.applied):
            note = applied.note if applied is not None else None
            db.finish_event(conn, event_id, is_verified=verdict.verified, outcome=outcome, error=error or note)
        return _result(body, verdict, outcome, error, applied)

    if not verdict.verified or verdict.view is None:
        return finish("rejected", verdict.error)
    if payment is None:
        return finish("rejected", f"unknown order: {verdict.view.order_id}")
    event = db.EventOutcome(event_id, True, "applied") if event_id is not None else None
    try:
        result = apply_to(conn, payment, verdict.view, event=event)
    except AmountMismatch as exc:
        return finish("rejected", str(exc))
    return finish("applied" if result.applied else "unchanged", None, result)


# --- stored notifications, again -------------------------------------------------------


def stored_body(event: db.WebhookEvent) -> Body:
    """A stored notification as the Body it was received as, named ``event:<id>``.

    ``raw_body`` holds the parsed JSON, or, for a body that was not JSON, its text as a
    JSON string (``_storable``); such text is parsed again and rejected again.
    """
    source = f"event:{event.id}"
    if isinstance(event.raw_body, str):
        return decode_body(source, event.raw_body)
    return Body(source, json.dumps(event.raw_body, ensure_ascii=False), parsed=event.raw_body)


def reprocess_notification(
    conn: db.Connection, event_id: uuid.UUID, server_key: str, *, rejected_only: bool = False
) -> NotificationResult | None:
    """Verify and apply a stored, unprocessed notification again, as ``process_notification`` would.

    The new outcome is recorded on the same event row (no second row for the same
    body). The row is locked for the decision; None when it is processed already or
    another run holds it.
    """
    with conn.transaction():
        event = db.lock_unprocessed_event(conn, event_id, rejected_only=rejected_only)
        if event is None:
            return None
        body = stored_body(event)
        verdict = _verify(body, server_key)
        payment = None
        if verdict.verified and verdict.view is not None:
            payment = db.get_payment(conn, verdict.view.order_id, for_update=True)
        try:
            with conn.transaction():  # a savepoint: a refused update leaves the event to record it
                return _conclude(conn, body, verdict, payment, event_id=event.id)
        except DataConflict as exc:
            db.finish_event(conn, event.id, is_verified=True, outcome="rejected", error=str(exc))
            return _result(body, verdict, "rejected", str(exc))


def reprocess_events(
    conn: db.Connection,
    server_key: str,
    *,
    order_id: str | None = None,
    rejected_only: bool = False,
    on_result: Callable[[NotificationResult], None] | None = None,
) -> list[NotificationResult]:
    """Verify and apply every unprocessed stored notification again, oldest first.

    Each outcome is recorded on the notification's own row. ``rejected_only`` takes
    only the rows recorded as rejected (not those never decided at all). A row that a
    concurrent run is reprocessing is skipped.
    """
    with conn.transaction():
        ids = db.select_unprocessed_event_ids(conn, order_id=order_id, rejected_only=rejected_only)
    results: list[NotificationResult] = []
    for event_id in ids:
        result = reprocess_notification(conn, event_id, server_key, rejected_only=rejected_only)
        if result is not None:
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results

