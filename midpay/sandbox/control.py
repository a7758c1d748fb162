"""The ``/_sandbox/...`` control endpoints: how other processes drive a running sandbox.

No auth and never faulted. Bodies are JSON objects whose keys are the Python method's
keyword arguments (unknown keys are refused). Errors answer ``{"sandbox_error": "..."}``
with HTTP 400 (bad request), 404 (unknown order or endpoint) or 409 (something
Midtrans would refuse: a move out of a final state, a refund of too much, a taken id).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from midpay.errors import MidtransRejected, NotFoundError, UsageError

from .faults import SETTINGS
from .shapes import Reply, json_reply

if TYPE_CHECKING:
    from .server import SandboxServer

CHECKOUT_PAGE = (
    "<html><body><h1>midpay sandbox: simulated GoPay checkout</h1>"
    "<p>Pay with <code>midpay sandbox pay ORDER_ID</code>.</p></body></html>"
)
_TAMPER_KEYS = {"fields", "remove", "replace", "echo_authorization", "http_status", "resign", "times", "endpoints"}
_SEED_KEYS = {"count", "order_ids", "prefix", "amount", "payment_type", "settle_fraction"}


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"sandbox_error": message})


def _only(request: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise _BadRequest(f"unknown settings: {', '.join(unknown)}")
    return request


class ControlEndpoints:
    """Routes ``/_sandbox/<parts>`` to the SandboxServer's Python API."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        s = sandbox
        # (method, first segment, takes an order id) -> handler(order id or "", body)
        self._routes: dict[tuple[str, str, bool], Callable[[str, dict[str, Any]], Reply]] = {
            ("POST", "pay", True): lambda o, r: json_reply(
                200, s.pay(o, **_only({"status": "settlement", **r}, {"status", "payment_type", "fraud_status"}))
            ),
            ("GET", "stats", False): lambda o, r: json_reply(200, s.stats()),
            ("POST", "reset", False): self._reset,
            ("POST", "faults", False): lambda o, r: json_reply(200, s.set_faults(**_only(r, {*SETTINGS, "seed"}))),
            ("GET", "orders", False): lambda o, r: json_reply(200, {"orders": s.orders()}),
            ("GET", "orders", True): self._order,
            ("GET", "health", False): lambda o, r: json_reply(200, {"ok": True, "url": s.url}),
            ("GET", "checkout", True): lambda o, r: Reply(200, CHECKOUT_PAGE.encode(), "text/html; charset=utf-8"),
            ("POST", "refund-outside", True): lambda o, r: json_reply(
                200, {"refund": s.refund_outside(o, **_only(r, {"amount", "reason"}))}
            ),
            ("POST", "confirm-refunds", True): lambda o, r: json_reply(
                200, {"notifications": s.confirm_refunds(o, **_only(r, {"refund_chargeback_id"}))}
            ),
            ("GET", "refunds", False): lambda o, r: json_reply(200, {"requests": s.refund_requests()}),
            ("GET", "refunds", True): self._refunds,
            ("POST", "settings", False): self._settings,
            ("POST", "tamper", True): lambda o, r: json_reply(200, s.tamper(o, **_only(r, _TAMPER_KEYS))),
            ("POST", "fault", True): lambda o, r: json_reply(
                200, s.fault_order(o, **_only(r, {"fault", "times", "endpoints", "seconds"}))
            ),
            ("GET", "rules", False): lambda o, r: json_reply(200, {"rules": s.list_rules()}),
            ("DELETE", "rules", False): self._clear_rules,
            ("DELETE", "rules", True): self._clear_rules,
            ("POST", "seed", False): lambda o, r: json_reply(200, {"orders": s.seed_orders(**_only(r, _SEED_KEYS))}),
            ("GET", "deliveries", False): lambda o, r: json_reply(200, {"deliveries": s.deliveries()}),
            ("POST", "wait-deliveries", False): lambda o, r: json_reply(
                200, {"idle": s.wait_for_deliveries(**_only(r, {"timeout"}))}
            ),
        }

    def __call__(self, method: str, parts: list[str], data: bytes) -> Reply:
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(request, dict):
            return _error(400, "the body must be a JSON object")
        if not parts or len(parts) > 2 or not parts[-1]:
            return _error(404, "no such sandbox endpoint")
        handler = self._routes.get((method, parts[0], len(parts) == 2))
        if handler is None:
            return _error(404, "no such sandbox endpoint")
        try:
            return handler(parts[1] if len(parts) == 2 else "", request)
        except (_BadRequest, UsageError, TypeError, ValueError) as exc:
            return _error(400, str(exc))
        except NotFoundError as exc:
            return _error(404, str(exc))
        except MidtransRejected as exc:
            return _error(409, str(exc))

    def _reset(self, order_id: str, request: dict[str, Any]) -> Reply:
        self.sandbox.reset_stats()
        return json_reply(200, {"ok": True})

    def _order(self, order_id: str, request: dict[str, Any]) -> Reply:
        order = self.sandbox.get_order(order_id)
        if order is None:
            return _error(404, f"the sandbox has no order {order_id!r}")
        return json_reply(200, order)

    def _refunds(self, order_id: str, request: dict[str, Any]) -> Reply:
        order = self.sandbox.get_order(order_id)
        if order is None:
            return _error(404, f"the sandbox has no order {order_id!r}")
        return json_reply(
            200,
            {
                "order_id": order["order_id"],
                "paid_out": self.sandbox.paid_out(order_id),
                "refunds": order["refunds"],
                "requests": self.sandbox.refund_requests(order["order_id"]),
            },
        )

    def _settings(self, order_id: str, request: dict[str, Any]) -> Reply:
        _only(request, {"auto_confirm_refunds"})
        if "auto_confirm_refunds" in request:
            if not isinstance(request["auto_confirm_refunds"], bool):
                raise _BadRequest("auto_confirm_refunds must be true or false")
            self.sandbox.auto_confirm_refunds = request["auto_confirm_refunds"]
        return json_reply(200, {"auto_confirm_refunds": self.sandbox.auto_confirm_refunds})

    def _clear_rules(self, order_id: str, request: dict[str, Any]) -> Reply:
        self.sandbox.clear_rules(order_id or None)
        return json_reply(200, {"ok": True})
