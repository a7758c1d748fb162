"""What the sandbox's answers look like: codes, messages, money strings, the QRIS payload.

Pure helpers with no state; every other sandbox module builds its bodies from these.
"""

from __future__ import annotations

import binascii
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

DEV_SERVER_KEY = "SB-Mid-server-midpay-sandbox-dev"
MERCHANT_ID = "G000000001"

# Get Status (and API answers) vs notifications use different codes for the same state.
ANSWER_CODES: Final = {
    "pending": "201",
    "settlement": "200",
    "capture": "200",
    "cancel": "200",
    "refund": "200",
    "partial_refund": "200",
    "deny": "202",
    "expire": "407",
}
NOTIFICATION_CODES: Final = {
    "pending": "201",
    "settlement": "200",
    "capture": "200",
    "refund": "200",
    "partial_refund": "200",
    "cancel": "202",
    "deny": "202",
    "expire": "202",
}

AUTH_FAILED = "Transaction cannot be authorized with the current client/server key."
NOT_FOUND = "Transaction doesn't exist."
CANNOT_MODIFY = "Merchant cannot modify the status of the transaction"
INVALID = "One or more parameters in the payload is invalid."
SYNTAX_ERROR = "The request cannot be processed due to syntax error in the request body"
DUPLICATE_ORDER = (
    "The request could not be completed due to a conflict with the current state of the target resource, "
    "please try again"
)
INVALID_REFUND_AMOUNT = "Refund request is rejected due to invalid amount"

_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]", re.ASCII)


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, body bytes, content type, extra headers, the body's status_code."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    code: str | None = None


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    code = payload.get("status_code") if isinstance(payload, dict) else None
    shown = code if isinstance(code, str) else None
    return Reply(status, json.dumps(payload).encode(), "application/json", headers, shown)


def midtrans_error(code: str, message: str, **extra: object) -> dict[str, Any]:
    """An error body as Midtrans writes it (with the request ``id`` it adds)."""
    return {"status_code": code, "status_message": message, **extra, "id": str(uuid.uuid4())}


def cannot_modify() -> dict[str, Any]:
    return {"status_code": "412", "status_message": CANNOT_MODIFY}


def money(amount: int) -> str:
    """Rupiah as Midtrans writes them: ``44000`` -> ``"44000.00"``."""
    return f"{amount}.00"


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _crc16_ccitt(text: str) -> str:
    """CRC-16/CCITT-FALSE, the checksum that ends every EMVCo (QRIS) payload."""
    crc = 0xFFFF
    for byte in text.encode("ascii"):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return f"{crc:04X}"


def qris_payload(transaction_id: str, amount: int) -> str:
    """An EMVCo-style dynamic QRIS string for this transaction (printable ASCII, QR-encodable)."""
    merchant = _tlv("00", "COM.GO-JEK.WWW") + _tlv("01", "936009140000000001") + _tlv("02", MERCHANT_ID)
    merchant += _tlv("03", "UKE")
    reference = _tlv("05", transaction_id.replace("-", "")[:25]) + _tlv("07", "A01")
    payload = (
        _tlv("00", "01")
        + _tlv("01", "12")
        + _tlv("26", merchant)
        + _tlv("52", "5814")
        + _tlv("53", "360")
        + _tlv("54", money(amount))
        + _tlv("58", "ID")
        + _tlv("59", "MIDPAY SANDBOX")
        + _tlv("60", "JAKARTA")
        + _tlv("61", "12190")
        + _tlv("62", reference)
        + "6304"
    )
    return payload + _crc16_ccitt(payload)


def safe_file_stem(order_id: str) -> str:
    """``order_id`` usable in a file name; a hash suffix keeps 'a/b' and 'a_b' apart."""
    stem = _UNSAFE_NAME_RE.sub("_", order_id).lstrip(".")[:80] or "order"
    if stem != order_id:
        stem += "-" + format(binascii.crc32(order_id.encode()), "08x")
    return stem
