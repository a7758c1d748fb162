"""A notification from any source: store the bytes, verify, confirm with Midtrans, apply its answer.

``replay-webhook`` (files, stdin), ``events reprocess`` (stored bodies) and ``listen``
(HTTP) all come through here; nothing about a notification is decided anywhere else.

    1. store    the exact bytes (raw_bytes) and the JSON (raw_body), undecided; committed
                (``received``)
    2. screen   signature over the raw strings; a known order; the stored amount. A body
                that fails is recorded rejected. A body identical to one confirmed
                before is recorded unchanged: nothing to ask. The rest are recorded
                awaiting confirmation; committed
    3. confirm  Get Status for the order, outside any transaction or lock
    4. apply    Midtrans' answer, through the one apply path, for the order that was
                asked about; the body's outcome in the same transaction
    (offline)   instead of 3 and 4: only what the signed status_code proves
                (``notifications.proof``); the rest stays awaiting confirmation

A verified body is a hint: its unsigned fields (transaction_status beyond what
status_code proves, settlement_time, transaction_id, fraud_status, ...) never decide
anything. A crash between the steps leaves the event unprocessed (undecided or awaiting
confirmation), and ``events reprocess`` takes it up again. ``midpay.intake.online`` runs many
bodies through these steps at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
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
from midpay.intake.bodies import Body, decode_body
from midpay.intake.received import Item, exact_bytes, field_text, store
from midpay.midtrans.notifications import TransactionView, parse_notification, parse_view, proof, verify_signature
from midpay.payments.transition import AnswerMismatch, ApplyResult, apply_locked, apply_proven

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

# What can become of a body; only the first two leave its stored event processed.
OUTCOMES = ("applied", "unchanged", "awaiting", "rejected")


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


Decided = list[tuple[int, NotificationResult]]


def make_result(item: Item, outcome: str, error: str | None = None, applied: ApplyResult | None = None, *,
            note: str | None = None, confirmed: bool = False, before: str | None = None,
            gateway_error: MidpayError | None = None) -> NotificationResult:
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
    )


def outcome_row(item: Item, result: NotificationResult) -> sql.Outcome:
    assert item.event_id is not None
    return sql.Outcome(item.event_id, item.verified, result.outcome, result.error or result.note, result.confirmed)


# --- 2. screen ---------------------------------------------------------------------------


def _verify(item: Item, server_key: str) -> str | None:
    """Check the body on its own; the reason it is rejected, or None."""
    body = item.body
    if item.stored_error is not None:
        return item.stored_error
    if body.parse_error is not None:
        return body.parse_error
    try:
        view = parse_notification(body.parsed)
    except InvalidPayload as exc:
        return str(exc)
    item.view = view
    if not verify_signature(body.parsed, server_key):
        return "signature mismatch: signature_key does not match this body and server key"
    item.verified = True
    return None


@dataclass
class Screened:
    """A batch after screening: what is decided already, and what waits for Midtrans, by order."""

    decided: Decided = field(default_factory=list)
    candidates: dict[str, list[Item]] = field(default_factory=dict)
    outcomes: list[sql.Outcome] = field(default_factory=list)  # to record (empty when not recording)
    payments: Mapping[str, sql.Screenable] = field(default_factory=dict)  # the rows looked up, by order id


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
        reason = f"not processed: {type(exc).__name__}: {exc}"
        out = Screened([(i.seq, make_result(i, "rejected", reason)) for i in items])
        if not dry_run:
            with conn.transaction():
                sql.record_outcomes(conn, [outcome_row(i, r) for i, (_, r) in zip(items, out.decided, strict=True)])
        return out


def screen_in(conn: db.Connection, items: Sequence[Item], server_key: str, *, online: bool, record: bool,
              lookup: Callable[[db.Connection, Sequence[str]], Mapping[str, sql.Screenable]] = sql.payments_by_order,
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
        reason = _verify(item, server_key)
        if reason is not None:
            decide(item, make_result(item, "rejected", reason))
        else:
            verified.append(item)
    payments = out.payments = lookup(conn, sorted({i.view.order_id for i in verified if i.view}))
    known: list[Item] = []
    for item in verified:
        assert item.view is not None
        payment = payments.get(item.view.order_id)
        if payment is None:
            decide(item, make_result(item, "rejected", f"unknown order: {item.view.order_id}"))
        elif item.view.gross_amount != payment.gross_amount:
            decide(item, make_result(item, "rejected", f"amount mismatch for {payment.order_id}: the notification says "
                                 f"{item.view.gross_amount_raw}, stored {payment.gross_amount}"))
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


def _claims(item: Item) -> str | None:
    return item.view.transaction_status if item.view is not None else None


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


def decide_confirmed(
    conn: db.Connection, order_id: str, answer: TransactionView | MidpayError, items: Sequence[Item]
) -> Decided:
    """``apply_confirmed``'s decision, inside the caller's transaction; the outcomes are not recorded."""
    payment = db.get_payment(conn, order_id, for_update=True)
    if payment is None:
        return [(i.seq, make_result(i, "rejected", f"unknown order: {order_id}")) for i in items]
    if isinstance(answer, GatewayError | ConfigError):
        reason = f"awaiting confirmation: {answer}"
        return [(i.seq, make_result(i, "awaiting", reason, before=payment.status, gateway_error=answer)) for i in items]
    if isinstance(answer, MidpayError):
        return [(i.seq, make_result(i, "rejected", f"{answer}; not applied", before=payment.status)) for i in items]
    try:
        with conn.transaction():  # a savepoint: a refused write leaves the outcome to record
            applied = apply_locked(conn, payment, answer)
    except (AnswerMismatch, DataConflict) as exc:
        return [(i.seq, make_result(i, "rejected", str(exc), before=payment.status)) for i in items]
    decided: Decided = []
    for position, item in enumerate(items):
        said = _claims(item)
        note = f"the body says {said}; Midtrans says {answer.transaction_status}" if said != answer.transaction_status \
            else None
        if position == 0:
            outcome = "applied" if applied.applied else "unchanged"
            decided.append((item.seq, make_result(item, outcome, applied=applied, note=note or applied.note,
                                              confirmed=True)))
        else:
            after = applied.status_after
            decided.append((item.seq, make_result(item, "unchanged", before=after, note=note, confirmed=True)))
    return decided


def apply_offline(conn: db.Connection, order_id: str, items: Sequence[Item], *, dry_run: bool = False) -> Decided:
    """Apply what each body's signed status_code proves, and no more; record each outcome."""
    with conn.transaction(force_rollback=dry_run):
        decided = decide_offline(conn, order_id, db.get_payment(conn, order_id, for_update=True), items)
        if not dry_run:
            sql.record_outcomes(conn, [outcome_row(i, r) for i, (_, r) in zip(items, decided, strict=True)])
    return decided


def decide_offline(conn: db.Connection, order_id: str, payment: db.Payment | None, items: Sequence[Item]) -> Decided:
    """``apply_offline``'s decision on a row the caller locked (None: no such order); outcomes not recorded."""
    decided: Decided = []
    for item in items:
        assert item.view is not None
        if payment is None:
            decided.append((item.seq, make_result(item, "rejected", f"unknown order: {order_id}")))
            continue
        proven = proof(item.view.status_code)
        applied = apply_proven(conn, payment, proven.state, exact=proven.exact)
        payment = applied.payment or payment
        if proven.exact:
            outcome = "applied" if applied.applied else "unchanged"
            decided.append((item.seq, make_result(item, outcome, applied=applied)))
        else:
            reason = f"awaiting confirmation: {proven.unproven}"
            decided.append((item.seq, make_result(item, "awaiting", reason, applied=applied)))
    return decided


# --- one body: listen, the demo ----------------------------------------------------------


def receive(conn: db.Connection, gateway: Gateway | None, data: bytes, source: str, *, server_key: str
            ) -> NotificationResult:
    """Decide one received notification body: THE entry point for a body that arrives alone (HTTP).

    ``data`` is the body exactly as received, ``source`` names where it came from (kept
    on the stored event). ``gateway`` None means offline: Midtrans is not asked.

    Contract (stable): the bytes are stored and committed before anything is decided;
    the returned result is final only once the body and its outcome are committed. It
    never raises because of the body: malformed, forged, unknown, a mismatching answer,
    Midtrans refusing or unreachable all come back as a result (``outcome`` rejected or
    awaiting; ``gateway_error`` set when Midtrans could not be asked, so asking again
    later may help). It raises ``DatabaseUnavailable`` when PostgreSQL fails; the body
    is then either not stored at all, or stored and not yet decided (``events
    reprocess`` decides it). ``conn`` must not be inside a transaction; no transaction
    or lock is held while Midtrans is asked.
    """
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    body = decode_body(source, text)
    return _one(conn, gateway, Item(0, body, data), server_key, dry_run=False)


def receive_pooled(connection: Callable[[], AbstractContextManager[db.Connection]], gateway: Gateway,
                   data: bytes, source: str, *, server_key: str) -> NotificationResult:
    """``receive``, holding a connection (from ``connection()``, a pool's) only while PostgreSQL is needed.

    The bytes are stored and screened on one connection, which goes back before
    Midtrans is asked; the answer is applied on another taken afterwards. So a request
    waiting on Get Status holds none, and a pool far smaller than the threads serving
    requests is enough (``listen``). Same contract as ``receive``.
    """
    body = decode_body(source, data.decode("utf-8", errors="replace").removeprefix("\ufeff"))
    item = Item(0, body, data)
    with db.translate_errors():
        with connection() as conn:
            store(conn, [item])
            screened = screen(conn, [item], server_key, online=True)
        for order_id, items in screened.candidates.items():
            answer = confirm(gateway, order_id)
            with connection() as conn:
                screened.decided.extend(apply_confirmed(conn, order_id, answer, items))
    [(_, result)] = screened.decided
    return result


def process_notification(
    conn: db.Connection, body: Body, server_key: str, *, gateway: Gateway | None, dry_run: bool = False
) -> NotificationResult:
    """One body already read (a file, stdin): as ``receive``. ``dry_run`` decides without writing."""
    return _one(conn, gateway, Item(0, body, exact_bytes(body)), server_key, dry_run=dry_run)


def _one(conn: db.Connection, gateway: Gateway | None, item: Item, server_key: str, *, dry_run: bool
         ) -> NotificationResult:
    with db.translate_errors():
        return _one_step(conn, gateway, item, server_key, dry_run=dry_run)


def _one_step(conn: db.Connection, gateway: Gateway | None, item: Item, server_key: str, *, dry_run: bool
              ) -> NotificationResult:
    if not dry_run:
        store(conn, [item])
    screened = screen(conn, [item], server_key, online=gateway is not None, dry_run=dry_run)
    for order_id, items in screened.candidates.items():
        if gateway is None:
            screened.decided.extend(apply_offline(conn, order_id, items, dry_run=dry_run))
        else:
            screened.decided.extend(apply_confirmed(conn, order_id, confirm(gateway, order_id), items,
                                                    dry_run=dry_run))
    [(_, result)] = screened.decided
    return result
