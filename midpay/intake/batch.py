"""The intake's apply step for many orders at once: one transaction, one commit, few round trips.

``confirm`` applies the answers Midtrans gave about several orders together, and
``--offline`` the proofs of a whole batch of bodies, with exactly the decisions of
``intake.apply_confirmed`` and ``intake.apply_offline`` (offline, with the screening
too): only the transaction around them is shared. Rows are locked in order_id order, so two runs batching overlapping
orders wait for each other rather than deadlock. The bodies of one order are decided
in the order they came. Any failure rolls the whole batch back (nothing of it is
recorded); the caller then decides order by order, so that one bad order cannot take
the others with it. The bodies themselves were stored and committed before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from midpay import db, states
from midpay.db import intake as sql
from midpay.errors import MidpayError
from midpay.intake import pipeline as intake
from midpay.intake.pipeline import Decided
from midpay.intake.received import Item
from midpay.midtrans.notifications import TransactionView, proof
from midpay.payments.transition import ApplyResult, proven

Work = tuple[str, TransactionView | MidpayError, Sequence[Item]]


def apply_confirmed_many(conn: db.Connection, work: Sequence[Work], *, dry_run: bool = False) -> Decided:
    """Apply Midtrans' answer about each order to its bodies (``intake.apply_confirmed``), all in one transaction."""
    decided: Decided = []
    outcomes: list[sql.Outcome] = []
    unconfirmed: list[str] = []
    with conn.transaction(force_rollback=dry_run):
        for order_id, answer, items in sorted(work, key=lambda w: w[0]):
            found = intake.decide_confirmed(conn, order_id, answer, items)
            decided.extend(found)
            outcomes.extend(intake.outcome_row(i, r) for i, (_, r) in zip(items, found, strict=True))
            if any(r.outcome == "awaiting" for _, r in found):
                unconfirmed.append(order_id)
        if not dry_run:
            sql.record_outcomes(conn, outcomes)
            sql.mark_unconfirmed(conn, unconfirmed)
    return decided


def screen_and_apply_offline(conn: db.Connection, items: Sequence[Item], server_key: str, *, dry_run: bool = False
                             ) -> Decided:
    """Offline, a stored batch screened (``intake.screen``) and applied (``intake.apply_offline``) in one transaction.

    The rows are locked once, for both; then each order's final row is written and
    every body's outcome recorded, one statement each: four statements and a commit,
    whatever the batch's size.
    """
    writes: dict[str, sql.ProvenWrite] = {}
    with conn.transaction(force_rollback=dry_run):
        screened = intake.screen_in(conn, items, server_key, online=False, record=not dry_run,
                                    lookup=sql.lock_payments)
        decided = list(screened.decided)
        outcomes = screened.outcomes
        for order_id in sorted(screened.candidates):
            found = screened.candidates[order_id]
            state = screened.payments.get(order_id)
            assert state is None or isinstance(state, sql.PaymentState)
            mine = _decide_offline(order_id, state, found, writes)
            decided.extend(mine)
            if not dry_run:
                outcomes.extend(intake.outcome_row(i, r) for i, (_, r) in zip(found, mine, strict=True))
        sql.write_proven(conn, list(writes.values()))
        sql.record_outcomes(conn, outcomes)
    return decided


def _decide_offline(order_id: str, payment: sql.PaymentState | None, items: Sequence[Item],
                    writes: dict[str, sql.ProvenWrite]) -> Decided:
    """``intake.decide_offline``, with each row's writes gathered into ``writes`` instead of sent."""
    decided: Decided = []
    for item in items:
        assert item.view is not None
        if payment is None:
            decided.append((item.seq, intake.make_result(item, "rejected", f"unknown order: {order_id}")))
            continue
        proven = proof(item.view.status_code)
        applied, payment = proven_step(payment, proven.state, exact=proven.exact, writes=writes)
        if proven.exact:
            outcome = "applied" if applied.applied else "unchanged"
            decided.append((item.seq, intake.make_result(item, outcome, applied=applied)))
        else:
            reason = f"awaiting confirmation: {proven.unproven}"
            decided.append((item.seq, intake.make_result(item, "awaiting", reason, applied=applied)))
    return decided


def proven_step(payment: sql.PaymentState, state: str | None, *, exact: bool,
                writes: dict[str, sql.ProvenWrite]) -> tuple[ApplyResult, sql.PaymentState]:
    """``apply.apply_proven``'s rule (``apply.proven``), with its write recorded in ``writes`` (by order id).

    Nothing unsigned is written. Returned with the row as it will be written.
    """
    before = payment.status
    rule = proven(before, payment.unconfirmed_since is not None, state, exact=exact)
    decision, mark, note, after = rule.decision, rule.mark, rule.note, rule.after
    if rule.writes:
        earlier = writes.get(payment.order_id)
        writes[payment.order_id] = sql.ProvenWrite(payment.id, after, mark or (earlier is not None and earlier.mark))
        updated = replace(payment, status=after,
                          unconfirmed_since=payment.unconfirmed_since or (datetime.now(UTC) if mark else None))
        return ApplyResult(payment.order_id, before, after, decision is states.Decision.APPLY, note), updated
    return ApplyResult(payment.order_id, before, before, False, note), payment
