"""Ask Midtrans about one payment and apply its answer: ``status``, ``charge --wait`` and each row of ``reconcile``.

``ask`` is the one place that reads a Get Status answer about a stored payment: the
answer must name the order asked about and fit the columns it will be written to;
``check`` then applies it through the one path for answers (``answers.apply_batch``,
a batch of one), as reconcile applies its batches. A ``created`` row that Midtrans does not know is
left alone for ``grace`` seconds (the charge may still be on its way), then ends as
``failure``; any other open row Midtrans does not know is an error for that row.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from midpay import db, states
from midpay.db import schema
from midpay.errors import (
    DataConflict,
    GatewayError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    TransactionNotFound,
)
from midpay.midtrans.notifications import TransactionView, parse_view
from midpay.payments import storable
from midpay.payments.answers import Answered, Checked, apply_batch, preview_batch
from midpay.payments.transition import needs_write, synthetic_failure
from midpay.refunds.ledger import wants_refresh

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

# A `created` row Midtrans has never heard of, this long after its insert, is a charge
# that never arrived: well past the five-minute life of its Idempotency-Key.
CREATED_GRACE_SECONDS = 600.0

Connections = Callable[[], AbstractContextManager[db.Connection]]


def check(
    connections: Connections,
    gateway: Gateway,
    payment: db.Payment,
    *,
    grace: float = CREATED_GRACE_SECONDS,
    dry_run: bool = False,
) -> Checked:
    """Ask Midtrans about ``payment`` and apply the answer (module docstring).

    Raises when Midtrans could not be asked (GatewayError, GatewayAuthError) or
    PostgreSQL was lost (DatabaseUnavailable); a row-level problem comes back in
    ``problem``. ``connections()`` gives a connection only when one is needed: an
    answer that changes nothing writes nothing.
    """
    asked = ask(gateway, payment, grace=grace, dry_run=dry_run)
    if isinstance(asked, Checked):
        return asked
    before, answered = payment.status, [Answered(payment, asked)]
    with connections() as conn:
        if dry_run:
            [written] = preview_batch(conn, answered)
        else:
            try:
                with conn.transaction():  # its own transaction: the apply must commit, not nest in a savepoint
                    layout = schema.layout(conn, conn.info.dsn)
                storable.check_view(layout, asked, what="Midtrans' status answer")
            except InvalidPayload as exc:
                return Checked(before, before, exc, asked)
            [written] = apply_batch(conn, answered, answers=True)
    if written.checked is None:  # the write itself failed (a deadlock, a value PostgreSQL refused)
        return Checked(before, before, DataConflict(f"order {payment.order_id} {written.failure}"), asked)
    return written.checked


def ask(
    gateway: Gateway,
    payment: db.Payment,
    *,
    grace: float = CREATED_GRACE_SECONDS,
    dry_run: bool = False,
    layout: schema.Layout | None = None,
) -> Checked | TransactionView:
    """Ask Midtrans about ``payment`` and read its answer, touching no database.

    Returns what ``check`` would return when nothing needs writing (an answer that
    repeats the row, a problem with the answer, a ``created`` row still in its grace
    period), else the answer's view, for the apply path. With ``layout`` the view is
    also checked against the columns it will be written to. Raises as ``check`` does.
    """
    before = payment.status
    try:
        answer = gateway.status(payment.order_id)
    except TransactionNotFound:
        if states.normalize(before) != states.CREATED:
            return Checked(before, before, MidtransRejected(
                f"Midtrans does not know order {payment.order_id} (404) although it is {before} here", "404"
            ))
        if (datetime.now(UTC) - payment.created_at).total_seconds() < grace:
            return Checked(before, before)  # Midtrans may still be processing the charge
        return synthetic_failure(
            payment, "404", "the charge never reached Midtrans (unknown there after the grace period)", {}
        )
    try:
        view = parse_view(answer, what="status answer")
    except InvalidPayload as exc:
        return Checked(before, before, exc)
    # An answer that repeats what the row holds needs no transaction, unless it reports
    # refunds: those may still bring the ledger news (db.sync_ledger, in the apply path).
    if not dry_run and not needs_write(payment, view) and not ({"refunds", "refund_amount"} & answer.keys()):
        return Checked(before, before, view=view)
    if layout is not None and not dry_run:
        try:
            storable.check_view(layout, view, what="Midtrans' status answer")
        except InvalidPayload as exc:
            return Checked(before, before, exc, view)
    return view


@dataclass(frozen=True)
class RefreshOutcome:
    """A payment after asking Midtrans about it, and what went wrong asking, if anything."""

    payment: db.Payment
    view: TransactionView | None = None
    error: MidpayError | None = None


def refresh(
    conn: db.Connection,
    gateway: Gateway | None,
    order_id: str,
    *,
    grace: float = CREATED_GRACE_SECONDS,
) -> RefreshOutcome:
    """Read one payment; when it is unsettled (or its refunds are, ``ledger.wants_refresh``) and a
    gateway is given, apply Midtrans' answer.

    A refused or unusable answer, or Midtrans out of reach, comes back in ``error``
    with the payment as stored; a lost PostgreSQL or a refused server key raises.
    """
    payment = db.get_payment(conn, order_id)
    conn.commit()
    if payment is None:
        raise NotFoundError.order(order_id)
    wanted = gateway is not None and wants_refresh(conn, payment)
    conn.commit()  # check() and the apply path open transactions of their own
    if gateway is None or not wanted:
        return RefreshOutcome(payment)
    from midpay.errors import GatewayAuthError

    try:
        checked = check(lambda: nullcontext(conn), gateway, payment, grace=grace)
    except GatewayAuthError:
        raise
    except GatewayError as exc:
        return RefreshOutcome(payment, error=exc)
    current = checked.payment
    if current is None and checked.status_after != checked.status_before:
        current = db.get_payment(conn, order_id)
        conn.commit()
    return RefreshOutcome(current or payment, checked.view, checked.problem)


@dataclass(frozen=True)
class Waited:
    """How ``wait_final`` ended: the payment as last seen, whether it is final, the last refusal if any."""

    payment: db.Payment
    final: bool
    last_error: MidpayError | None
    polls: int


def wait_final(
    conn: db.Connection,
    gateway: Gateway,
    order_id: str,
    *,
    deadline: float,
    interval: float = 2.0,
    on_poll: Callable[[db.Payment], None] | None = None,
    on_refusal: Callable[[MidpayError, int], None] | None = None,
) -> Waited:
    """Poll Midtrans about ``order_id`` until the payment is final or the monotonic ``deadline`` passes.

    Each answer that could not be used (refused, malformed, Midtrans out of reach) is
    passed to ``on_refusal`` with the poll's number; a refused server key or a lost
    PostgreSQL raises at once.
    """
    import time

    polls = 0
    last_error: MidpayError | None = None
    while True:
        polls += 1
        outcome = refresh(conn, gateway, order_id)
        last_error = outcome.error
        if outcome.error is not None and on_refusal is not None:
            on_refusal(outcome.error, polls)
        if states.normalize(outcome.payment.status) not in states.UNSETTLED_STATES:
            return Waited(outcome.payment, True, None, polls)
        if on_poll is not None:
            on_poll(outcome.payment)
        left = deadline - time.monotonic()
        if left <= 0:
            return Waited(outcome.payment, False, last_error, polls)
        time.sleep(min(interval, left))
