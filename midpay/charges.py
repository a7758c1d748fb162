"""``charge``: insert the ``created`` row, commit it, ask Midtrans, apply the answer.

A timeout after sending leaves the row ``created`` (OutcomeUnknown): ``status`` and
``reconcile`` settle it later, and it is never charged twice. A refusal ends the row
as ``failure``, Midtrans' answer kept.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from midpay import db
from midpay.apply import apply_answer, synthetic_failure
from midpay.errors import GatewayAuthError, GatewayError, MidtransRejected, OutcomeUnknown, UsageError
from midpay.notifications import TransactionView, parse_view

if TYPE_CHECKING:
    from midpay.gateway import Gateway

MAX_ORDER_ID = 50
_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,49}$")



def new_order_id() -> str:
    """A unique, Midtrans-safe order id: ``mp-YYYYMMDDHHMMSS-`` and 10 random hex digits."""
    return f"mp-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(5)}"


def validate_order_id(order_id: str) -> str:
    """An order id Midtrans and URLs accept: letters, digits, ``-_.~``, at most 50."""
    if not _ORDER_ID.fullmatch(order_id):
        raise UsageError(
            f"invalid order id {order_id[:60]!r}: use 1-{MAX_ORDER_ID} letters, digits, '-', '_', '.' or '~', "
            "starting with a letter or digit"
        )
    return order_id


def validate_amount(amount: int) -> int:
    """A positive whole number of rupiah that fits the integer column."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise UsageError(f"amount must be a positive whole number of rupiah, not {amount!r}")
    if amount > 2_147_483_647:
        raise UsageError(f"amount {amount} is larger than midpay can store")
    return amount


@dataclass(frozen=True)
class ChargeOutcome:
    """The stored payment after a charge, and Midtrans' answer."""

    payment: db.Payment
    view: TransactionView | None


def charge(
    conn: db.Connection,
    gateway: Gateway,
    *,
    amount: int,
    order_id: str | None = None,
    user_id: int | None = None,
    qris: bool = False,
    idempotency_key: str | None = None,
) -> ChargeOutcome:
    """Insert the ``created`` row and commit it, then ask Midtrans to charge, then apply the answer.

    A timeout after sending leaves the row ``created`` (OutcomeUnknown): ``status``
    and ``reconcile`` settle it later. A refusal ends the row as ``failure``.
    """
    amount = validate_amount(amount)
    order_id = validate_order_id(order_id) if order_id is not None else new_order_id()
    payment_type = "qris" if qris else "gopay"
    with conn.transaction():
        payment = db.insert_payment(
            conn, order_id=order_id, gross_amount=amount, payment_type=payment_type, user_id=user_id
        )
    if payment is None:
        raise UsageError(f"order {order_id} already exists; see `midpay status {order_id}`")
    key = idempotency_key or str(uuid.uuid4())
    try:
        answer = gateway.charge(
            order_id=order_id, gross_amount=amount, payment_type=payment_type, idempotency_key=key
        )
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(
            f"no answer from Midtrans for order {order_id}; the charge may or may not exist. "
            f"It stays `created` and is never charged again: run `midpay status {order_id}` to settle it"
        ) from exc
    except GatewayAuthError as exc:
        apply_answer(conn, order_id, synthetic_failure(payment, "401", str(exc), {}))
        raise
    except MidtransRejected as exc:
        result = apply_answer(conn, order_id, synthetic_failure(payment, exc.status_code, str(exc), dict(exc.body)))
        raise MidtransRejected(
            f"Midtrans refused order {order_id} ({exc.status_code}): {exc}; it is now {result.status_after}",
            exc.status_code,
            exc.body,
        ) from exc
    except GatewayError as exc:
        raise type(exc)(
            f"{exc}; order {order_id} stays `created`: run `midpay status {order_id}` once Midtrans answers"
        ) from exc
    view = parse_view(answer, what="charge answer")
    result = apply_answer(conn, order_id, view)
    assert result.payment is not None
    return ChargeOutcome(result.payment, view)

