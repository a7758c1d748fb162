"""Midtrans bodies as midpay reads them: signature check and parsing. Pure: no I/O.

A notification (and a charge or status answer) is a flat JSON object of strings:

    order_id, status_code, gross_amount ("154600.00"), signature_key,
    transaction_status, transaction_id, payment_type, fraud_status,
    transaction_time / settlement_time / expiry_time ("YYYY-MM-DD HH:MM:SS", Jakarta time)

The signature is ``sha512(order_id + status_code + gross_amount + server_key)`` in hex,
computed over the raw strings of the very body being checked. Midtrans adds fields over
time, so anything not read here is ignored and kept in ``TransactionView.raw``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from midpay.errors import InvalidPayload
from midpay.states import normalize

# Western Indonesian Time. Jakarta has kept +07:00 without DST since 1964, so a fixed
# offset is exact and needs no tz database (which Windows installs may lack).
JAKARTA = timezone(timedelta(hours=7), "WIB")
MIDTRANS_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# A non-negative amount with optional decimals: "44000", "44000.00". ASCII digits only:
# str.isdigit() and Decimal() would also take "٤٤", "1_000", "1e3" or "NaN".
_AMOUNT_RE = re.compile(r"[0-9]{1,19}(?:\.[0-9]{1,6})?", re.ASCII)
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}", re.ASCII)
# PostgreSQL bigint, where the amount ends up.
_MAX_AMOUNT = 2**63 - 1


def compute_signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """Midtrans' notification signature: sha512 hex of the four strings, concatenated."""
    payload = f"{order_id}{status_code}{gross_amount}{server_key}".encode()
    return hashlib.sha512(payload).hexdigest()


def verify_signature(body: Mapping[str, Any], server_key: str) -> bool:
    """Whether ``body['signature_key']`` signs this body's raw strings; never raises."""
    if not server_key:
        return False  # with no secret anyone could compute the "signature"
    if not isinstance(body, Mapping):
        return False
    order_id, status_code = body.get("order_id"), body.get("status_code")
    gross_amount, signature = body.get("gross_amount"), body.get("signature_key")
    if not (
        isinstance(order_id, str)
        and isinstance(status_code, str)
        and isinstance(gross_amount, str)
        and isinstance(signature, str)
    ):
        return False
    expected = compute_signature(order_id, status_code, gross_amount, server_key)
    return hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace"))


def _show(raw: object) -> str:
    """A short, single-line rendering of a bad value for an error message."""
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_amount(raw: object, field: str = "gross_amount") -> int:
    """A whole rupiah amount from ``"44000.00"`` or ``44000``; never via float."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        kind = type(raw).__name__
        raise InvalidPayload(f'field {field!r} must be a string like "44000.00", not {kind} {_show(raw)}')
    if isinstance(raw, int):
        value = raw
    else:
        if not _AMOUNT_RE.fullmatch(raw):
            raise InvalidPayload(f'field {field!r} is not an amount like "44000.00": {_show(raw)}')
        exact = Decimal(raw)
        if exact != exact.to_integral_value():
            raise InvalidPayload(f"field {field!r} has a fraction of a rupiah: {_show(raw)}")
        value = int(exact)
    if value < 0:
        raise InvalidPayload(f"field {field!r} is negative: {_show(raw)}")
    if value > _MAX_AMOUNT:
        raise InvalidPayload(f"field {field!r} is too large: {_show(raw)}")
    return value


def parse_time(raw: object, field: str) -> datetime | None:
    """A Midtrans time ``"YYYY-MM-DD HH:MM:SS"`` (Jakarta) as an aware datetime; None when absent."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidPayload(f"field {field!r} must be a time string, not {type(raw).__name__} {_show(raw)}")
    text = raw.strip()
    if not _TIME_RE.fullmatch(text):
        raise InvalidPayload(f'field {field!r} is not a time like "2021-06-15 18:45:13": {_show(raw)}')
    try:
        # The regex fixed the shape; fromisoformat reads it ~50x faster than strptime.
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidPayload(f"field {field!r} is not a valid date and time: {_show(raw)}") from None
    return naive.replace(tzinfo=JAKARTA)


def format_time(moment: datetime) -> str:
    """The Midtrans rendering of ``moment`` in Jakarta time (the inverse of ``parse_time``)."""
    return moment.astimezone(JAKARTA).strftime(MIDTRANS_TIME_FORMAT)


@dataclass(frozen=True)
class TransactionView:
    """What midpay reads from one Midtrans body (notification, status or charge answer)."""

    order_id: str
    transaction_status: str
    status_code: str
    gross_amount: int
    gross_amount_raw: str
    transaction_id: str | None
    payment_type: str | None
    fraud_status: str | None
    status_message: str | None
    transaction_time: datetime | None
    settlement_time: datetime | None
    expiry_time: datetime | None
    qr_string: str | None
    actions: tuple[dict[str, str], ...] = field(default=(), hash=False)
    signature_key: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, hash=False, compare=False)

    def action_url(self, name: str) -> str | None:
        """The URL of the action called ``name`` (e.g. ``generate-qr-code``), if any."""
        for action in self.actions:
            if action.get("name") == name:
                return action.get("url") or None
        return None


def _required_text(body: Mapping[str, Any], name: str, what: str) -> str:
    if name not in body or body[name] is None:
        raise InvalidPayload(f"{what} field {name!r} is missing")
    value = body[name]
    if not isinstance(value, str):
        raise InvalidPayload(f"{what} field {name!r} must be a string, not {type(value).__name__} {_show(value)}")
    if not value.strip():
        raise InvalidPayload(f"{what} field {name!r} is empty")
    return value


def _optional_text(body: Mapping[str, Any], name: str, what: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{what} field {name!r} must be a string, not {type(value).__name__} {_show(value)}")
    return value


def _time(body: Mapping[str, Any], name: str, what: str) -> datetime | None:
    try:
        return parse_time(body.get(name), name)
    except InvalidPayload as exc:
        raise InvalidPayload(f"{what} {exc}") from None


def _actions(body: Mapping[str, Any], what: str) -> tuple[dict[str, str], ...]:
    raw = body.get("actions")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidPayload(f"{what} field 'actions' must be a list, not {type(raw).__name__}")
    actions: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidPayload(f"{what} field 'actions' holds a {type(item).__name__}, not an object")
        entry: dict[str, str] = {}
        for key in ("name", "method", "url"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidPayload(f"{what} field 'actions' has a non-string {key!r}: {_show(value)}")
            entry[key] = value or ""
        actions.append(entry)
    return tuple(actions)


def parse_view(body: object, *, what: str = "notification") -> TransactionView:
    """Read a notification, status or charge answer; ``what`` names the body in errors."""
    if not isinstance(body, dict):
        raise InvalidPayload(f"{what} is not a JSON object but {type(body).__name__}")
    order_id = _required_text(body, "order_id", what)
    status = normalize(_required_text(body, "transaction_status", what))
    if "gross_amount" not in body or body["gross_amount"] is None:
        raise InvalidPayload(f"{what} field 'gross_amount' is missing")
    raw_amount = body["gross_amount"]
    try:
        amount = parse_amount(raw_amount, "gross_amount")
    except InvalidPayload as exc:
        raise InvalidPayload(f"{what} {exc}") from None
    expiry_key = "expiry_time" if body.get("expiry_time") is not None else "expire_time"
    return TransactionView(
        order_id=order_id,
        transaction_status=status,
        status_code=_optional_text(body, "status_code", what) or "",
        gross_amount=amount,
        gross_amount_raw=raw_amount if isinstance(raw_amount, str) else str(raw_amount),
        transaction_id=_optional_text(body, "transaction_id", what),
        payment_type=_optional_text(body, "payment_type", what),
        fraud_status=_optional_text(body, "fraud_status", what),
        status_message=_optional_text(body, "status_message", what),
        transaction_time=_time(body, "transaction_time", what),
        settlement_time=_time(body, "settlement_time", what),
        expiry_time=_time(body, expiry_key, what),
        qr_string=_optional_text(body, "qr_string", what),
        actions=_actions(body, what),
        signature_key=_optional_text(body, "signature_key", what),
        raw=body,
    )


def parse_notification(body: object) -> TransactionView:
    """Read a notification: ``parse_view`` plus the fields its signature needs.

    Nothing but the signed fields is believed (``proof``): the body's
    transaction_status, times, transaction_id and fraud_status are read so that they
    can be shown and kept, never to decide.
    """
    view = parse_view(body, what="notification")
    _required_text(view.raw, "status_code", "notification")
    _required_text(view.raw, "signature_key", "notification")
    return view


# --- what a signature proves on its own (``--offline``) ----------------------------------


@dataclass(frozen=True)
class Proof:
    """What a verified body's signed ``status_code`` proves, with no one asked.

    ``state`` is the state it proves; when ``exact`` is false it is only a floor (the
    transaction exists at Midtrans, so a ``created`` row is at least ``pending``) and
    the rest awaits confirmation, for the reason in ``unproven``.
    """

    status_code: str
    state: str | None
    exact: bool
    unproven: str | None = None


# REFERENCE.md §7 (status code list) and §5 (notification samples). The signature
# covers order_id, status_code and gross_amount only, so a body proves no more than its
# code's group. 200 and 202 each stand for several states, some final, some paid, some
# not: none of them can be picked without Midtrans.
_PROOFS: dict[str, Proof] = {
    "201": Proof("201", "pending", True),
    "407": Proof("407", "expire", True),
    "200": Proof(
        "200",
        "pending",
        False,
        "status_code 200 stands for settlement, capture, refund, partial_refund, cancel or authorize: "
        "which one, and when it was paid, only Midtrans can say",
    ),
    "202": Proof(
        "202",
        "pending",
        False,
        "status_code 202 stands for deny, cancel, expire or failure (or a refund the bank denied): "
        "which one only Midtrans can say",
    ),
}


def proof(status_code: str) -> Proof:
    """What a verified body with this signed ``status_code`` proves without asking Midtrans."""
    found = _PROOFS.get(status_code)
    if found is not None:
        return found
    return Proof(status_code, None, False, f"status_code {status_code[:10]!r} proves no state")
