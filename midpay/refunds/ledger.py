"""The refund ledger as it reads: what was refunded, what is left, whether to ask again; refund keys.

The rows are payment_refunds (``db.refunds``), kept in line with Midtrans by
``db.sync_ledger`` from the transition (``payments.transition``, with Midtrans' report
read by ``refunds.report``); ``refunds.command`` makes midpay's own refunds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from midpay import db, states

# Payments with money received and not all of it refunded.
REFUNDABLE_STATES: frozenset[str] = frozenset({states.SETTLEMENT, states.CAPTURE, states.PARTIAL_REFUND})


@dataclass(frozen=True)
class Ledger:
    """A payment's refunds and what they add up to."""

    payment: db.Payment
    rows: tuple[db.Refund, ...] = field(default=())

    @property
    def refunded(self) -> int:
        """What Midtrans has refunded, as far as midpay has seen."""
        return sum(r.amount for r in self.rows if r.status == "done")

    @property
    def in_flight(self) -> tuple[db.Refund, ...]:
        """Refunds asked for whose outcome midpay has not seen yet."""
        return tuple(r for r in self.rows if r.status == "requested")

    @property
    def refundable(self) -> int:
        """What is left to refund: nothing unless the payment is settled (or partly refunded)."""
        if self.payment.status not in REFUNDABLE_STATES:
            return 0
        return max(0, self.payment.gross_amount - self.refunded)


def ledger(conn: db.Connection, payment: db.Payment) -> Ledger:
    """The payment's ledger as stored."""
    return Ledger(payment, tuple(db.list_refunds(conn, payment.id)))


def ledgers(conn: db.Connection, payments: Iterable[db.Payment]) -> list[Ledger]:
    """The ledgers of several payments, in their order, in one query."""
    listed = list(payments)
    found = db.refunds_of(conn, [p.id for p in listed])
    return [Ledger(p, tuple(found.get(p.id, ()))) for p in listed]


def unsettled(rows: Iterable[db.Refund]) -> bool:
    """Whether midpay has yet to see some refund's outcome or its bank confirmation."""
    return any(
        r.status == "requested" or (r.status == "done" and r.bank_confirmed_at is None and r.origin != "unitemized")
        for r in rows
    )


def wants_refresh(conn: db.Connection, payment: db.Payment) -> bool:
    """Whether ``status`` should ask Midtrans about this payment before showing it.

    Unsettled payments; ``partial_refund`` ones (a refund may have been made elsewhere);
    and any with a refund whose outcome or bank confirmation midpay has not seen.
    """
    state = states.normalize(payment.status)  # another backend may store it upper-case
    if state in states.UNSETTLED_STATES or state == states.PARTIAL_REFUND:
        return True
    return unsettled(db.list_refunds(conn, payment.id))


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)
_KEY_STEM = 30  # the order id part of a refund_key; the rest is "-rf-N", within 46


def refund_key(order_id: str, number: int) -> str:
    """The refund_key of the ``number``-th refund of an order: ``{order_id}-rf-{number}``.

    Midtrans takes letters, digits, '-' and '_' only. An order id with other characters,
    or longer than 30, is cleaned and cut, and a hash of the full id keeps it unique.
    """
    stem = _KEY_UNSAFE.sub("_", order_id)
    if stem != order_id or len(stem) > _KEY_STEM:
        digest = hashlib.sha256(order_id.encode()).hexdigest()[:8]
        stem = f"{stem[: _KEY_STEM - 9]}-{digest}"
    return f"{stem}-rf-{number}"
