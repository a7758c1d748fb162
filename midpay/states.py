"""Payment states and the forward-only transition rule. Pure: no I/O.

    created -> pending -> settlement | capture | deny | cancel | expire | failure
    capture -> settlement
    settlement | capture -> partial_refund -> refund      (partial_refund may repeat)
    created -> any later state directly (a notification can beat the charge response)

``authorize`` (cards only, never seen for GoPay/QRIS) sits beside ``pending``: it may
follow ``created`` or ``pending`` and moves on like ``pending`` does. Anything else is
refused: it is kept on record by the caller and reported, never applied.
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
# Money was received: the first move into one of these sets `paid_at`.
PAID_STATES: frozenset[str] = frozenset({SETTLEMENT, CAPTURE})

_OUTCOMES = frozenset({SETTLEMENT, CAPTURE, DENY, CANCEL, EXPIRE, FAILURE})

_FORWARD: dict[str, frozenset[str]] = {
    CREATED: MIDTRANS_STATES,
    PENDING: _OUTCOMES | {AUTHORIZE},
    AUTHORIZE: _OUTCOMES,
    CAPTURE: frozenset({SETTLEMENT, PARTIAL_REFUND, REFUND}),
    SETTLEMENT: frozenset({PARTIAL_REFUND, REFUND}),
    PARTIAL_REFUND: frozenset({PARTIAL_REFUND, REFUND}),
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


def is_open(status: str) -> bool:
    """Whether reconcile should still ask Midtrans about a row in this state."""
    return normalize(status) in OPEN_STATES


def is_final(status: str) -> bool:
    """Whether nothing can move this state any more."""
    return normalize(status) in FINAL_STATES
