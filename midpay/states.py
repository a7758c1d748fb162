"""Payment states, what counts as paid, and the forward-only transition rule. Pure: no I/O.

    created -> pending -> settlement | capture | deny | cancel | expire | failure
    capture -> settlement
    settlement | capture -> partial_refund -> refund      (partial_refund may repeat)
    created -> any later state directly (a notification can beat the charge response)
    created | pending -> partial_refund | refund          (paid, then refunded, while
                                                           the notifications were lost)

``authorize`` (cards only, never seen for GoPay/QRIS) sits beside ``pending``: it may
follow ``created`` or ``pending`` and moves on like ``pending`` does. Anything else is
refused: it is kept on record by the caller and reported, never applied.

What Midtrans says is a pair, ``transaction_status`` and ``fraud_status``; the state
midpay records for it (``recorded_state``):

    settlement, capture, partial_refund, refund   with fraud_status accept or absent
                                                  -> that state (money was received)
    capture + challenge                           -> pending (the fraud check has not
                                                     decided yet: not paid)
    any of those four with deny, or another
    fraud_status (settlement + challenge, ...)    -> None: the pair contradicts itself,
                                                     nothing is applied, the row stays
                                                     as it is and the caller reports it
    pending, authorize, deny, cancel, expire,
    failure, whatever the fraud_status            -> that state (nothing was paid)

A settlement with fraud_status deny is left unapplied rather than recorded as either:
``settlement`` would count money Midtrans' fraud check rejected, ``deny`` would write a
final unpaid state over money Midtrans says it settled. Leaving the row alone keeps both
open; an open row stays due for reconcile, which asks again until the answer agrees
with itself.
"""

from __future__ import annotations

import enum

CREATED = "created"
PENDING = "pending"
AUTHORIZE = "authorize"
CAPTURE = "capture"
SETTLEMENT = "settlement"
DENY = "deny"
CANCEL = "cancel"
EXPIRE = "expire"
FAILURE = "failure"
PARTIAL_REFUND = "partial_refund"
REFUND = "refund"

ALL_STATES: tuple[str, ...] = (
    CREATED, PENDING, AUTHORIZE, CAPTURE, SETTLEMENT, DENY, CANCEL, EXPIRE, FAILURE, PARTIAL_REFUND, REFUND,
)
# Midtrans' own states: everything but our `created`.
MIDTRANS_STATES: frozenset[str] = frozenset(ALL_STATES) - {CREATED}

# Rows that reconcile keeps checking: Midtrans may still move them on.
OPEN_STATES: tuple[str, ...] = (CREATED, PENDING, AUTHORIZE, CAPTURE)
# Rows `status` refreshes without being asked: the customer has not finished yet.
UNSETTLED_STATES: frozenset[str] = frozenset({CREATED, PENDING, AUTHORIZE})
# Nothing moves these any more.
FINAL_STATES: frozenset[str] = frozenset({DENY, CANCEL, EXPIRE, FAILURE, REFUND})
# Money was received and is kept: the first move into one of these sets `paid_at`.
PAID_STATES: frozenset[str] = frozenset({SETTLEMENT, CAPTURE})
# Money was received at some point (and may have been given back since): a row in one
# of these has a `paid_at`, from Midtrans' settlement_time when it says when.
MONEY_STATES: frozenset[str] = PAID_STATES | {PARTIAL_REFUND, REFUND}

FRAUD_ACCEPT = "accept"
FRAUD_CHALLENGE = "challenge"
FRAUD_DENY = "deny"

_OUTCOMES = frozenset({SETTLEMENT, CAPTURE, DENY, CANCEL, EXPIRE, FAILURE})
# Refunded while every notification in between was lost: Midtrans reports the end.
_REFUNDED = frozenset({PARTIAL_REFUND, REFUND})

_FORWARD: dict[str, frozenset[str]] = {
    CREATED: MIDTRANS_STATES,
    PENDING: _OUTCOMES | _REFUNDED | {AUTHORIZE},
    AUTHORIZE: _OUTCOMES | _REFUNDED,
    CAPTURE: frozenset({SETTLEMENT, PARTIAL_REFUND, REFUND}),
    SETTLEMENT: _REFUNDED,
    PARTIAL_REFUND: _REFUNDED,
}


class Decision(enum.Enum):
    """What to do with Midtrans' view of a payment, given the stored state."""

    APPLY = "apply"  # moves forward: write it
    UNCHANGED = "unchanged"  # the same state again: nothing to do
    REFUSED = "refused"  # backwards or out of a final state: keep on record, report


def normalize(status: str) -> str:
    """Midtrans' transaction_status as midpay stores it (lower case, trimmed)."""
    return status.strip().lower()


def is_known(status: str) -> bool:
    """Whether ``status`` is a state midpay knows."""
    return normalize(status) in ALL_STATES


def decide(current: str, new: str) -> Decision:
    """Apply, ignore, or refuse the move from ``current`` to ``new``."""
    current, new = normalize(current), normalize(new)
    if new not in MIDTRANS_STATES:
        return Decision.REFUSED
    if new in _FORWARD.get(current, frozenset()):
        return Decision.APPLY
    if new == current:
        return Decision.UNCHANGED
    return Decision.REFUSED


def recorded_state(status: str, fraud_status: str | None) -> str | None:
    """The state midpay records for Midtrans' (transaction_status, fraud_status); None when they contradict.

    ``status`` must be one of Midtrans' states (the caller checks that first).
    """
    status = normalize(status)
    fraud = normalize(fraud_status) if fraud_status is not None else ""
    if status not in MONEY_STATES or fraud in ("", FRAUD_ACCEPT):
        return status
    if status == CAPTURE and fraud == FRAUD_CHALLENGE:
        return PENDING
    return None


def is_paid(status: str, fraud_status: str | None) -> bool:
    """Whether Midtrans' pair means the money is received: settlement, or capture accepted."""
    return recorded_state(status, fraud_status) in PAID_STATES


def is_open(status: str) -> bool:
    """Whether reconcile should still ask Midtrans about a row in this state."""
    return normalize(status) in OPEN_STATES


def is_final(status: str) -> bool:
    """Whether nothing can move this state any more."""
    return normalize(status) in FINAL_STATES
