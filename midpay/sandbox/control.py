"""The ``/_sandbox/...`` control endpoints: how other processes drive a running sandbox.

No auth and never faulted. Bodies are JSON objects whose keys are the Python method's
keyword arguments (unknown keys are refused). Errors answer ``{"sandbox_error": "..."}``
with HTTP 400 (bad request), 404 (unknown order or endpoint) or 409 (something
Midtrans would refuse: a move out of a final state, a refund of too much, a taken id).

This module is the HTTP half only (decoding, checking keys, mapping errors); which
endpoint calls which method of the Python API is ``SandboxServer.control_routes``, next
to the methods, so that this module needs nothing of the server it serves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from midpay.errors import MidtransRejected, NotFoundError, UsageError

from .shapes import Reply, json_reply

CHECKOUT_PAGE = Reply(
    200,
    b"<html><body><h1>midpay sandbox: simulated GoPay checkout</h1>"
    b"<p>Pay with <code>midpay sandbox pay ORDER_ID</code>.</p></body></html>",
    "text/html; charset=utf-8",
)

# An endpoint: (HTTP method, first segment after /_sandbox/, whether an order id follows).
Route = tuple[str, str, bool]
# Called with the order id ("" when none) and the JSON body; returns the JSON answer (200) or a Reply.
Handler = Callable[[str, dict[str, Any]], Any]


class BadRequest(ValueError):
    """A control request that cannot be carried out as asked (HTTP 400)."""


def only(request: Mapping[str, Any], allowed: Collection[str]) -> dict[str, Any]:
    """``request`` as keyword arguments, when it holds nothing but ``allowed`` keys."""
    unknown = sorted(set(request) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown settings: {', '.join(unknown)}")
    return dict(request)


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"sandbox_error": message})


class ControlEndpoints:
    """Routes ``/_sandbox/<parts>`` to the handlers of ``routes``."""

    def __init__(self, routes: Mapping[Route, Handler]) -> None:
        self._routes = dict(routes)

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
            answer = handler(parts[1] if len(parts) == 2 else "", request)
        except (UsageError, TypeError, ValueError) as exc:
            return _error(400, str(exc))
        except NotFoundError as exc:
            return _error(404, str(exc))
        except MidtransRejected as exc:
            return _error(409, str(exc))
        return answer if isinstance(answer, Reply) else json_reply(200, answer)
