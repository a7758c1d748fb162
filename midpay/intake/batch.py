"""The intake's apply step for many orders at once: one transaction, one commit, few round trips.

``online`` applies the answers Midtrans gave about several orders together, and
``offline`` the proofs of a whole batch of bodies, with exactly the decisions of
``intake.decide_confirmed`` and ``intake.decide_offline`` (offline, with the screening
too): only the transaction around them, and the statements that write, are shared.
Rows are locked in order_id order, so two runs batching overlapping orders wait for
each other rather than deadlock. The bodies of one order are decided
in the order they came. Any failure rolls the whole batch back (nothing of it is
recorded); the caller then decides order by order, so that one bad order cannot take
the others with it. The bodies themselves were stored and committed before.
"""

from __future__ import annotations

from collections.abc import Sequence

from midpay import db
from midpay.db import intake as sql
from midpay.intake import pipeline as intake
from midpay.intake.pipeline import Answered, Decided
from midpay.intake.received import Item

Work = Answered  # an order, Midtrans' answer about it, its bodies


def apply_confirmed_many(conn: db.Connection, work: Sequence[Work], *, dry_run: bool = False) -> Decided:
    """Apply Midtrans' answer about each order to its bodies (``intake.decide_confirmed_many``: one transition
    call, one write statement), record each outcome, all in one transaction."""
    with conn.transaction(force_rollback=dry_run):
        decided = intake.decide_confirmed_many(conn, work)
        if not dry_run:
            outcome_of = dict(decided)
            sql.record_outcomes(conn, [intake.outcome_row(i, outcome_of[i.seq]) for _, _, found in work for i in found])
            sql.mark_unconfirmed(conn, sorted({order_id for order_id, _, found in work
                                               if any(outcome_of[i.seq].outcome == "awaiting" for i in found)}))
    return decided


def screen_and_apply_offline(conn: db.Connection, items: Sequence[Item], server_key: str, *, dry_run: bool = False
                             ) -> Decided:
    """Offline, a stored batch screened (``intake.screen``) and applied (``intake.apply_offline``) in one transaction.

    The rows are locked once, for both; then each order's final row is written and
    every body's outcome recorded, one statement each: four statements and a commit,
    whatever the batch's size.
    """
    with conn.transaction(force_rollback=dry_run):
        screened = intake.screen_in(conn, items, server_key, online=False, record=not dry_run, lookup=db.lock_orders)
        decided = list(screened.decided)
        outcomes = screened.outcomes
        mine = intake.decide_offline(conn, screened.candidates, screened.payments)
        decided.extend(mine)
        if not dry_run:
            found = [i for order_id in sorted(screened.candidates) for i in screened.candidates[order_id]]
            outcomes.extend(intake.outcome_row(i, r) for i, (_, r) in zip(found, mine, strict=True))
        sql.record_outcomes(conn, outcomes)
    return decided
