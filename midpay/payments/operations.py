"""Operator use cases: look at payments and stored notifications; cancel or expire a payment.

This module owns transaction boundaries and returns data; it never prints. Every
change to a payment goes through ``transition.apply_answer``, fed with Midtrans' own answer,
and no transaction is held open while Midtrans is being asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from midpay import db, states
from midpay.errors import MidtransRejected, NotFoundError, TransactionNotFound, UsageError, midtrans_failures
from midpay.payments.transition import ApplyResult, answer_view, apply_answer

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

_DURATION = re.compile(r"([0-9]{1,9})\s*([smhdw])", re.ASCII)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# --- views -----------------------------------------------------------------------------


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A moment from ``2026-11-26``, ``2026-11-26T10:00:00+07:00`` or a duration ago (``30m``, ``2h``, ``7d``).

    Durations take s, m, h, d or w. A date or time without an offset is Jakarta time (WIB),
    the zone every table shows, whatever the machine's own zone.
    """
    raw = text.strip()
    moment: datetime | None = None
    try:
        duration = _DURATION.fullmatch(raw.lower())
        if duration is not None:
            ago = timedelta(seconds=int(duration.group(1)) * _SECONDS[duration.group(2)])
            moment = (now or datetime.now(UTC)) - ago
        elif raw:
            moment = datetime.fromisoformat(raw)
            if moment.tzinfo is None:
                from midpay.midtrans.notifications import JAKARTA

                moment = moment.replace(tzinfo=JAKARTA)
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise UsageError(
            f"--since must be a date or time (2026-11-26, 2026-11-26T10:00:00+07:00) "
            f"or a duration like 30m, 2h, 7d; not {text[:40]!r}"
        )
    return moment


_GROUPED = re.compile(r"[1-9][0-9]{0,2}(?:([.,])[0-9]{3})(?:\1[0-9]{3})*", re.ASCII)


def parse_amount(text: str, option: str = "--amount") -> int:
    """Whole rupiah from ``25000``; ``25.000`` or ``25,000`` (digits grouped) get a hint instead of a guess."""
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        return int(raw)
    if _GROUPED.fullmatch(raw):
        digits = re.sub(r"[.,]", "", raw)
        raise UsageError(
            f"{option} takes whole rupiah without separators: write {option} {digits} for Rp {raw.replace(',', '.')}"
        )
    shown = raw[:40]
    raise UsageError(f"{option} must be a whole number of rupiah, e.g. {option} 25000; not {shown!r}")


def status_filter(status: str | None) -> str | None:
    """A ``--status`` value as stored (lower case), or a usage error naming the known states."""
    if status is None:
        return None
    if not states.is_known(status):
        raise UsageError(f"--status must be one of {', '.join(states.ALL_STATES)}; not {status[:40]!r}")
    return states.normalize(status)


def list_payments(
    conn: db.Connection, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[db.Payment]:
    """The most recent payments first, optionally of one status and created since a moment."""
    status = status_filter(status)
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    with conn.transaction():
        return db.list_payments(conn, status=status, since=since, limit=limit)


def list_events(
    conn: db.Connection, *, order_id: str | None = None, rejected_only: bool = False, limit: int = 50
) -> list[db.WebhookEvent]:
    """Stored notifications, newest first; ``rejected_only`` keeps those not processed."""
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    with conn.transaction():
        return db.list_events(conn, order_id=order_id, rejected_only=rejected_only, limit=limit)



def get_payment(conn: db.Connection, order_id: str) -> db.Payment:
    """The stored payment of ``order_id``, or NotFoundError."""
    with conn.transaction():
        payment = db.get_payment(conn, order_id)
    if payment is None:
        raise NotFoundError.order(order_id)
    return payment


# --- cancel and expire -----------------------------------------------------------------


@dataclass(frozen=True)
class ActionOutcome:
    """A payment after Midtrans' answer to cancel or expire was applied."""

    payment: db.Payment
    result: ApplyResult


def cancel(conn: db.Connection, gateway: Gateway, order_id: str) -> ActionOutcome:
    """Ask Midtrans to cancel a pending payment, then apply its answer."""
    return _end(conn, gateway, order_id, "cancel")


def expire(conn: db.Connection, gateway: Gateway, order_id: str) -> ActionOutcome:
    """Ask Midtrans to expire a pending payment now, then apply its answer."""
    return _end(conn, gateway, order_id, "expire")


def _end(conn: db.Connection, gateway: Gateway, order_id: str, action: str) -> ActionOutcome:
    payment = get_payment(conn, order_id)
    call = gateway.cancel if action == "cancel" else gateway.expire
    try:
        with midtrans_failures(
            f"no answer from Midtrans to the {action} of order {order_id}; it may or may not have taken effect: "
            f"run `midpay status {order_id}` to see",
            f"order {order_id} was not changed here",
        ):
            answer = call(order_id)
    except TransactionNotFound as exc:
        raise NotFoundError(
            f"Midtrans does not know order {order_id} (it is {payment.status} here): nothing to {action}"
        ) from exc
    except MidtransRejected as exc:
        raise MidtransRejected(
            f"{exc}; it is {payment.status} here (see `midpay status {order_id}`)",
            exc.status_code,
            exc.body,
        ) from exc
    result = apply_answer(conn, order_id, answer_view(answer, order_id, f"{action} answer"))
    assert result.payment is not None
    return ActionOutcome(result.payment, result)

