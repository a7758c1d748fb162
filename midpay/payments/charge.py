"""``charge``: insert the ``created`` row, commit it, ask Midtrans, apply the answer; or resume one.

A charge that never reached Midtrans (connection refused, a 401, a wrong
MIDTRANS_API_URL: midpay's own trouble) or whose answer was lost (a timeout) leaves the
row ``created``. Running ``charge`` again with the same ``--order-id`` and amount
resumes it: Midtrans is asked for the order's status first, and only when it does not
know the order is the charge sent, with the row's own id as Idempotency-Key. Midtrans
answers a second charge of an order id it has with 406, so an order is never charged
twice. A refusal by Midtrans itself (406 on a new row, 400, …) ends the row as
``failure``, its answer kept.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from midpay import db, states
from midpay.db import schema
from midpay.errors import (
    ConfigError,
    DuplicateOrder,
    GatewayAuthError,
    GatewayError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    OutcomeUnknown,
    TransactionNotFound,
    UsageError,
)
from midpay.midtrans.notifications import TransactionView, parse_view
from midpay.payments import storable
from midpay.payments.transition import AnswerMismatch, apply_answer, synthetic_failure

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

MAX_ORDER_ID = 50
_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,49}$")
_TABLE = "payment_transactions"


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
    """The stored payment after a charge, Midtrans' answer, and whether an earlier attempt was resumed."""

    payment: db.Payment
    view: TransactionView | None
    resumed: bool = False
    note: str | None = None  # what resuming found, for the operator


def charge(
    conn: db.Connection,
    gateway: Gateway,
    *,
    amount: int,
    order_id: str | None = None,
    user_id: int | None = None,
    qris: bool = False,
) -> ChargeOutcome:
    """Charge a new order, or resume the ``created`` row of ``order_id`` (module docstring)."""
    amount = validate_amount(amount)
    order_id = validate_order_id(order_id) if order_id is not None else new_order_id()
    payment_type = "qris" if qris else "gopay"
    with conn.transaction():
        layout = schema.layout(conn, conn.info.dsn)
        # Integer ranges of this database's columns (lengths and NOT NULL: db.insert_payment).
        for column, value in (("user_id", user_id), ("gross_amount", amount)):
            problem = storable.column_problem(layout, _TABLE, column, value) if value is not None else None
            if problem is not None:
                raise UsageError(f"cannot store this payment: {problem}")
        payment = db.insert_payment(
            conn, order_id=order_id, gross_amount=amount, payment_type=payment_type, user_id=user_id
        )
    if payment is not None:
        return _send(conn, gateway, payment, resumed=False)
    existing = db.get_payment(conn, order_id)
    conn.commit()
    if existing is None:  # inserted and gone again in between: nothing sensible to resume
        raise UsageError(f"order {order_id} already exists; see `midpay status {order_id}`")
    _check_resumable(existing, amount=amount, payment_type=payment_type, user_id=user_id)
    try:
        answer = gateway.status(order_id)
    except TransactionNotFound:
        return _send(conn, gateway, existing, resumed=True)
    except GatewayError as exc:
        raise type(exc)(f"{exc}; order {order_id} stays `created`: {_again(existing)} once Midtrans answers") from exc
    payment = _apply(conn, existing, answer, what="status answer")
    return ChargeOutcome(
        payment, None, resumed=True,
        note=f"Midtrans already had order {order_id} ({payment.status}): nothing was charged again",
    )


def _check_resumable(existing: db.Payment, *, amount: int, payment_type: str, user_id: int | None) -> None:
    order_id = existing.order_id
    if states.normalize(existing.status) != states.CREATED:
        raise UsageError(f"order {order_id} already exists ({existing.status}); see `midpay status {order_id}`")
    differs = []
    if existing.gross_amount != amount:
        differs.append(f"amount {existing.gross_amount}, not {amount}")
    if existing.payment_type != payment_type:
        differs.append(f"payment type {existing.payment_type}, not {payment_type}")
    if user_id is not None and existing.user_id != user_id:
        differs.append(f"user id {existing.user_id}, not {user_id}")
    if differs:
        raise UsageError(
            f"order {order_id} was started with {', '.join(differs)}: resume it with the same values, "
            "or use another --order-id"
        )


def _again(payment: db.Payment) -> str:
    qris = " --qris" if payment.payment_type == "qris" else ""
    return f"run `midpay charge --order-id {payment.order_id} --amount {payment.gross_amount}{qris}` again"


def _send(conn: db.Connection, gateway: Gateway, payment: db.Payment, *, resumed: bool) -> ChargeOutcome:
    """POST the charge for a committed ``created`` row and apply the answer; the row's id is the Idempotency-Key."""
    order_id = payment.order_id
    try:
        answer = gateway.charge(
            order_id=order_id, gross_amount=payment.gross_amount, payment_type=payment.payment_type,
            idempotency_key=str(payment.id),
        )
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(
            f"no answer from Midtrans for order {order_id}; the charge may or may not exist. It stays `created` "
            f"and is never charged twice: {_again(payment)} (it asks Midtrans first) or `midpay status {order_id}`"
        ) from exc
    except GatewayAuthError as exc:
        raise GatewayAuthError(
            f"{exc}; order {order_id} stays `created`: once the key is right, {_again(payment)}"
        ) from exc
    except TransactionNotFound as exc:  # a 404 to the charge itself: the URL is wrong, not the order
        raise ConfigError(
            f"Midtrans answered 404 to the charge of order {order_id}: is MIDTRANS_API_URL right "
            f"({gateway.base_url})? The order stays `created`: {_again(payment)} once it is"
        ) from exc
    except MidtransRejected as exc:  # DuplicateOrder (406) too: the row ends `failure`, unless resuming
        if resumed and isinstance(exc, DuplicateOrder):
            return _duplicate_on_resume(conn, gateway, payment, exc)
        result = apply_answer(conn, order_id, synthetic_failure(payment, exc.status_code, str(exc), dict(exc.body)))
        raise type(exc)(
            f"Midtrans refused order {order_id} ({exc.status_code}): {exc}; it is now {result.status_after}",
            exc.status_code, exc.body,
        ) from exc
    except GatewayError as exc:
        raise type(exc)(f"{exc}; order {order_id} stays `created`: {_again(payment)} once Midtrans answers") from exc
    updated = _apply(conn, payment, answer, what="charge answer")
    return ChargeOutcome(updated, parse_view(answer, what="charge answer"), resumed=resumed)


def _duplicate_on_resume(
    conn: db.Connection, gateway: Gateway, payment: db.Payment, exc: DuplicateOrder
) -> ChargeOutcome:
    """Midtrans did not know the order a moment ago, yet refuses it as used: an earlier charge has just landed."""
    try:
        answer = gateway.status(payment.order_id)
    except TransactionNotFound:
        raise MidtransRejected(
            f"Midtrans refused order {payment.order_id} as used before (406) but does not report it; "
            f"it stays `created`: run `midpay status {payment.order_id}` in a minute",
            exc.status_code, exc.body,
        ) from exc
    updated = _apply(conn, payment, answer, what="status answer")
    return ChargeOutcome(
        updated, None, resumed=True,
        note=f"an earlier charge of order {payment.order_id} reached Midtrans ({updated.status}): not charged again",
    )


def _apply(conn: db.Connection, payment: db.Payment, answer: dict[str, Any], *, what: str) -> db.Payment:
    """Check Midtrans' answer about ``payment`` (its order, amount, columns) and apply it."""
    try:
        view = parse_view(answer, what=what)
        with conn.transaction():
            layout = schema.layout(conn, conn.info.dsn)
        storable.check_view(layout, view, what=f"Midtrans' {what}")
        result = apply_answer(conn, payment.order_id, view)
    except (InvalidPayload, AnswerMismatch) as exc:
        raise type(exc)(
            f"{exc}; order {payment.order_id} stays {payment.status}: see `midpay status {payment.order_id}`"
        ) from exc
    if result.payment is None:  # pragma: no cover - apply_answer always returns the row
        raise MidpayError(f"order {payment.order_id} vanished while it was being charged")
    return result.payment
