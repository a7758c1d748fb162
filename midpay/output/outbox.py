"""Endpoints and the delivery log: their JSON documents and what people read.

A signing secret is shown only where the command hands it over (``endpoints add``,
``endpoints rotate-secret``), on a line of its own so that it copies whole. URLs,
ids, types, states and times are never cut (``layout.records``); descriptions, notes
and errors may wrap. Every value from the database goes through ``text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from midpay.output.layout import Column, columns, records
from midpay.output.text import iso, join, text, when

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from midpay.db.deliveries_log import Attempt, Delivery
    from midpay.db.endpoints import Endpoint

MAX_ERROR = 500
_DELIVERY_STYLE = {"pending": "yellow", "delivered": "green", "failed": "red"}


def _error(value: str | None) -> str | None:
    return value[:MAX_ERROR] if value is not None else None


# --- endpoints -------------------------------------------------------------------------


def endpoint_document(endpoint: Endpoint, *, secret: str | None = None) -> dict[str, Any]:
    """One endpoint as JSON; ``secret`` only from the commands that make one."""
    doc: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "previous_secret_until": iso(endpoint.previous_secret_until),
        "created_at": iso(endpoint.created_at),
    }
    if secret is not None:
        doc["secret"] = secret
    return doc


ENDPOINT_COLUMNS = columns("id", "state", "events", "url", "description", "note", folded=("description", "note"))


def _note(endpoint: Endpoint) -> str:
    notes = []
    if not endpoint.enabled and endpoint.disabled_reason:
        notes.append(endpoint.disabled_reason)
    if endpoint.previous_secret_until is not None:
        notes.append(f"the previous secret signs too until {when(endpoint.previous_secret_until)}")
    return "; ".join(notes)


def _endpoint_row(endpoint: Endpoint) -> list[Text]:
    return [
        text(endpoint.id), text("enabled" if endpoint.enabled else "disabled", "" if endpoint.enabled else "red"),
        text(",".join(endpoint.events)), text(endpoint.url), text(endpoint.description, missing=""),
        text(_note(endpoint), missing=""),
    ]


def render_endpoints(con: Console, endpoints: Sequence[Endpoint]) -> None:
    records(con, ENDPOINT_COLUMNS, [_endpoint_row(e) for e in endpoints], title="Endpoints (times in WIB)",
            empty="No endpoints. Add one with `midpay endpoints add URL`.")


def render_endpoint(con: Console, endpoint: Endpoint, *, headline: str, secret: str | None = None) -> None:
    """``headline`` (code's words), the endpoint, and the secret when it is handed over."""
    from rich.text import Text

    con.print(Text(headline))
    render_endpoints(con, [endpoint])
    if secret is not None:
        con.print(Text("Signing secret (shown once, never again: keep it where your app verifies signatures):"))
        con.print(Text(secret), soft_wrap=True)


# --- deliveries ------------------------------------------------------------------------


def attempt_document(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempted_at": iso(attempt.attempted_at),
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": _error(attempt.error),
    }


def delivery_document(delivery: Delivery, *, attempts: Sequence[Attempt] | None = None) -> dict[str, Any]:
    """One delivery as JSON; with ``attempts``, every attempt too (``attempt_log``, oldest first)."""
    doc: dict[str, Any] = {
        "event_id": delivery.event_id,
        "endpoint_id": delivery.endpoint_id,
        "order_id": delivery.order_id,
        "type": delivery.type,
        "sequence": delivery.sequence,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": _error(delivery.last_error),
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "delivered_at": iso(delivery.delivered_at),
    }
    if attempts is not None:
        doc["attempt_log"] = [attempt_document(a) for a in attempts]
    return doc


DELIVERY_COLUMNS = (
    Column("event id"),
    Column("endpoint"),
    Column("order id"),
    Column("#", justify="right"),
    Column("type"),
    Column("status"),
    Column("tries", justify="right"),
    Column("code", justify="right"),
    Column("next attempt"),
    Column("delivered"),
    Column("last error", fold=True),
)
ATTEMPT_COLUMNS = (
    Column("event id"),
    Column("endpoint"),
    Column("attempted"),
    Column("code", justify="right"),
    Column("ms", justify="right"),
    Column("error", fold=True),
)


def _delivery_row(d: Delivery) -> list[Text]:
    return [
        text(d.event_id), text(d.endpoint_id), text(d.order_id), text(d.sequence), text(d.type),
        text(d.status, _DELIVERY_STYLE.get(d.status, "")), text(d.attempts), text(d.last_status_code),
        text(when(d.next_attempt_at) if d.status == "pending" else "-"), text(when(d.delivered_at)),
        text(_error(d.last_error), missing=""),
    ]


def render_deliveries(
    con: Console, deliveries: Sequence[Delivery], *, attempts: dict[tuple[str, str], list[Attempt]] | None = None,
    title: str = "Deliveries (times in WIB)", empty: str = "No deliveries match.",
) -> None:
    """The deliveries; with ``attempts``, then every attempt of each, oldest first."""
    records(con, DELIVERY_COLUMNS, [_delivery_row(d) for d in deliveries], title=title, empty=empty)
    if attempts is None or not deliveries:
        return
    rows = [
        [text(a.event_id), text(a.endpoint_id), text(when(a.attempted_at)), text(a.status_code),
         text(a.duration_ms), text(_error(a.error), missing="")]
        for d in deliveries for a in attempts.get((d.event_id, d.endpoint_id), [])
    ]
    con.print()
    records(con, ATTEMPT_COLUMNS, rows, title="Attempts (times in WIB, oldest first)", empty="No attempts yet.")


def resend_document(queued: Sequence[Delivery], in_flight: Sequence[Delivery]) -> dict[str, Any]:
    return {
        "queued": [delivery_document(d) for d in queued],
        "in_flight": [delivery_document(d) for d in in_flight],
    }


def render_resent(con: Console, queued: Sequence[Delivery], in_flight: Sequence[Delivery]) -> None:
    if queued:
        con.print(join(f"Queued again: {len(queued)} deliver{'y' if len(queued) == 1 else 'ies'}, due now "
                       "(`midpay deliver` sends them; their attempts are kept)."))
        render_deliveries(con, queued, title="Queued again")
    else:
        con.print(join("Nothing to send again."))
    if in_flight:
        con.print(join(f"Left as they are: {len(in_flight)} being sent right now by `midpay deliver`."))
        render_deliveries(con, in_flight, title="Being sent now")
