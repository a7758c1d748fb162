"""Per-order rules for tests of answer checking: tampered answers and HTTP-level faults.

A rule names an order id and applies to the answers *about that order* (charge, status,
cancel, expire, refund; a status asked by transaction id counts for its order), for the
next ``times`` matching answers or, with ``times=None``, until cleared. ``endpoints``
narrows it to some of those five.

- ``tamper``: patch the JSON answer: ``fields`` set (any JSON values: another order's
  id, a different gross_amount, an unknown transaction_status, a 300-character
  transaction_id, a NUL in status_message ...), ``remove`` drops fields, ``replace``
  starts from an empty body instead, ``echo_authorization`` adds
  ``"headers": {"Authorization": <the request's header>}`` (an error page that leaks
  the key, for tests that midpay never prints it), ``http_status`` changes the HTTP
  status. A ``signature_key`` in the answer is recomputed over the patched order_id,
  status_code and gross_amount (``resign=False`` keeps the original; a ``signature_key``
  in ``fields`` wins), so the checks under test are the field checks.
- ``fault_order``: an HTTP-level fault for that order only: ``500``, ``503``, ``429``,
  ``401`` (before anything happens), ``hangup`` (close the connection, nothing happens),
  ``stall`` (wait ``seconds``, then process and answer), ``lost-answer`` (process, then
  close without answering), ``malformed`` (process, then answer an HTML page).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from midpay.midtrans.notifications import compute_signature

from .shapes import AUTH_FAILED, Reply, json_reply, midtrans_error
from .stats import ORDER_FAULTS

ANSWERS = ("charge", "status", "cancel", "expire", "refund")


class TamperOptions(TypedDict, total=False):
    """The keyword arguments of a tamper rule (``OrderRules.add_tamper`` has their defaults)."""

    remove: Iterable[str]
    replace: bool
    echo_authorization: bool
    http_status: int | None
    resign: bool
    times: int | None
    endpoints: Iterable[str] | None


@dataclass
class Rule:
    order_id: str
    endpoints: frozenset[str]
    times: int | None  # None: until cleared
    fault: str | None = None  # a fault rule, or else a tamper rule
    seconds: float | None = None
    fields: dict[str, Any] | None = None
    remove: tuple[str, ...] = ()
    replace: bool = False
    echo_authorization: bool = False
    http_status: int | None = None
    resign: bool = True

    def describe(self) -> dict[str, Any]:
        shown = {k: v for k, v in vars(self).items() if v not in (None, (), False)}
        shown["endpoints"] = sorted(self.endpoints)
        return shown


def _endpoints(endpoints: Iterable[str] | None) -> frozenset[str]:
    if endpoints is None:
        return frozenset(ANSWERS)
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    chosen = frozenset(endpoints)
    unknown = sorted(chosen - set(ANSWERS))
    if unknown or not chosen:
        raise ValueError(f"endpoints must be some of {', '.join(ANSWERS)}, not {unknown or 'none'}")
    return chosen


def _times(times: int | None) -> int | None:
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a whole number >= 1, or None for every answer until cleared")
    return times


class OrderRules:
    """The rules in force, by order id; ``take`` consumes one use of the first match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, list[Rule]] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)  # read without the lock: a fast path for the common case, no rules

    def add_tamper(
        self,
        order_id: str,
        fields: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
        replace: bool = False,
        echo_authorization: bool = False,
        http_status: int | None = None,
        resign: bool = True,
        times: int | None = None,
        endpoints: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        if fields is not None and not isinstance(fields, Mapping):
            raise ValueError("fields must be a JSON object")
        if http_status is not None and (
            isinstance(http_status, bool) or not isinstance(http_status, int) or not 100 <= http_status <= 599
        ):
            raise ValueError("http_status must be an HTTP status code (100-599)")
        remove = (remove,) if isinstance(remove, str) else tuple(remove)
        if not all(isinstance(name, str) for name in remove):
            raise ValueError("remove must be a list of field names")
        patch = dict(fields or {})
        json.dumps(patch)  # ValueError/TypeError now rather than on the request that meets it
        rule = Rule(
            order_id,
            _endpoints(endpoints),
            _times(times),
            fields=patch,
            remove=remove,
            replace=bool(replace),
            echo_authorization=bool(echo_authorization),
            http_status=http_status,
            resign=bool(resign),
        )
        return self._add(rule)

    def add_fault(
        self, order_id: str, fault: str, *, times: int | None, endpoints: Iterable[str] | None, seconds: float | None
    ) -> dict[str, Any]:
        if fault not in ORDER_FAULTS:
            raise ValueError(f"fault must be one of {', '.join(ORDER_FAULTS)}, not {fault!r}")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0):
            raise ValueError("seconds must be a number >= 0")
        return self._add(Rule(order_id, _endpoints(endpoints), _times(times), fault=fault, seconds=seconds))

    def _add(self, rule: Rule) -> dict[str, Any]:
        if not isinstance(rule.order_id, str) or not rule.order_id:
            raise ValueError("order_id must be a non-empty string")
        with self._lock:
            self._rules.setdefault(rule.order_id, []).append(rule)
        return rule.describe()

    def clear(self, order_id: str | None = None) -> None:
        with self._lock:
            if order_id is None:
                self._rules.clear()
            else:
                self._rules.pop(order_id, None)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.describe() for rules in self._rules.values() for rule in rules]

    def take(self, order_id: str, endpoint: str) -> tuple[Rule | None, Rule | None]:
        """(fault rule, tamper rule) for one answer about ``order_id``, each use counted."""
        found: dict[bool, Rule] = {}
        with self._lock:
            rules = self._rules.get(order_id)
            if not rules:
                return None, None
            for rule in list(rules):
                is_fault = rule.fault is not None
                if is_fault in found or endpoint not in rule.endpoints:
                    continue
                found[is_fault] = rule
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        rules.remove(rule)
            if not rules:
                del self._rules[order_id]
        return found.get(True), found.get(False)


def refusal(rule: Rule) -> Reply | None:
    """The answer of a per-order fault that strikes before processing, else None."""
    if rule.fault == "401":
        return json_reply(401, midtrans_error("401", AUTH_FAILED))
    if rule.fault in ("500", "503", "429"):
        messages = {
            "500": "Sorry. Our system is recovering from unexpected issues. Please retry.",
            "503": "Bank/partner is experiencing connection issue. Please retry later.",
            "429": "API rate limit exceeded",
        }
        return json_reply(int(rule.fault), midtrans_error(rule.fault, messages[rule.fault]))
    return None


def apply(rule: Rule, reply: Reply, authorization: str | None, server_key: str) -> Reply:
    """``reply`` patched by a tamper rule (left alone if it is not a JSON object)."""
    try:
        original = json.loads(reply.body)
    except ValueError:
        return reply
    if not isinstance(original, dict):
        return reply
    body: dict[str, Any] = {} if rule.replace else original
    for name in rule.remove:
        body.pop(name, None)
    body.update(rule.fields or {})
    if rule.echo_authorization:
        body["headers"] = {"Authorization": authorization or ""}
    fields = rule.fields or {}
    signed = (body.get("order_id"), body.get("status_code"), body.get("gross_amount"))
    if (
        rule.resign
        and "signature_key" in body
        and "signature_key" not in fields
        and all(isinstance(part, str) for part in signed)
    ):
        body["signature_key"] = compute_signature(str(signed[0]), str(signed[1]), str(signed[2]), server_key)
    return json_reply(rule.http_status or reply.status, body, reply.headers)
