"""What a Midtrans answer says about a payment's refunds, read into the ledger's terms. Pure; never raises.

``refund_amount`` at the top of an answer is Midtrans' total; ``refunds[]`` lists each
refund. ``db.sync_ledger`` merges the report into payment_refunds; reading Midtrans'
fields happens here, above the database layer, which never reads Midtrans' formats.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from midpay.db.refunds import RefundReport, ReportedRefund
from midpay.errors import InvalidPayload
from midpay.midtrans.notifications import parse_amount, parse_time


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def chargeback_id(value: object) -> int | None:
    """Midtrans' refund_chargeback_id (a number, or digits in a string), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**63 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
        return number if number < 2**63 else None
    return None


def _moment(item: Mapping[str, Any], name: str) -> datetime | None:
    try:
        return parse_time(item.get(name), name)
    except InvalidPayload:
        return None


def _item(raw: object) -> ReportedRefund | None:
    if not isinstance(raw, dict):
        return None
    try:
        amount = parse_amount(raw.get("refund_amount"), "refund_amount")
    except InvalidPayload:
        return None
    if amount <= 0:
        return None
    return ReportedRefund(
        refund_key=_text(raw, "refund_key"),
        chargeback_id=chargeback_id(raw.get("refund_chargeback_id")),
        amount=amount,
        reason=_text(raw, "reason"),
        created_at=_moment(raw, "created_at"),
        bank_confirmed_at=_moment(raw, "bank_confirmed_at"),
        refund_method=_text(raw, "refund_method"),
        raw=raw,
    )


def read_report(answer: Mapping[str, Any]) -> RefundReport:
    """The refunds a Midtrans answer (Get Status, a notification) reports; an unreadable item is skipped and counted."""
    listed = answer.get("refunds")
    items: list[ReportedRefund] = []
    unreadable = 0
    if isinstance(listed, list):
        for raw in listed:
            item = _item(raw)
            if item is None:
                unreadable += 1
            else:
                items.append(item)
    try:
        total = parse_amount(answer.get("refund_amount"), "refund_amount") if "refund_amount" in answer else 0
    except InvalidPayload:
        total = 0
    status = answer.get("transaction_status")
    return RefundReport(
        transaction_status=status.strip().lower() if isinstance(status, str) else "",
        items=tuple(items),
        listed=isinstance(listed, list),
        total=max(total, sum(i.amount for i in items)),
        unreadable=unreadable,
    )
