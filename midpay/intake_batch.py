"""The intake's apply step for many orders at once: one transaction, one commit, few round trips.

``confirm`` applies the answers Midtrans gave about several orders together, and
``--offline`` the proofs of a whole batch of bodies, with exactly the decisions of
``intake.apply_confirmed`` and ``intake.apply_offline``: only the transaction around
them is shared. Rows are locked in order_id order, so two runs batching overlapping
orders wait for each other rather than deadlock. The bodies of one order are decided
in the order they came. Any failure rolls the whole batch back (nothing of it is
recorded); the caller then decides order by order, so that one bad order cannot take
the others with it. The bodies themselves were stored and committed before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from midpay import db, intake
from midpay.db import intake as sql
from midpay.errors import MidpayError
from midpay.intake import Decided
from midpay.notifications import TransactionView
from midpay.received import Item

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


def apply_offline_many(conn: db.Connection, candidates: Mapping[str, Sequence[Item]], *, dry_run: bool = False
                       ) -> Decided:
    """Apply what each body's signed status_code proves (``intake.apply_offline``), all in one transaction."""
    decided: Decided = []
    outcomes: list[sql.Outcome] = []
    with conn.transaction(force_rollback=dry_run):
        payments = sql.lock_payments(conn, sorted(candidates))
        for order_id in sorted(candidates):
            items = candidates[order_id]
            found = intake.decide_offline(conn, order_id, payments.get(order_id), items)
            decided.extend(found)
            outcomes.extend(intake.outcome_row(i, r) for i, (_, r) in zip(items, found, strict=True))
        if not dry_run:
            sql.record_outcomes(conn, outcomes)
    return decided
