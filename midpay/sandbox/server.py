"""SandboxServer: the sandbox's state, Core API, refunds, faults, notifier and HTTP front, composed.

Methods that act like Midtrans or its customers (``pay``, ``refund_outside``,
``confirm_refunds``, ``paid_out``) raise midpay's errors: UsageError for a bad
argument, NotFoundError for an unknown order, MidtransRejected (412, 414) for what
Midtrans would refuse. Methods that configure the sandbox (``set_faults``, ``tamper``,
``fault_order``, ``seed_orders``) raise ValueError for a bad argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

from midpay.errors import NotFoundError, UsageError

from .api import ORDER_ID_MAX, CoreApi
from .control import CHECKOUT_PAGE, BadRequest, ControlEndpoints, Handler, Route, only
from .faults import SETTINGS, FaultPolicy
from .http import HttpFront
from .notify import Notifier
from .refunds import RefundDesk
from .reqlog import RequestLog
from .shapes import DEV_SERVER_KEY
from .state import PAYMENT_TYPES, SandboxState
from .stats import Stats
from .tamper import OrderRules, TamperOptions

SEED_MAX = 1_000_000
_SEED_KEYS = {"count", "order_ids", "prefix", "amount", "payment_type", "settle_fraction"}
_TAMPER_KEYS = {"fields", *TamperOptions.__optional_keys__}


class SandboxServer:
    """A Midtrans-compatible Core API in a background thread of this process."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_key: str | None = None,
        latency_ms: int = 0,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        stall_seconds: float = 30.0,
        seed: int | None = None,
        expiry_seconds: int = 900,
        notify_url: str | None = None,
        notify_dir: Path | None = None,
        notify_retry_scale: float = 1.0,
        notify_timeout: float = 15.0,
        auto_confirm_refunds: bool = True,
        request_log: Callable[[str], None] | None = None,
    ) -> None:
        if expiry_seconds <= 0:
            raise ValueError("expiry_seconds must be positive")
        self.server_key = server_key or DEV_SERVER_KEY
        self.using_dev_key = self.server_key == DEV_SERVER_KEY
        self.expiry_seconds = expiry_seconds
        self.notify_url = notify_url
        self.notify_dir = Path(notify_dir) if notify_dir is not None else None
        self._stats = Stats()
        self.faults = FaultPolicy(seed)
        self.set_faults(
            fail_rate=fail_rate,
            rate_limit_rate=rate_limit_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            latency_ms=latency_ms,
            stall_seconds=stall_seconds,
        )
        self.notifier = Notifier(
            stats=self._stats,
            notify_url=notify_url,
            notify_dir=self.notify_dir,
            retry_scale=notify_retry_scale,
            timeout=notify_timeout,
        )
        self.state = SandboxState(
            server_key=self.server_key, expiry_seconds=expiry_seconds, stats=self._stats, emit=self.notifier
        )
        self.refunds = RefundDesk(self.state, auto_confirm=auto_confirm_refunds)
        self.rules = OrderRules()
        self.front = HttpFront(
            host=host,
            port=port,
            server_key=self.server_key,
            state=self.state,
            api=CoreApi(self.state, self.refunds),
            faults=self.faults,
            stats=self._stats,
            control=ControlEndpoints(self.control_routes()),
            rules=self.rules,
            request_log=RequestLog(request_log) if request_log is not None else None,
        )

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url!r}, dev_key={self.using_dev_key})"

    @property
    def url(self) -> str:
        """``http://host:port`` once started, else ``""``."""
        return self.front.url

    @property
    def host(self) -> str:
        return self.front.host

    @property
    def port(self) -> int:
        return self.front.port

    # -- lifecycle --

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; ``url`` is set once this returns."""
        try:
            self.front.start()
        except OSError as exc:
            raise UsageError(f"the sandbox cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self.notifier.start()
        return self

    def stop(self) -> None:
        """Stop serving (stalled requests woken, keep-alive connections closed), drop pending retries."""
        self.front.stop()
        self.notifier.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inspection and control --

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last ``reset_stats()``, delivery attempts included (a deep copy)."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters and forget delivery attempts; orders and refund requests are kept."""
        self._stats.reset()

    def set_faults(self, *, seed: int | None = None, **settings: float | None) -> dict[str, float]:
        """Change fault settings at run time (``midpay.sandbox.faults``); returns them all.

        The settings: ``fail_rate``, ``rate_limit_rate``, ``stall_rate``, ``malformed_rate``
        (0..1), ``latency_ms``, ``stall_seconds``; None keeps one as it is.
        """
        return self.faults.set(seed=seed, **settings)

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        """A snapshot of the latest transaction of ``order_id`` (or of a transaction id)."""
        return self.state.get_order(order_id)

    def orders(self) -> list[dict[str, Any]]:
        """Snapshots of the latest transaction of every order."""
        return self.state.orders()

    # -- customers and the dashboard --

    def pay(
        self,
        order_id: str,
        status: str = "settlement",
        *,
        payment_type: str | None = None,
        fraud_status: str | None = None,
    ) -> dict[str, Any]:
        """Move an order as its customer (or Midtrans' fraud review) would; return the signed notification.

        From pending: settlement, capture, deny, cancel, expire; from capture: settlement,
        deny, cancel, or capture again with another ``fraud_status`` (challenge -> accept).
        The order's current status with nothing changed sends its notification again.
        ``payment_type="qris"`` on a gopay charge paying (settlement, capture, deny): paid by
        QRIS scan, so answers and notifications say qris from then on. ``fraud_status``:
        accept, challenge or deny (kept when None). When notifications are POSTed, this
        returns once the first delivery attempt of each has its answer.
        """
        note, deliveries = self.state.pay(order_id, status, payment_type=payment_type, fraud_status=fraud_status)
        if isinstance(deliveries, list):
            self.notifier.wait_first(deliveries)
        return note

    def refund_outside(self, order_id: str, amount: int | None = None, reason: str | None = None) -> dict[str, Any]:
        """A refund made on the Midtrans dashboard (default: all that remains); returns its refunds[] item.

        Its refund_key is a UUID of Midtrans' own; it sends the refund notifications and
        shows in status answers and ``paid_out``, but not in ``refund_requests``.
        """
        return self.refunds.outside(order_id, amount, reason)

    def confirm_refunds(self, order_id: str, refund_chargeback_id: int | None = None) -> list[dict[str, Any]]:
        """The bank confirms the order's unconfirmed refunds (or one); returns the notification of each.

        Only needed with ``auto_confirm_refunds`` off; otherwise refunds are confirmed when made.
        """
        return self.refunds.confirm(order_id, refund_chargeback_id)

    @property
    def auto_confirm_refunds(self) -> bool:
        """Whether the bank confirms each refund at once (two notifications in a row)."""
        return self.refunds.auto_confirm

    @auto_confirm_refunds.setter
    def auto_confirm_refunds(self, value: bool) -> None:
        self.refunds.auto_confirm = bool(value)

    # -- payouts --

    def paid_out(self, order_id: str) -> int:
        """The money (rupiah) refunded to the customer of ``order_id``, however it was refunded."""
        return self.refunds.paid_out(order_id)

    def refund_requests(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """Every refund request the API processed, oldest first (kept across ``reset_stats``).

        Each: order_id, transaction_id, endpoint (refund|direct), refund_key and amount
        as sent (None when absent), status_code answered, replay (the key was seen
        before: nothing paid), refund_chargeback_id, paid (rupiah this request paid out).
        """
        return self.refunds.requests(order_id)

    # -- per-order rules --

    def tamper(
        self, order_id: str, fields: Mapping[str, Any] | None = None, **options: Unpack[TamperOptions]
    ) -> dict[str, Any]:
        """Patch the answers about ``order_id`` (see ``midpay.sandbox.tamper``); returns the rule."""
        return self.rules.add_tamper(order_id, fields, **options)

    def fault_order(
        self,
        order_id: str,
        fault: str,
        *,
        times: int | None = None,
        endpoints: Iterable[str] | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """An HTTP-level fault on the answers about ``order_id`` only (500, 503, 429, 401, hangup,
        stall, lost-answer, malformed); returns the rule."""
        return self.rules.add_fault(order_id, fault, times=times, endpoints=endpoints, seconds=seconds)

    def clear_rules(self, order_id: str | None = None) -> None:
        """Drop the tamper and fault rules of ``order_id``, or all of them."""
        self.rules.clear(order_id)

    def list_rules(self) -> list[dict[str, Any]]:
        """The rules still in force, with the uses they have left (``times``)."""
        return self.rules.listing()

    # -- bulk seeding --

    def seed_orders(
        self,
        count: int | None = None,
        *,
        order_ids: Sequence[str] | None = None,
        prefix: str = "seed-",
        amount: int | Sequence[int] = 10000,
        payment_type: str = "gopay",
        settle_fraction: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Create orders at once, as if each had been charged (no notifications, no charge counted).

        Either ``count`` orders named ``f"{prefix}{i}"`` (i from 0) or the given
        ``order_ids``; ``amount`` one for all or one each. ``settle_fraction`` of them,
        spread evenly, are already settled. Returns one row each: order_id,
        transaction_id, gross_amount, payment_type, transaction_status, transaction_time,
        expiry_time, settlement_time. Nothing is created if an order id is taken
        (MidtransRejected 406).
        """
        ids = _seed_ids(count, order_ids, prefix)
        amounts = [amount] * len(ids) if isinstance(amount, int) else list(amount)
        if len(amounts) != len(ids) or any(isinstance(a, bool) or not isinstance(a, int) or a <= 0 for a in amounts):
            raise ValueError("amount must be a whole number > 0, or one such number per order")
        if payment_type not in PAYMENT_TYPES:
            raise ValueError(f"payment_type must be gopay or qris, not {payment_type!r}")
        if isinstance(settle_fraction, bool) or not isinstance(settle_fraction, int | float):
            raise ValueError("settle_fraction must be a number between 0 and 1")
        if not 0.0 <= settle_fraction <= 1.0:
            raise ValueError("settle_fraction must be a number between 0 and 1")
        settle = [int((i + 1) * settle_fraction) > int(i * settle_fraction) for i in range(len(ids))]
        return self.state.seed(ids, amounts, payment_type, settle)

    # -- the same over HTTP --

    def control_routes(self) -> dict[Route, Handler]:
        """Which ``/_sandbox/...`` endpoint calls which of these methods (``midpay.sandbox.control``)."""
        return {
            ("POST", "pay", True): lambda o, r: self.pay(
                o, **only({"status": "settlement", **r}, {"status", "payment_type", "fraud_status"})
            ),
            ("GET", "stats", False): lambda o, r: self.stats(),
            ("POST", "reset", False): lambda o, r: _done(self.reset_stats),
            ("POST", "faults", False): lambda o, r: self.set_faults(**only(r, {*SETTINGS, "seed"})),
            ("GET", "orders", False): lambda o, r: {"orders": self.orders()},
            ("GET", "orders", True): lambda o, r: self._known_order(o),
            ("GET", "health", False): lambda o, r: {"ok": True, "url": self.url},
            ("GET", "checkout", True): lambda o, r: CHECKOUT_PAGE,
            ("POST", "refund-outside", True): lambda o, r: {
                "refund": self.refund_outside(o, **only(r, {"amount", "reason"}))
            },
            ("POST", "confirm-refunds", True): lambda o, r: {
                "notifications": self.confirm_refunds(o, **only(r, {"refund_chargeback_id"}))
            },
            ("GET", "refunds", False): lambda o, r: {"requests": self.refund_requests()},
            ("GET", "refunds", True): lambda o, r: self._refunds_of(o),
            ("POST", "settings", False): lambda o, r: self._settings(only(r, {"auto_confirm_refunds"})),
            ("POST", "tamper", True): lambda o, r: self.tamper(o, **only(r, _TAMPER_KEYS)),
            ("POST", "fault", True): lambda o, r: self.fault_order(
                o, **only(r, {"fault", "times", "endpoints", "seconds"})
            ),
            ("GET", "rules", False): lambda o, r: {"rules": self.list_rules()},
            ("DELETE", "rules", False): lambda o, r: _done(self.clear_rules),
            ("DELETE", "rules", True): lambda o, r: _done(lambda: self.clear_rules(o)),
            ("POST", "seed", False): lambda o, r: {"orders": self.seed_orders(**only(r, _SEED_KEYS))},
            ("GET", "deliveries", False): lambda o, r: {"deliveries": self.deliveries()},
            ("POST", "wait-deliveries", False): lambda o, r: {"idle": self.wait_for_deliveries(**only(r, {"timeout"}))},
        }

    def _known_order(self, order_id: str) -> dict[str, Any]:
        order = self.get_order(order_id)
        if order is None:
            raise NotFoundError(f"the sandbox has no order {order_id!r}")
        return order

    def _refunds_of(self, order_id: str) -> dict[str, Any]:
        order = self._known_order(order_id)
        return {
            "order_id": order["order_id"],
            "paid_out": self.paid_out(order_id),
            "refunds": order["refunds"],
            "requests": self.refund_requests(order["order_id"]),
        }

    def _settings(self, request: dict[str, Any]) -> dict[str, Any]:
        if "auto_confirm_refunds" in request:
            if not isinstance(request["auto_confirm_refunds"], bool):
                raise BadRequest("auto_confirm_refunds must be true or false")
            self.auto_confirm_refunds = request["auto_confirm_refunds"]
        return {"auto_confirm_refunds": self.auto_confirm_refunds}

    # -- notification deliveries --

    def deliveries(self) -> list[dict[str, Any]]:
        """Every notification delivery attempt since start or ``reset_stats()`` (as in ``stats()``)."""
        return self._stats.deliveries()

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait until no notification delivery (or retry) is scheduled or under way; False on timeout."""
        return self.notifier.idle(timeout)


def _done(action: Callable[[], None]) -> dict[str, bool]:
    action()
    return {"ok": True}


def _seed_ids(count: int | None, order_ids: Sequence[str] | None, prefix: str) -> list[str]:
    if (count is None) == (order_ids is None):
        raise ValueError("give either count or order_ids")
    if order_ids is None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= SEED_MAX:
            raise ValueError(f"count must be a whole number from 1 to {SEED_MAX}")
        if not isinstance(prefix, str):
            raise ValueError("prefix must be a string")
        ids = [f"{prefix}{i}" for i in range(count)]
    else:
        ids = list(order_ids)
        if not 0 < len(ids) <= SEED_MAX:
            raise ValueError(f"order_ids must hold 1 to {SEED_MAX} ids")
    if any(not isinstance(i, str) or not i or len(i) > ORDER_ID_MAX for i in ids):
        raise ValueError(f"every order id must be a string of 1 to {ORDER_ID_MAX} characters")
    if len(set(ids)) != len(ids):
        raise ValueError("order ids must be unique")
    return ids
