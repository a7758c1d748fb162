"""One row of a reconcile run, on a worker thread: ask Midtrans, and say what became of the row;
the results and summary a run reports.

The worker touches no database (``refresh.ask``): an answer that changes the row comes
back as WRITE, with its view, for the run's loop to apply in a batch (``writes``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from midpay import db
from midpay.errors import DatabaseUnavailable, GatewayAuthError, GatewayError, MidpayError
from midpay.payments import refresh
from midpay.payments.answers import Checked

if TYPE_CHECKING:
    from midpay.db import schema
    from midpay.midtrans.breaker import Breaker
    from midpay.midtrans.gateway import Gateway
    from midpay.midtrans.notifications import TransactionView
    from midpay.reconcile.pacing import RateLimiter


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
    """Counts of a reconcile run; ``fatal`` says why it stopped early, if it did."""

    checked: int = 0
    changed: int = 0
    unchanged: int = 0
    errors: int = 0
    unchecked: int = 0  # claimed, then released because the run stopped first
    fatal: MidpayError | None = field(default=None, repr=False)

    def add(self, result: ReconcileResult) -> None:
        self.checked += 1
        if result.error is not None:
            self.errors += 1
        elif result.changed:
            self.changed += 1
        else:
            self.unchanged += 1


# What became of one claimed row (WRITE: Midtrans answered, the loop is to apply it).
DONE, FAILED, TRANSPORT, SKIPPED, FATAL, WRITE = "done", "failed", "transport", "skipped", "fatal", "write"


@dataclass(frozen=True)
class RowCheck:
    """What became of one claimed row, and what the loop is to do with it."""

    payment: db.Payment
    kind: str
    result: ReconcileResult | None = None
    error: MidpayError | None = None
    view: TransactionView | None = None  # the answer to apply (WRITE)



def check_row(
    payment: db.Payment, gateway: Gateway, *, grace: float, dry_run: bool, layout: schema.Layout | None,
    limiter: RateLimiter, stop: threading.Event, breaker: Breaker,
) -> RowCheck:
    """One claimed row, on a worker thread: ask Midtrans (no database), and say what became of it."""
    if not limiter.wait(stop):
        return RowCheck(payment, SKIPPED)
    before = payment.status
    try:
        return _ask(payment, gateway, grace=grace, dry_run=dry_run, layout=layout, breaker=breaker)
    except GatewayAuthError as exc:
        stop.set()  # at once: no other worker starts a call meanwhile
        return RowCheck(payment, FATAL, error=GatewayAuthError(f"reconcile stopped at the first 401: {line(exc)}"))
    except GatewayError as exc:
        breaker.failed(exc)  # stops the other workers at once, not when the loop gets to this result
        return RowCheck(payment, TRANSPORT, failed(payment, before, exc), exc)
    except DatabaseUnavailable as exc:
        return RowCheck(payment, FATAL, error=exc)
    except MidpayError as exc:
        breaker.answered()  # Midtrans answered (and refused): not an outage
        return RowCheck(payment, FAILED, failed(payment, before, exc))
    except Exception as exc:  # noqa: BLE001 - one row's surprise must not sink the run
        mapped = db.map_error(exc)
        if mapped is not None:
            return RowCheck(payment, FATAL, error=mapped)
        text = db.first_line(exc)
        return RowCheck(payment, FAILED, ReconcileResult(
            payment.order_id, before, before, f"could not be applied: {type(exc).__name__}: {text}"[:500]
        ))


def _ask(
    payment: db.Payment, gateway: Gateway, *, grace: float, dry_run: bool, layout: schema.Layout | None,
    breaker: Breaker,
) -> RowCheck:
    checked = refresh.ask(gateway, payment, grace=grace, dry_run=dry_run, layout=layout)
    breaker.answered()
    if not isinstance(checked, Checked):
        return RowCheck(payment, WRITE, view=checked)
    error = line(checked.problem) if checked.problem is not None else None
    result = ReconcileResult(payment.order_id, checked.status_before, checked.status_after, error)
    return RowCheck(payment, DONE if error is None else FAILED, result)


def line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failed(payment: db.Payment, before: str, exc: MidpayError) -> ReconcileResult:
    return ReconcileResult(payment.order_id, before, before, line(exc))
