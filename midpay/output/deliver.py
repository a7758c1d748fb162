"""What `midpay deliver` shows: its summary (document and line) and the deliveries that failed for good."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midpay.output.text import visible

if TYPE_CHECKING:
    from midpay.db.deliveries import Attempt, Delivery
    from midpay.outbox.deliver import Summary


def deliver_document(summary: Summary) -> dict[str, Any]:
    """``{"summary": {"delivered", "retrying", "failed"}}``."""
    return {"summary": {"delivered": summary.delivered, "retrying": summary.retrying, "failed": summary.failed}}


def deliver_line(summary: Summary) -> str:
    """The summary as one line of text."""
    return f"deliver: {summary.delivered} delivered, {summary.retrying} retrying, {summary.failed} failed"


def attempt_line(delivery: Delivery, attempt: Attempt, status: str | None) -> str:
    """One attempt that did not deliver, as one inert line (ids printed literally)."""
    what = "failed for good" if status == "failed" else "will be retried"
    reason = attempt.error or (f"HTTP {attempt.status_code}" if attempt.status_code is not None else "no answer")
    return visible(
        f"{delivery.event_id} to {delivery.endpoint_id} (order {delivery.order_id}, #{delivery.sequence}): "
        f"{reason}; {what}"
    )
