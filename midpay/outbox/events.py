"""The event document: what the shop's app receives for one change of a payment.

``{"id", "type", "created_at", "sequence", "data"}``, where ``data`` is the payment's
``status --json`` document as it was at the change (built by the same code, from the
event's snapshot of the row and its refunds) with ``previous_status`` and ``paid``
added. ``render`` is the one function that makes a body; ``deliver`` renders an event the
first time it sends it and keeps the result (``db.outbox.store_body``), so every retry
sends the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from midpay.db.core import Connection
from midpay.db.outbox import Event, store_body
from midpay.output.documents import payment_document
from midpay.output.text import iso
from midpay.refunds.ledger import Ledger


def document(event: Event) -> dict[str, Any]:
    """The event as a JSON object, keys in the documented order."""
    data = payment_document(event.payment, ledger=Ledger(event.payment, event.refunds))
    data["previous_status"] = event.previous_status
    data["paid"] = event.paid
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso(event.created_at),
        "sequence": event.sequence,
        "data": data,
    }


def render(event: Event) -> str:
    """The event's body: compact JSON, ASCII only (every byte the same wherever it is read).

    A value JSON has no type for is written as ``status --json`` writes it: an amount the
    older backend stored with a fraction of a rupiah (a ``Decimal``) as its text, "15000.50".
    """
    return json.dumps(document(event), separators=(",", ":"), default=str)


def body(conn: Connection, event: Event) -> str:
    """The bytes to send for ``event``: its kept body, or one rendered now and kept (first sender wins)."""
    if event.body is not None:
        return event.body
    return store_body(conn, event.id, render(event))
