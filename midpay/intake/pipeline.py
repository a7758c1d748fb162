"""THE intake: the stages every notification goes through, whatever its source, defined once here.

    1. decode   the bytes as UTF-8 (a BOM accepted), then JSON: ``bodies.decode_body``, the one
                rule for every source; a body that fails is kept, byte for byte, and rejected
                with the reason
    2. store    the exact bytes (raw_bytes) and the JSON (raw_body), undecided; committed
                (``received.store``)
    3. screen   signature over the raw strings; a known order; the stored amount. A body
                that fails is recorded rejected. A body identical to one confirmed
                before is recorded unchanged: nothing to ask. The rest are recorded
                awaiting confirmation; committed (``screen``)
    4. confirm  Get Status for the order, outside any transaction or lock (``confirm``)
    5. apply    Midtrans' answer through THE transition, for the order that was asked
                about; each body's outcome in the same transaction (``decide_locked``)
    (offline)   instead of 4 and 5: only what the signed status_code proves (``decide_offline``)

The sources only feed these stages and schedule them: ``single.receive`` one body at a
time (``listen``), ``online`` many at once with concurrent confirmations
(``replay-webhook``, ``events reprocess``), ``offline`` partitioned over connections
(``--offline``); ``batch`` runs a stage for many orders in one transaction. A stored event
reprocessed is decoded again from its raw_bytes, so it meets the same rule as the first time.

A verified body is a hint: its unsigned fields (transaction_status beyond what status_code
proves, settlement_time, transaction_id, fraud_status, ...) never decide anything. A crash
between the stages leaves the event unprocessed, and ``events reprocess`` takes it up
again. A rejection carries a ``Reason`` code: the HTTP answer is chosen by the code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from midpay import db
from midpay.db import intake as sql
from midpay.errors import (
    ConfigError,
    DataConflict,
    GatewayError,
    GatewayProtocolError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    OutcomeUnknown,
    TransactionNotFound,
)
from midpay.intake.received import Item, field_text
from midpay.midtrans.notifications import TransactionView, parse_notification, parse_view, proof, verify_signature
from midpay.payments import transition
from midpay.payments.transition import ApplyResult

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

# What can become of a body; only the first two leave its stored event processed.
OUTCOMES = ("applied", "unchanged", "awaiting", "rejected")


class Reason(StrEnum):
    """Why a body was rejected, as a code: callers choose by it (``web.app.status_for``), never by the message."""

    UNREADABLE = "unreadable"  # not UTF-8, not JSON, not shaped like a notification, not storable as JSON
    SIGNATURE = "signature"  # the signature does not match the body and the server key
    UNKNOWN_ORDER = "unknown_order"  # verified, but no payment here has that order id
    AMOUNT = "amount"  # verified, but gross_amount is not the stored amount
    REFUSED = "refused"  # Midtrans said no, or its answer does not fit the row
    FAILED = "failed"  # deciding it failed unexpectedly: not processed


@dataclass(frozen=True)
class NotificationResult:
    """What became of one body, as CONTRACT.md reports it.

    ``outcome`` is applied, unchanged, awaiting (confirmation) or rejected. ``confirmed``:
    Midtrans' own answer decided it. ``gateway_error``: Midtrans could not be asked
    (the body awaits confirmation; asking again later may help).
    """

    source: str
    order_id: str | None
    verified: bool
    applied: bool
    status_before: str | None
    status_after: str | None
    error: str | None
    outcome: str
    note: str | None = None
    confirmed: bool = False
    gateway_error: MidpayError | None = field(default=None, compare=False, repr=False)
    reason: Reason | None = None  # set when rejected


Decided = list[tuple[int, NotificationResult]]


def make_result(item: Item, outcome: str, error: str | None = None, applied: ApplyResult | None = None, *,
                note: str | None = None, confirmed: bool = False, before: str | None = None,
                gateway_error: MidpayError | None = None, reason: Reason | None = None) -> NotificationResult:
    return NotificationResult(
        source=item.body.source,
        order_id=field_text(item.body.parsed, "order_id"),
        verified=item.verified,
        applied=applied.applied if applied is not None and outcome != "rejected" else False,
        status_before=applied.status_before if applied is not None else before,
        status_after=applied.status_after if applied is not None else before,
        error=error,
        outcome=outcome,
        note=note or (applied.note if applied is not None else None),
        confirmed=confirmed,
        gateway_error=gateway_error,
        reason=reason,
    )


def rejected(item: Item, reason: Reason, error: str, *, before: str | None = None) -> NotificationResult:
    """The body is rejected: ``reason`` says why (a code), ``error`` says it in one line."""
    return make_result(item, "rejected", error, before=before, reason=reason)


def unknown_order(item: Item, order_id: str) -> NotificationResult:
    """THE rejection of a verified body whose order has no payment here (``listen`` answers 404)."""
    return rejected(item, Reason.UNKNOWN_ORDER, f"unknown order: {order_id}")


def failed(item: Item, exc: BaseException) -> NotificationResult:
    """Deciding the body failed unexpectedly: rejected, not processed, with the exception's name."""
    return rejected(item, Reason.FAILED, f"not processed: {type(exc).__name__}: {exc}")


def outcome_row(item: Item, result: NotificationResult) -> sql.Outcome:
    assert item.event_id is not None
    return sql.Outcome(item.event_id, item.verified, result.outcome, result.error or result.note, result.confirmed)


# --- 2. screen ---------------------------------------------------------------------------


def _verify(item: Item, server_key: str) -> NotificationResult | None:
    """Check the body on its own: its rejection, or None."""
    body = item.body
    problem = item.stored_error or body.parse_error
    if problem is not None:
        return rejected(item, Reason.UNREADABLE, problem)
    try:
        view = parse_notification(body.parsed)
    except InvalidPayload as exc:
        return rejected(item, Reason.UNREADABLE, str(exc))
    item.view = view
    if not verify_signature(body.parsed, server_key):
        return rejected(item, Reason.SIGNATURE,
                        "signature mismatch: signature_key does not match this body and server key")
    item.verified = True
    return None


@dataclass
class Screened:
    """A batch after screening: what is decided already, and what waits for Midtrans, by order."""

    decided: Decided = field(default_factory=list)
    candidates: dict[str, list[Item]] = field(default_factory=dict)
    outcomes: list[sql.Outcome] = field(default_factory=list)  # to record (empty when not recording)
    payments: Mapping[str, db.Payment] = field(default_factory=dict)  # the rows looked up, by order id


def screen(conn: db.Connection, items: Sequence[Item], server_key: str, *, online: bool, dry_run: bool = False
           ) -> Screened:
    """Verify, look up and de-duplicate a batch; record what is decided already; commit.

    Online, the candidates are recorded as awaiting confirmation until their answer is
    applied (so a crash leaves them visibly so). Any failure here records the whole
    batch as rejected with the reason.
    """
    try:
        with conn.transaction(force_rollback=dry_run):
            screened = screen_in(conn, items, server_key, online=online, record=not dry_run)
            sql.record_outcomes(conn, screened.outcomes)
            return screened
    except Exception as exc:
        if db.map_error(exc) is not None:
            raise
        out = Screened([(i.seq, failed(i, exc)) for i in items])
        if not dry_run:
            with conn.transaction():
                sql.record_outcomes(conn, [outcome_row(i, r) for i, (_, r) in zip(items, out.decided, strict=True)])
        return out


def screen_in(conn: db.Connection, items: Sequence[Item], server_key: str, *, online: bool, record: bool,
              lookup: Callable[[db.Connection, Sequence[str]], Mapping[str, db.Payment]] = sql.payments_by_order,
              ) -> Screened:
    """``screen``'s decisions inside the caller's transaction, the rows found with ``lookup``; nothing recorded yet."""
    out = Screened()
    outcomes = out.outcomes

    def decide(item: Item, result: NotificationResult) -> None:
        out.decided.append((item.seq, result))
        if record:
            outcomes.append(outcome_row(item, result))

    verified: list[Item] = []
    for item in items:
        refused = _verify(item, server_key)
        if refused is not None:
            decide(item, refused)
        else:
            verified.append(item)
    payments = out.payments = lookup(conn, sorted({i.view.order_id for i in verified if i.view}))
    known: list[Item] = []
    for item in verified:
        assert item.view is not None
        payment = payments.get(item.view.order_id)
        if payment is None:
            decide(item, unknown_order(item, item.view.order_id))
        elif item.view.gross_amount != payment.gross_amount:
            decide(item, rejected(item, Reason.AMOUNT, f"amount mismatch for {payment.order_id}: the notification "
                                  f"says {item.view.gross_amount_raw}, stored {payment.gross_amount}"))
        else:
            known.append(item)
    copies = sql.confirmed_copies(conn, [(i.view.order_id, i.body.parsed) for i in known if i.view],
                                  [i.event_id for i in known])
    for position, item in enumerate(known):
        assert item.view is not None
        status = payments[item.view.order_id].status
        if position in copies:
            decide(item, make_result(item, "unchanged", before=status,
                                 note="identical to a notification Midtrans confirmed before: not asked again"))
            continue
        out.candidates.setdefault(item.view.order_id, []).append(item)
        if online and record:
            assert item.event_id is not None
            outcomes.append(sql.Outcome(item.event_id, True, "awaiting", "awaiting confirmation with Midtrans"))
    return out


# --- 3. confirm ---------------------------------------------------------------------------


# Get Status only reads, so an answer that was cut off or garbled is asked for again
# (the gateway retries refused connections and 5xx itself): twice, and a stall once.
_REASK: dict[type, int] = {GatewayProtocolError: 2, OutcomeUnknown: 1}


def confirm(gateway: Gateway, order_id: str) -> TransactionView | MidpayError:
    """Ask Midtrans about the order (Get Status); its answer as a view, or why there is none."""
    tries: dict[type, int] = dict(_REASK)
    while True:
        found = _ask(gateway, order_id)
        left = tries.get(type(found), 0)
        if not left:
            return found
        tries[type(found)] = left - 1


def _ask(gateway: Gateway, order_id: str) -> TransactionView | MidpayError:
    try:
        answer = gateway.status(order_id)
    except (GatewayError, ConfigError, MidtransRejected, TransactionNotFound) as exc:
        return exc
    try:
        return parse_view(answer, what="status answer")
    except InvalidPayload as exc:
        return GatewayProtocolError(f"status check of order {order_id!r}: {exc}")


# --- 4. apply -----------------------------------------------------------------------------


def apply_confirmed(
    conn: db.Connection, order_id: str, answer: TransactionView | MidpayError, items: Sequence[Item], *,
    dry_run: bool = False,
) -> Decided:
    """Apply Midtrans' answer about ``order_id`` for these bodies of it (in their order); record each outcome.

    The first body carries the change, the others find it made. An answer that could
    not be had leaves them awaiting confirmation (the row marked for reconcile), or
    rejected when Midtrans said no (404, a refusal) or its answer does not fit the row.
    """
    with conn.transaction(force_rollback=dry_run):
        decided = decide_confirmed(conn, order_id, answer, items)
        if not dry_run:
            sql.record_outcomes(conn, [outcome_row(i, r) for i, (_, r) in zip(items, decided, strict=True)])
            if any(r.outcome == "awaiting" for _, r in decided):
                sql.mark_unconfirmed(conn, [order_id])
    return decided


Answered = tuple[str, TransactionView | MidpayError, Sequence[Item]]  # an order, Midtrans' answer, its bodies


def decide_confirmed(
    conn: db.Connection, order_id: str, answer: TransactionView | MidpayError, items: Sequence[Item]
) -> Decided:
    """``apply_confirmed``'s decision, inside the caller's transaction; the outcomes are not recorded."""
    locked = db.lock_orders(conn, [order_id], answers=True)
    try:
        with conn.transaction():  # a savepoint: a write PostgreSQL refuses leaves the outcome to record
            return decide_locked(conn, [(order_id, answer, items)], locked)
    except DataConflict as exc:
        before = locked[order_id].status if order_id in locked else None
        return [(i.seq, rejected(i, Reason.REFUSED, str(exc), before=before)) for i in items]


def decide_confirmed_many(conn: db.Connection, work: Sequence[Answered]) -> Decided:
    """``decide_confirmed`` for many orders at once: their rows locked together, in byte-wise order_id order
    (every batch locker's), and every answer applied by ONE transition call, written in one statement.

    A write PostgreSQL refuses raises DataConflict for the lot: the caller then decides order by order.
    """
    ordered = sorted(work, key=lambda w: w[0])
    return decide_locked(conn, ordered, db.lock_orders(conn, [o for o, _, _ in ordered], answers=True))


def decide_locked(conn: db.Connection, work: Sequence[Answered], locked: Mapping[str, db.Payment]) -> Decided:
    """THE confirmed decision on rows the caller locked: Midtrans' answers through the transition, then each
    body's outcome. The first body of an order carries the change, the others find it made."""
    asked = [(o, a) for o, a, _ in work if o in locked and isinstance(a, TransactionView)]
    moved = transition.transition(conn, [transition.Change(o, a) for o, a in asked], locked=locked) if asked else []
    applied = iter(moved)
    decided: Decided = []
    for order_id, answer, items in work:
        payment = locked.get(order_id)
        result = next(applied) if payment is not None and isinstance(answer, TransactionView) else None
        decided.extend(_outcomes(order_id, answer, items, payment, result))
    return decided


def _outcomes(order_id: str, answer: TransactionView | MidpayError, items: Sequence[Item], payment: db.Payment | None,
              result: transition.Moved | None) -> Decided:
    """What each body of one order came to, given its row and what the transition did with the answer."""
    if payment is None:
        return [(i.seq, unknown_order(i, order_id)) for i in items]
    if isinstance(answer, GatewayError | ConfigError):
        reason = f"awaiting confirmation: {answer}"
        return [(i.seq, make_result(i, "awaiting", reason, before=payment.status, gateway_error=answer)) for i in items]
    if isinstance(answer, MidpayError):
        return [(i.seq, rejected(i, Reason.REFUSED, f"{answer}; not applied", before=payment.status)) for i in items]
    if not isinstance(result, ApplyResult):
        return [(i.seq, rejected(i, Reason.REFUSED, str(result), before=payment.status)) for i in items]
    decided: Decided = []
    for position, item in enumerate(items):
        said = item.view.transaction_status if item.view is not None else None
        note = f"the body says {said}; Midtrans says {answer.transaction_status}" if said != answer.transaction_status \
            else None
        if position == 0:
            outcome = "applied" if result.applied else "unchanged"
            decided.append((item.seq, make_result(item, outcome, applied=result, note=note or result.note,
                                                  confirmed=True)))
        else:
            decided.append((item.seq, make_result(item, "unchanged", before=result.status_after, note=note,
                                                  confirmed=True)))
    return decided


# --- (offline) what a signed status_code proves -------------------------------------------


def apply_offline(conn: db.Connection, order_id: str, items: Sequence[Item], *, dry_run: bool = False) -> Decided:
    """Lock the order's row, decide its bodies by ``decide_offline``, record each outcome: one transaction."""
    with conn.transaction(force_rollback=dry_run):
        decided = decide_offline(conn, {order_id: items}, db.lock_orders(conn, [order_id]))
        if not dry_run:
            sql.record_outcomes(conn, [outcome_row(i, r) for i, (_, r) in zip(items, decided, strict=True)])
    return decided


def decide_offline(conn: db.Connection, candidates: Mapping[str, Sequence[Item]], locked: Mapping[str, db.Payment]
                   ) -> Decided:
    """THE offline decision: what each verified body's signed status_code proves, through THE transition.

    ``candidates`` are verified bodies by order id, ``locked`` the rows the caller holds
    locked (an order missing from it is unknown). Each order's bodies are decided in
    their order, each on the row as the ones before left it, and every row is written
    in one statement (``transition``). Outcomes are not recorded.
    """
    changes: list[transition.Change] = []
    asked: list[tuple[Item, str, str, transition.Proven]] = []
    for order_id in sorted(candidates):
        for item in candidates[order_id]:
            assert item.view is not None
            proven_by = proof(item.view.status_code)
            evidence = transition.Proven(proven_by.state, proven_by.exact)
            changes.append(transition.Change(order_id, evidence))
            asked.append((item, order_id, proven_by.unproven or "", evidence))
    moved = transition.transition(conn, changes, locked=locked, read_back=False) if changes else []
    decided: Decided = []
    for (item, order_id, unproven, evidence), applied in zip(asked, moved, strict=True):
        if not isinstance(applied, ApplyResult):
            decided.append((item.seq, unknown_order(item, order_id)))
        elif evidence.exact:
            outcome = "applied" if applied.applied else "unchanged"
            decided.append((item.seq, make_result(item, outcome, applied=applied)))
        else:
            decided.append((item.seq, make_result(item, "awaiting", f"awaiting confirmation: {unproven}",
                                                  applied=applied)))
    return decided
