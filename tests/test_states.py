"""midpay.states: the forward-only transition rule, checked pair by pair against CONTRACT.md.

The expected table below is written from the contract's rule text, not read from the
module, so a change to ``states._FORWARD`` that drifts from the contract fails here.
"""

from __future__ import annotations

import itertools

import pytest

from midpay import states
from midpay.states import Decision, decide

# Every state the contract names, in its own words: `created` plus Midtrans' lower-cased
# transaction_status values (with `authorize`, "if it ever appears").
CONTRACT_STATES = {
    "created", "pending", "authorize", "capture", "settlement", "deny", "cancel", "expire", "failure",
    "partial_refund", "refund",
}
MIDTRANS = CONTRACT_STATES - {"created"}

# The moves that are applied (CONTRACT.md "Payment states"; `authorize` beside `pending`
# as the module docstring says). Everything not listed is UNCHANGED when it is the same
# state again, REFUSED otherwise.
FORWARD: dict[str, set[str]] = {
    # a notification can beat the charge response: any Midtrans state directly
    "created": set(MIDTRANS),
    # ... and "Midtrans may report a created or pending row directly as partial_refund or
    # refund (paid, then refunded, while notifications were lost)"; authorize beside pending
    "pending": {
        "settlement", "capture", "deny", "cancel", "expire", "failure", "authorize", "partial_refund", "refund",
    },
    "authorize": {"settlement", "capture", "deny", "cancel", "expire", "failure", "partial_refund", "refund"},
    "capture": {"settlement", "partial_refund", "refund"},
    "settlement": {"partial_refund", "refund"},
    # partial_refund may repeat
    "partial_refund": {"partial_refund", "refund"},
    # deny, cancel, expire, failure, refund: nothing moves out of them
}


def expected(current: str, new: str) -> Decision:
    if new == "created":
        # `created` is ours, never a Midtrans answer: a status or notification that says
        # `created` is nonsense and is refused, even when the row is still `created`.
        return Decision.REFUSED
    if new in FORWARD.get(current, set()):
        return Decision.APPLY
    if new == current:
        return Decision.UNCHANGED
    return Decision.REFUSED


PAIRS = list(itertools.product(sorted(CONTRACT_STATES), repeat=2))


def test_module_knows_exactly_the_contract_states() -> None:
    assert set(states.ALL_STATES) == CONTRACT_STATES
    assert len(states.ALL_STATES) == len(CONTRACT_STATES)  # no duplicates
    assert set(states.MIDTRANS_STATES) == MIDTRANS


def test_pairs_cover_every_ordered_pair() -> None:
    assert len(PAIRS) == len(states.ALL_STATES) ** 2 == 121
    assert set(PAIRS) == set(itertools.product(states.ALL_STATES, repeat=2))


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{c}->{n}" for c, n in PAIRS])
def test_decide_every_pair(current: str, new: str) -> None:
    assert decide(current, new) is expected(current, new)


@pytest.mark.parametrize(
    ("current", "new", "decision"),
    [
        # the contract's named examples
        ("created", "pending", Decision.APPLY),
        ("pending", "settlement", Decision.APPLY),
        ("capture", "settlement", Decision.APPLY),
        ("settlement", "partial_refund", Decision.APPLY),
        ("partial_refund", "partial_refund", Decision.APPLY),
        ("partial_refund", "refund", Decision.APPLY),
        ("created", "settlement", Decision.APPLY),
        ("settlement", "pending", Decision.REFUSED),  # a late pending after settlement
        ("settlement", "expire", Decision.REFUSED),
        ("expire", "settlement", Decision.REFUSED),
        ("deny", "pending", Decision.REFUSED),
        ("refund", "partial_refund", Decision.REFUSED),
        ("settlement", "capture", Decision.REFUSED),
        ("pending", "pending", Decision.UNCHANGED),
        ("settlement", "settlement", Decision.UNCHANGED),
        ("refund", "refund", Decision.UNCHANGED),
        ("created", "created", Decision.REFUSED),
        # refunded after lost notifications
        ("pending", "refund", Decision.APPLY),
        ("pending", "partial_refund", Decision.APPLY),
        ("created", "refund", Decision.APPLY),
        ("expire", "refund", Decision.REFUSED),
    ],
)
def test_contract_examples(current: str, new: str, decision: Decision) -> None:
    assert decide(current, new) is decision


def test_nothing_ever_moves_into_created() -> None:
    for current in states.ALL_STATES:
        assert decide(current, "created") is Decision.REFUSED


def test_final_states_only_repeat() -> None:
    for current in ("deny", "cancel", "expire", "failure", "refund"):
        for new in states.ALL_STATES:
            want = Decision.UNCHANGED if new == current else Decision.REFUSED
            assert decide(current, new) is want, (current, new)


def test_no_apply_leads_backwards_into_pending_once_paid() -> None:
    for current in ("settlement", "capture", "partial_refund", "refund"):
        assert decide(current, "pending") is Decision.REFUSED
        assert decide(current, "authorize") is Decision.REFUSED


@pytest.mark.parametrize(
    ("current", "new", "decision"),
    [
        ("pending", "SETTLEMENT", Decision.APPLY),
        ("created", " Pending ", Decision.APPLY),
        ("PENDING", "settlement", Decision.APPLY),
        (" Settlement\n", "\tsettlement ", Decision.UNCHANGED),
        ("Settlement", "PENDING", Decision.REFUSED),
        ("CREATED", "Partial_Refund", Decision.APPLY),
    ],
)
def test_decide_normalizes_case_and_whitespace(current: str, new: str, decision: Decision) -> None:
    assert decide(current, new) is decision


def test_normalize() -> None:
    assert states.normalize("SETTLEMENT") == "settlement"
    assert states.normalize(" Pending ") == "pending"
    assert states.is_known(" Partial_Refund ")
    assert not states.is_known("chargeback")
    assert not states.is_known("")


@pytest.mark.parametrize("unknown", ["chargeback", "", "   ", "settled", "paid", "partial-refund", "null"])
def test_unknown_new_state_is_refused(unknown: str) -> None:
    for current in states.ALL_STATES:
        assert decide(current, unknown) is Decision.REFUSED, current


@pytest.mark.parametrize("unknown", ["chargeback", "", "bogus"])
def test_unknown_current_state_never_applies(unknown: str) -> None:
    for new in (*states.ALL_STATES, unknown):
        assert decide(unknown, new) is Decision.REFUSED, new


OPEN = {"created", "pending", "authorize", "capture"}
FINAL = {"deny", "cancel", "expire", "failure", "refund"}
PAID = {"settlement", "capture"}
UNSETTLED = {"created", "pending", "authorize"}


def test_state_sets() -> None:
    assert set(states.OPEN_STATES) == OPEN
    assert set(states.FINAL_STATES) == FINAL
    assert set(states.PAID_STATES) == PAID
    assert set(states.UNSETTLED_STATES) == UNSETTLED
    assert not OPEN & FINAL


@pytest.mark.parametrize("state", sorted(CONTRACT_STATES))
def test_is_open_and_is_final(state: str) -> None:
    assert states.is_open(state) is (state in OPEN)
    assert states.is_final(state) is (state in FINAL)
    # normalized the same way decide() normalizes
    assert states.is_open(f" {state.upper()} ") is (state in OPEN)
    assert states.is_final(f" {state.upper()} ") is (state in FINAL)


def test_is_open_and_is_final_unknown() -> None:
    for unknown in ("chargeback", ""):
        assert not states.is_open(unknown)
        assert not states.is_final(unknown)


def test_final_means_no_way_forward() -> None:
    """A state is final exactly when decide() applies nothing from it (and it is not `created`)."""
    for current in states.ALL_STATES:
        can_move = any(decide(current, new) is Decision.APPLY for new in states.ALL_STATES)
        assert states.is_final(current) is (not can_move), current


def test_paid_states_reachable_from_open_states() -> None:
    for paid in PAID:
        assert decide("pending", paid) is Decision.APPLY
        assert decide("created", paid) is Decision.APPLY


# --- fraud_status: what Midtrans' pair means ----------------------------------------------

FRAUD_VALUES = [None, "", "accept", "ACCEPT", " Accept ", "challenge", "deny", "review"]


def expected_recorded(status: str, fraud: str | None) -> str | None:
    """CONTRACT.md: paid means settlement, or capture with fraud_status accept or absent."""
    f = (fraud or "").strip().lower()
    money = {"settlement", "capture", "partial_refund", "refund"}
    if status not in money or f in ("", "accept"):
        return status
    if status == "capture" and f == "challenge":
        return "pending"  # the fraud check has not decided: not paid
    return None  # the pair contradicts itself: nothing applied


FRAUD_PAIRS = [(s, f) for s in sorted(MIDTRANS) for f in FRAUD_VALUES]


@pytest.mark.parametrize(("status", "fraud"), FRAUD_PAIRS, ids=[f"{s}+{f}" for s, f in FRAUD_PAIRS])
def test_recorded_state_every_status_and_fraud_status(status: str, fraud: str | None) -> None:
    assert states.recorded_state(status, fraud) == expected_recorded(status, fraud)


@pytest.mark.parametrize(
    ("status", "fraud", "paid"),
    [
        ("settlement", None, True),
        ("settlement", "accept", True),
        ("capture", None, True),
        ("capture", "accept", True),
        ("capture", "challenge", False),
        ("capture", "deny", False),
        ("settlement", "deny", False),
        ("settlement", "challenge", False),
        ("pending", "accept", False),
        ("deny", "deny", False),
        ("refund", None, False),  # paid once, given back: not money received now
        ("partial_refund", "accept", False),
        ("SETTLEMENT", " ACCEPT", True),
    ],
)
def test_is_paid(status: str, fraud: str | None, paid: bool) -> None:
    assert states.is_paid(status, fraud) is paid


def test_a_challenged_capture_never_moves_a_row_into_a_paid_state() -> None:
    for current in states.ALL_STATES:
        target = states.recorded_state("capture", "challenge")
        assert target == "pending"
        if decide(current, target) is Decision.APPLY:
            assert target not in states.PAID_STATES


def test_money_states_are_the_paid_ones_and_the_refunds() -> None:
    assert set(states.MONEY_STATES) == PAID | {"partial_refund", "refund"}
