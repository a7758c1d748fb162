"""What the intake tests share: reading rows and events back, charging, what Midtrans says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from midpay.midtrans.notifications import parse_time


def write_json(path: Path, body: Any) -> Path:
    path.write_text(json.dumps(body))
    return path


def stored_events(url: str, order_id: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT is_verified, processed, outcome, processing_error, confirmed_at, raw_bytes, source "
            "FROM payment_webhook_events WHERE %s::text IS NULL OR order_id = %s ORDER BY received_at, id",
            (order_id, order_id),
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def charge_order(cli: Any, amount: int) -> str:
    result = cli("charge", "--amount", str(amount), "--json")
    assert result.exit_code == 0, result
    return str(result.json()["order_id"])


def midtrans_says(sandbox: Any, order_id: str) -> dict[str, Any]:
    """What Midtrans says about the order: the row must end like this, whatever a body claimed."""
    order = sandbox.get_order(order_id)
    assert order is not None
    settled = order["settlement_time"]
    return {
        "status": order["transaction_status"],
        "paid_at": parse_time(settled, "settlement_time") if settled else None,
        "payment_type": order["payment_type"],
        "midtrans_transaction_id": order["transaction_id"],
    }


def as_stored(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("status", "paid_at", "payment_type", "midtrans_transaction_id")}
