"""Use cases: charge, refresh one payment, apply a notification, reconcile.

Every change to a payment goes through ``apply_view``: lock the row, decide by the
forward-only rule of ``states``, write in the same transaction. This module owns
transaction boundaries and returns data; it never prints.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from midpay import db, states
from midpay.errors import (
    DataConflict,
    DependencyError,
    GatewayAuthError,
    GatewayError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    TransactionNotFound,
    UsageError,
)
from midpay.notifications import TransactionView, parse_notification, parse_view, verify_signature

if TYPE_CHECKING:
    from midpay.gateway import Gateway

MAX_ORDER_ID = 50
_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,49}$")
# A `created` row Midtrans has never heard of, this long after its insert, is a charge
# that never arrived: well past the five-minute life of its Idempotency-Key.
CREATED_GRACE_SECONDS = 600.0
# A row checked this recently (by this run or an overlapping one) is not due again:
# this is what keeps overlapping cron runs from checking the same row twice.
RECHECK_AFTER_SECONDS = 30.0


# --- the one apply path ----------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    """What applying Midtrans' view did to one payment."""

    order_id: str
    status_before: str
    status_after: str
    applied: bool
    note: str | None = None  # why a view was not applied (stale, out of order)
    payment: db.Payment | None = None


class AmountMismatch(MidpayError):
    """Midtrans' gross_amount differs from the stored amount: never applied."""


def apply_view(conn: db.Connection, view: TransactionView) -> ApplyResult:
    """Lock the payment, decide by the forward-only rule, write in one transaction."""
    with conn.transaction():
        return _apply_locked(conn, view)


def _apply_locked(conn: db.Connection, view: TransactionView) -> ApplyResult:
    payment = db.get_payment(conn, view.order_id, for_update=True)
    if payment is None:
        raise NotFoundError(f"no such order: {view.order_id}")
    return _apply_to(conn, payment, view)


def _apply_to(
    conn: db.Connection, payment: db.Payment, view: TransactionView, *, event: db.EventOutcome | None = None
) -> ApplyResult:
    """The rule itself, on a payment the caller has locked: check the amount, decide, write.

    With ``event``, a stored notification's outcome is written by the same statement
    when the payment moves (the caller records it otherwise).
    """
    if view.gross_amount != payment.gross_amount:
        raise AmountMismatch(
            f"amount mismatch for {payment.order_id}: Midtrans says {view.gross_amount_raw}, "
            f"stored {payment.gross_amount}"
        )
    decision = states.decide(payment.status, view.transaction_status)
    if decision is states.Decision.APPLY:
        paid_at = None
        if view.transaction_status in states.PAID_STATES and payment.paid_at is None:
            paid_at = view.settlement_time or view.transaction_time or datetime.now(UTC)
        updated = db.update_payment(
            conn,
            payment.id,
            status=view.transaction_status,
            midtrans_transaction_id=view.transaction_id,
            response=view.raw,
            paid_at=paid_at,
            event=event,
        )
        return ApplyResult(payment.order_id, payment.status, updated.status, True, payment=updated)
    note = None
    if decision is states.Decision.REFUSED:
        note = (
            f"not applied: {view.transaction_status} after {payment.status} "
            "(status only moves forward)"
        )
    return ApplyResult(payment.order_id, payment.status, payment.status, False, note=note, payment=payment)


def _synthetic_failure(payment: db.Payment, status_code: str, message: str, answer: dict[str, Any]) -> TransactionView:
    """Midtrans refused the charge: the row ends as `failure`, its answer kept."""
    body = {
        **answer,
        "order_id": payment.order_id,
        "gross_amount": f"{payment.gross_amount}.00",
        "transaction_status": states.FAILURE,
        "status_code": status_code or answer.get("status_code", ""),
        "status_message": message,
    }
    return parse_view(body, what="charge refusal")


# --- charge ----------------------------------------------------------------------------


def new_order_id() -> str:
    """A unique, Midtrans-safe order id: ``mp-YYYYMMDDHHMMSS-`` and 10 random hex digits."""
    return f"mp-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(5)}"


def validate_order_id(order_id: str) -> str:
    """An order id Midtrans and URLs accept: letters, digits, ``-_.~``, at most 50."""
    if not _ORDER_ID.fullmatch(order_id):
        raise UsageError(
            f"invalid order id {order_id[:60]!r}: use 1-{MAX_ORDER_ID} letters, digits, '-', '_', '.' or '~', "
            "starting with a letter or digit"
        )
    return order_id


def validate_amount(amount: int) -> int:
    """A positive whole number of rupiah that fits the integer column."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise UsageError(f"amount must be a positive whole number of rupiah, not {amount!r}")
    if amount > 2_147_483_647:
        raise UsageError(f"amount {amount} is larger than midpay can store")
    return amount


@dataclass(frozen=True)
class ChargeOutcome:
    """The stored payment after a charge, and Midtrans' answer."""

    payment: db.Payment
    view: TransactionView | None


def charge(
    conn: db.Connection,
    gateway: Gateway,
    *,
    amount: int,
    order_id: str | None = None,
    user_id: int | None = None,
    qris: bool = False,
    idempotency_key: str | None = None,
) -> ChargeOutcome:
    """Insert the ``created`` row and commit it, then ask Midtrans to charge, then apply the answer.

    A timeout after sending leaves the row ``created`` (OutcomeUnknown): ``status``
    and ``reconcile`` settle it later. A refusal ends the row as ``failure``.
    """
    amount = validate_amount(amount)
    order_id = validate_order_id(order_id) if order_id is not None else new_order_id()
    payment_type = "qris" if qris else "gopay"
    with conn.transaction():
        payment = db.insert_payment(
            conn, order_id=order_id, gross_amount=amount, payment_type=payment_type, user_id=user_id
        )
    if payment is None:
        raise UsageError(f"order {order_id} already exists; see `midpay status {order_id}`")
    key = idempotency_key or str(uuid.uuid4())
    try:
        answer = gateway.charge(
            order_id=order_id, gross_amount=amount, payment_type=payment_type, idempotency_key=key
        )
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(
            f"no answer from Midtrans for order {order_id}; the charge may or may not exist. "
            f"It stays `created` and is never charged again: run `midpay status {order_id}` to settle it"
        ) from exc
    except GatewayAuthError as exc:
        apply_view(conn, _synthetic_failure(payment, "401", str(exc), {}))
        raise
    except MidtransRejected as exc:
        result = apply_view(conn, _synthetic_failure(payment, exc.status_code, str(exc), dict(exc.body)))
        raise MidtransRejected(
            f"Midtrans refused order {order_id} ({exc.status_code}): {exc}; it is now {result.status_after}",
            exc.status_code,
            exc.body,
        ) from exc
    except GatewayError as exc:
        raise type(exc)(
            f"{exc}; order {order_id} stays `created`: run `midpay status {order_id}` once Midtrans answers"
        ) from exc
    view = parse_view(answer, what="charge answer")
    result = apply_view(conn, view)
    assert result.payment is not None
    return ChargeOutcome(result.payment, view)


# --- status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshOutcome:
    """A payment after asking Midtrans about it, and what went wrong asking, if anything."""

    payment: db.Payment
    view: TransactionView | None = None
    result: ApplyResult | None = None
    error: MidpayError | None = None


def refresh(
    conn: db.Connection,
    gateway: Gateway | None,
    order_id: str,
    *,
    grace: float = CREATED_GRACE_SECONDS,
) -> RefreshOutcome:
    """Read one payment; when it is unsettled and a gateway is given, apply Midtrans' answer."""
    payment = db.get_payment(conn, order_id)
    conn.commit()
    if payment is None:
        raise NotFoundError(f"no such order: {order_id}")
    if gateway is None or payment.status not in states.UNSETTLED_STATES:
        return RefreshOutcome(payment)
    try:
        return _check(conn, gateway, payment, grace=grace)
    except (GatewayError, MidtransRejected, InvalidPayload, AmountMismatch) as exc:
        return RefreshOutcome(payment, error=exc)


def _check(conn: db.Connection, gateway: Gateway, payment: db.Payment, *, grace: float) -> RefreshOutcome:
    try:
        answer = gateway.status(payment.order_id)
    except TransactionNotFound as exc:
        age = (datetime.now(UTC) - payment.created_at).total_seconds()
        if payment.status == states.CREATED and age >= grace:
            view = _synthetic_failure(
                payment, "404", "the charge never reached Midtrans (unknown there after the grace period)", {}
            )
            result = apply_view(conn, view)
            assert result.payment is not None
            return RefreshOutcome(result.payment, view, result)
        if payment.status == states.CREATED:
            return RefreshOutcome(payment)  # Midtrans may still be processing the charge
        raise MidtransRejected(
            f"Midtrans does not know order {payment.order_id} although it is {payment.status} here", "404"
        ) from exc
    view = parse_view(answer, what="status answer")
    result = apply_view(conn, view)
    assert result.payment is not None
    return RefreshOutcome(result.payment, view, result)


# --- notifications ---------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationResult:
    """One body of replay-webhook, as CONTRACT.md reports it."""

    source: str
    order_id: str | None
    verified: bool
    applied: bool
    status_before: str | None
    status_after: str | None
    error: str | None
    outcome: str  # applied | unchanged | rejected
    note: str | None = None


@dataclass(frozen=True)
class Body:
    """A notification body as received: its text, or why it could not be read as JSON."""

    source: str
    text: str
    parsed: Any = None
    parse_error: str | None = None


def decode_body(source: str, text: str) -> Body:
    """Parse a body's JSON; failures are kept with a one-line reason naming line and column."""
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        _check_depth(parsed)
    except json.JSONDecodeError as exc:
        return Body(source, text, parse_error=f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except RecursionError:
        return Body(source, text, parse_error="malformed JSON: nested too deeply")
    except ValueError as exc:  # NaN, 1e400, too deep, integers with too many digits
        return Body(source, text, parse_error=f"malformed JSON: {str(exc).splitlines()[0][:120]}")
    # PostgreSQL cannot hold NUL characters or lone surrogates: such a body is kept as
    # (cleaned) text and rejected, rather than failing the insert that stores it. Both
    # can only come from a \u escape or a raw NUL, so most bodies skip the check.
    if "\\u" not in text and "\x00" not in text:
        return Body(source, text, parsed=parsed)
    try:
        dumped = json.dumps(parsed, ensure_ascii=False)
        dumped.encode("utf-8")
    except UnicodeEncodeError:
        return Body(source, _clean_text(text), parse_error="malformed JSON: invalid unicode (lone surrogate)")
    except (RecursionError, ValueError):
        return Body(source, text, parse_error="malformed JSON: nested too deeply")
    if "\\u0000" in dumped:
        return Body(source, _clean_text(text), parse_error="malformed JSON: contains NUL characters")
    return Body(source, text, parsed=parsed)


# Far deeper than any Midtrans body, far shallower than any recursion limit on the way
# into PostgreSQL's jsonb.
MAX_JSON_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _clean_text(text: str) -> str:
    cleaned = text.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")
    return cleaned.encode("utf-8", errors="replace").decode("utf-8")


def _storable(body: Body) -> Any:
    """What goes into raw_body (jsonb): the JSON itself, or the raw text as a JSON string."""
    return body.parsed if body.parse_error is None else _clean_text(body.text)


def _field(parsed: Any, name: str) -> str | None:
    if isinstance(parsed, dict):
        value = parsed.get(name)
        if isinstance(value, str):
            return value
    return None


@dataclass(frozen=True)
class _Verdict:
    """What a body says on its own, before any payment is looked at."""

    view: TransactionView | None
    verified: bool
    error: str | None


def _verify(body: Body, server_key: str) -> _Verdict:
    if body.parse_error is not None:
        return _Verdict(None, False, body.parse_error)
    try:
        view = parse_notification(body.parsed)
    except InvalidPayload as exc:
        return _Verdict(None, False, str(exc))
    if not verify_signature(body.parsed, server_key):
        return _Verdict(view, False, "signature mismatch: signature_key does not match this body and server key")
    return _Verdict(view, True, None)


def process_notification(
    conn: db.Connection, body: Body, server_key: str, *, dry_run: bool = False
) -> NotificationResult:
    """Store the body, then verify it (signature, known order, amount) and apply it.

    The body is inserted by the transaction's first statement (which also locks the
    payment it names); the decision follows and its outcome commits with the body. If
    anything fails while deciding (PostgreSQL refusing the payment's update, say), that
    transaction is rolled back and the body is stored again, rejected, with the reason:
    whatever happens, it is kept.
    ``dry_run`` verifies and decides without writing.
    """
    verdict = _verify(body, server_key)
    lock = verdict.view.order_id if verdict.verified and verdict.view is not None else None
    if dry_run:
        with conn.transaction(force_rollback=True):
            payment = db.get_payment(conn, lock) if lock is not None else None
            return _conclude(conn, body, verdict, payment, event_id=None)
    try:
        with conn.transaction():
            event_id, payment = db.insert_event(conn, **_event_fields(body), lock_order_id=lock)
            return _conclude(conn, body, verdict, payment, event_id=event_id)
    except Exception as exc:  # whatever went wrong deciding, the body is kept
        if db.map_error(exc) is not None:
            raise  # the connection itself is gone: nothing can be stored now; exit 3 says so
        reason = str(exc) if isinstance(exc, DataConflict) else f"not processed: {type(exc).__name__}: {exc}"
        with conn.transaction():
            event_id, _ = db.insert_event(conn, **_event_fields(body))
            db.finish_event(conn, event_id, is_verified=verdict.verified, outcome="rejected", error=reason)
        return _result(body, verdict, "rejected", reason)


def _event_fields(body: Body) -> dict[str, Any]:
    return {
        "raw_body": _storable(body),
        "source": body.source,
        "order_id": _field(body.parsed, "order_id"),
        "transaction_id": _field(body.parsed, "transaction_id"),
        "signature_key": _field(body.parsed, "signature_key"),
    }


def _result(
    body: Body, verdict: _Verdict, outcome: str, error: str | None, applied: ApplyResult | None = None
) -> NotificationResult:
    return NotificationResult(
        source=body.source,
        order_id=_field(body.parsed, "order_id"),
        verified=verdict.verified,
        applied=outcome == "applied",
        status_before=applied.status_before if applied else None,
        status_after=applied.status_after if applied else None,
        error=error,
        outcome=outcome,
        note=applied.note if applied else None,
    )


def _conclude(
    conn: db.Connection,
    body: Body,
    verdict: _Verdict,
    payment: db.Payment | None,
    *,
    event_id: uuid.UUID | None,
) -> NotificationResult:
    """Decide on a verified body against its locked payment; record the outcome on the event."""

    def finish(outcome: str, error: str | None, applied: ApplyResult | None = None) -> NotificationResult:
        if event_id is not None and not (applied is not None and applied.applied):
            note = applied.note if applied is not None else None
            db.finish_event(conn, event_id, is_verified=verdict.verified, outcome=outcome, error=error or note)
        return _result(body, verdict, outcome, error, applied)

    if not verdict.verified or verdict.view is None:
        return finish("rejected", verdict.error)
    if payment is None:
        return finish("rejected", f"unknown order: {verdict.view.order_id}")
    event = db.EventOutcome(event_id, True, "applied") if event_id is not None else None
    try:
        result = _apply_to(conn, payment, verdict.view, event=event)
    except AmountMismatch as exc:
        return finish("rejected", str(exc))
    return finish("applied" if result.applied else "unchanged", None, result)


# --- reconcile -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileResult:
    """One checked row, as CONTRACT.md reports it."""

    order_id: str
    status_before: str
    status_after: str
    error: str | None

    @property
    def changed(self) -> bool:
        return self.error is None and self.status_before != self.status_after


@dataclass
class ReconcileSummary:
    """Counts of a reconcile run."""

    checked: int = 0
    changed: int = 0
    unchanged: int = 0
    errors: int = 0
    fatal: DependencyError | None = field(default=None, repr=False)

    def add(self, result: ReconcileResult) -> None:
        self.checked += 1
        if result.error is not None:
            self.errors += 1
        elif result.changed:
            self.changed += 1
        else:
            self.unchanged += 1


class RateLimiter:
    """Spaces calls at least 1/rate seconds apart across threads (a ceiling, not a target)."""

    def __init__(self, rate: float | None):
        self._interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


def count_due(
    conn: db.Connection, *, min_age: float, limit: int | None, recheck_after: float = RECHECK_AFTER_SECONDS
) -> int:
    """How many rows a reconcile run would check now (for its progress bar)."""
    count = db.count_due(conn, statuses=states.OPEN_STATES, min_age=min_age, recheck_after=recheck_after)
    conn.commit()
    return min(count, limit) if limit is not None else count


def reconcile(
    url: str,
    gateway: Gateway,
    *,
    min_age: float = 60.0,
    limit: int | None = None,
    concurrency: int = 8,
    max_rps: float | None = None,
    dry_run: bool = False,
    grace: float = CREATED_GRACE_SECONDS,
    recheck_after: float = RECHECK_AFTER_SECONDS,
    batch_size: int = 200,
    on_result: Callable[[ReconcileResult], None] | None = None,
) -> ReconcileSummary:
    """Check every due open row against Midtrans, ``concurrency`` at a time.

    Rows are claimed in batches (``last_checked_at`` stamped and committed), so an
    overlapping run skips them; only a bounded window of rows is in memory at once.
    The HTTP call holds no lock: a notification landing meanwhile applies at once,
    and the forward-only rule keeps the later write from moving the row backwards.
    """
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    summary = ReconcileSummary()
    limiter = RateLimiter(max_rps)
    pool = db.open_pool(url, concurrency + 1)
    finished: queue.SimpleQueue[Future[ReconcileResult]] = queue.SimpleQueue()
    try:
        with db.translate_errors(), pool.connection() as conn:
            run_started = db.database_now(conn)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reconcile") as executor:
            in_flight = 0
            rows = _due_rows(
                pool,
                min_age=min_age,
                recheck_after=recheck_after,
                limit=limit,
                dry_run=dry_run,
                batch_size=batch_size,
                run_started=run_started,
            )
            for payment in rows:
                # A bounded window of rows in flight: memory stays flat however many are due.
                while in_flight >= concurrency * 2 and summary.fatal is None:
                    in_flight -= _collect(finished, summary, on_result)
                if summary.fatal is not None:
                    break
                future = executor.submit(_check_row, pool, gateway, limiter, payment, dry_run, grace)
                future.add_done_callback(finished.put)
                in_flight += 1
            while in_flight:
                in_flight -= _collect(finished, summary, on_result)
    finally:
        pool.close()
    return summary


def _collect(
    finished: queue.SimpleQueue[Future[ReconcileResult]],
    summary: ReconcileSummary,
    on_result: Callable[[ReconcileResult], None] | None,
) -> int:
    """Take at least one finished check off the queue (waiting for it); return how many."""
    taken = [finished.get()]
    while True:
        try:
            taken.append(finished.get_nowait())
        except queue.Empty:
            break
    for future in taken:
        try:
            result = future.result()
        except DependencyError as exc:  # the database went away: stop claiming more
            summary.fatal = summary.fatal or exc
            continue
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return len(taken)


def _due_rows(
    pool: Any,
    *,
    min_age: float,
    recheck_after: float,
    limit: int | None,
    dry_run: bool,
    batch_size: int,
    run_started: datetime,
) -> Iterator[db.Payment]:
    if dry_run:  # nothing is claimed: stream what would be, in claiming order
        with db.translate_errors(), pool.connection() as conn:
            yield from db.iter_due(
                conn, statuses=states.OPEN_STATES, min_age=min_age, recheck_after=recheck_after, limit=limit
            )
        return
    remaining = limit
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        with db.translate_errors(), pool.connection() as conn:
            rows = db.claim_due(
                conn,
                statuses=states.OPEN_STATES,
                min_age=min_age,
                recheck_after=recheck_after,
                limit=size,
                run_started=run_started,
            )
        if not rows:
            return
        yield from rows
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            return


def _check_row(
    pool: Any, gateway: Gateway, limiter: RateLimiter, payment: db.Payment, dry_run: bool, grace: float
) -> ReconcileResult:
    before = payment.status
    limiter.wait()
    try:
        try:
            answer = gateway.status(payment.order_id)
        except TransactionNotFound:
            age = (datetime.now(UTC) - payment.created_at).total_seconds()
            if payment.status != states.CREATED:
                return ReconcileResult(payment.order_id, before, before, "unknown at Midtrans (404)")
            if age < grace:
                return ReconcileResult(payment.order_id, before, before, None)
            answer = None
        if answer is not None and not dry_run:
            early = parse_view(answer, what="status answer")
            if (early.transaction_status, early.gross_amount) == (payment.status, payment.gross_amount):
                # Nothing to write (apply_view would change nothing): no transaction at all.
                return ReconcileResult(payment.order_id, before, before, None)
        with db.translate_errors(), pool.connection() as conn:
            if answer is None:
                view = _synthetic_failure(
                    payment, "404", "the charge never reached Midtrans (unknown there after the grace period)", {}
                )
            else:
                view = parse_view(answer, what="status answer")
            if dry_run:
                current = db.get_payment(conn, payment.order_id)
                conn.rollback()
                now = current.status if current else before
                decision = states.decide(now, view.transaction_status)
                after = view.transaction_status if decision is states.Decision.APPLY else now
                return ReconcileResult(payment.order_id, now, after, None)
            result = apply_view(conn, view)
        if result.note and not result.applied and result.status_before in states.OPEN_STATES:
            return ReconcileResult(payment.order_id, before, result.status_after, result.note)
        return ReconcileResult(payment.order_id, before, result.status_after, None)
    except DependencyError as exc:
        if isinstance(exc, GatewayError):
            return ReconcileResult(payment.order_id, before, before, str(exc))
        raise
    except MidpayError as exc:
        return ReconcileResult(payment.order_id, before, before, str(exc))


# --- reading bodies --------------------------------------------------------------------


def iter_bodies(paths: Iterable[str], read_stdin: Callable[[], str]) -> Iterator[Body]:
    """Bodies from files, directories (their ``*.json``), ``.jsonl`` files and ``-`` (stdin).

    Unreadable paths are a usage error (exit 2) raised before anything is processed.
    """
    from pathlib import Path

    plan: list[tuple[str, Path | None]] = []
    for raw in paths:
        if raw == "-":
            plan.append(("-", None))
            continue
        path = Path(raw)
        if path.is_dir():
            plan.extend((str(p), p) for p in sorted(path.glob("*.json")))
            plan.extend((str(p), p) for p in sorted(path.glob("*.jsonl")))
        elif path.is_file():
            plan.append((raw, path))
        else:
            raise UsageError(f"cannot read {raw}: no such file or directory")
    for name, source in plan:
        if source is None:
            text = read_stdin()
            yield from _split("-", text, jsonl=None)
            continue
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc.__class__.__name__}") from exc
        text = data.decode("utf-8", errors="replace")
        yield from _split(name, text, jsonl=name.endswith(".jsonl"))


def _split(source: str, text: str, *, jsonl: bool | None) -> Iterator[Body]:
    if jsonl is None:  # stdin: one JSON document, or one per line
        single = decode_body(source, text)
        if single.parse_error is None or "\n" not in text.strip():
            yield single
            return
        jsonl = True
    if not jsonl:
        yield decode_body(source, text)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield decode_body(f"{source}:{number}", line)


# --- stored notifications, again -------------------------------------------------------


def stored_body(event: db.WebhookEvent) -> Body:
    """A stored notification as the Body it was received as, named ``event:<id>``.

    ``raw_body`` holds the parsed JSON, or, for a body that was not JSON, its text as a
    JSON string (``_storable``); such text is parsed again and rejected again.
    """
    source = f"event:{event.id}"
    if isinstance(event.raw_body, str):
        return decode_body(source, event.raw_body)
    return Body(source, json.dumps(event.raw_body, ensure_ascii=False), parsed=event.raw_body)


def reprocess_notification(
    conn: db.Connection, event_id: uuid.UUID, server_key: str, *, rejected_only: bool = False
) -> NotificationResult | None:
    """Verify and apply a stored, unprocessed notification again, as ``process_notification`` would.

    The new outcome is recorded on the same event row (no second row for the same
    body). The row is locked for the decision; None when it is processed already or
    another run holds it.
    """
    with conn.transaction():
        event = db.lock_unprocessed_event(conn, event_id, rejected_only=rejected_only)
        if event is None:
            return None
        body = stored_body(event)
        verdict = _verify(body, server_key)
        payment = None
        if verdict.verified and verdict.view is not None:
            payment = db.get_payment(conn, verdict.view.order_id, for_update=True)
        try:
            with conn.transaction():  # a savepoint: a refused update leaves the event to record it
                return _conclude(conn, body, verdict, payment, event_id=event.id)
        except DataConflict as exc:
            db.finish_event(conn, event.id, is_verified=True, outcome="rejected", error=str(exc))
            return _result(body, verdict, "rejected", str(exc))
