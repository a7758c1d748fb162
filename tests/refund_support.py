"""Shared by the refund tests: payouts, dashboard refunds, the notifications the sandbox wrote, the ledger.

The sandbox of conftest.py writes every notification it sends into the ``notes`` fixture's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import payment_status


def paid_out(sandbox: Any, order_id: str) -> int:
    """What the sandbox has refunded to the customer of ``order_id``, however it was asked."""
    return int(sandbox.paid_out(order_id))


def dashboard_refund(sandbox: Any, order_id: str, amount: int) -> None:
    """A refund made on the Midtrans dashboard: midpay never asked for it (a refund_key of Midtrans' own)."""
    sandbox.refund_outside(order_id, amount=amount, reason="refunded by the shop owner")


def refund_notifications(notes: Path) -> list[Path]:
    found = [p for p in notes.glob("*.json") if "refund" in p.name]
    return sorted(found, key=lambda p: int(p.stem.rsplit("-", 1)[-1]))


def ledger_rows(url: str, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT refund_key, amount, status, origin FROM payment_refunds WHERE order_id = %s "
            "ORDER BY created_at, id",
            (order_id,),
        ).fetchall()


# The name the refund tests knew it by; the one reader is tests.helpers.payment_status.
stored_status = payment_status


def settled(cli: Any, sandbox: Any, amount: int) -> str:
    charged = cli("charge", "--amount", str(amount), "--json")
    assert charged.exit_code == 0, charged
    order_id = str(charged.json()["order_id"])
    sandbox.pay(order_id, "settlement")
    assert cli("status", order_id, "--json").json()["status"] == "settlement"
    return order_id
