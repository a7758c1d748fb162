"""The ``/_sandbox/...`` control endpoints: how other processes drive a running sandbox.

No auth and never faulted. Errors answer ``{"sandbox_error": "..."}`` with HTTP 400
(bad request), 404 (unknown order or endpoint) or 409 (a move the order cannot make).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from midpay.errors import MidtransRejected, NotFoundError, UsageError

from .faults import SETTINGS
from .shapes import Reply, json_reply

if TYPE_CHECKING:
    from .server import SandboxServer

CHECKOUT_PAGE = (
    "<html><body><h1>midpay sandbox: simulated GoPay checkout</h1>"
    "<p>Pay with <code>midpay sandbox pay ORDER_ID</code>.</p></body></html>"
)


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"sandbox_error": message})


class ControlEndpoints:
    """Routes ``/_sandbox/<parts>`` to the SandboxServer's Python API."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox

    def __call__(self, method: str, parts: list[str], data: bytes) -> Reply:
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(request, dict):
            return _error(400, "the body must be a JSON object")
        try:
            return self._route(method, parts, request)
        except UsageError as exc:
            return _error(400, str(exc))
        except NotFoundError as exc:
            return _error(404, str(exc))
        except MidtransRejected as exc:
            return _error(409, str(exc))

    def _route(self, method: str, parts: list[str], request: dict[str, object]) -> Reply:
        sandbox = self.sandbox
        if method == "POST" and len(parts) == 2 and parts[0] == "pay":
            return json_reply(200, sandbox.pay(parts[1], str(request.get("status", "settlement"))))
        if method == "GET" and parts == ["stats"]:
            return json_reply(200, sandbox.stats())
        if method == "POST" and parts == ["reset"]:
            sandbox.reset_stats()
            return json_reply(200, {"ok": True})
        if method == "POST" and parts == ["faults"]:
            unknown = sorted(set(request) - set(SETTINGS) - {"seed"})
            if unknown:
                return _error(400, f"unknown settings: {', '.join(unknown)}")
            try:
                return json_reply(200, sandbox.set_faults(**request))  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                return _error(400, str(exc))
        if method == "GET" and parts == ["orders"]:
            return json_reply(200, {"orders": sandbox.orders()})
        if method == "GET" and len(parts) == 2 and parts[0] == "orders":
            order = sandbox.get_order(parts[1])
            if order is None:
                return _error(404, f"the sandbox has no order {parts[1]!r}")
            return json_reply(200, order)
        if method == "GET" and parts == ["health"]:
            return json_reply(200, {"ok": True, "url": sandbox.url})
        if method == "GET" and len(parts) == 2 and parts[0] == "checkout":
            return Reply(200, CHECKOUT_PAGE.encode(), "text/html; charset=utf-8")
        return _error(404, "no such sandbox endpoint")
