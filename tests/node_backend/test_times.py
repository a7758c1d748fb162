"""Times in ``timestamp`` columns are wall-clock times in the server's TimeZone (America/New_York here).

midpay reads them in the session TimeZone the server gives (PGTZ in midpay's
environment is ignored; a TimeZone in DATABASE_URL's options is an operator's explicit
word and is honoured), so ages, listings and what it writes agree with what the Node
backend's ``current_timestamp`` meant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import psycopg

from .conftest import NodeDb, midpay_process
from .test_takeover import SERVER_ZONE, stored


def _created_rows(url: str, user_id: int) -> None:
    """Two `created` rows Midtrans never heard of: 5 and 20 minutes old by the server's clock."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (user_id, order_id, gross_amount, payment_type, status, created_at) "
            "VALUES (%s, 'young-1', 10000, 'gopay', 'created', current_timestamp - interval '5 minutes'), "
            "       (%s, 'old-1', 10000, 'gopay', 'created', current_timestamp - interval '20 minutes')",
            (user_id, user_id),
        )


def test_reconcile_ages_and_status_ignore_pgtz(node_db: NodeDb, node_cli: Any, sandbox: Any) -> None:
    seeded = node_db.node("seed.js")
    assert node_cli("migrate").exit_code == 0
    _created_rows(node_db.url, seeded["users"]["budi"])
    tokyo = {"PGTZ": "Asia/Tokyo"}

    shown = midpay_process(["status", "young-1", "--no-refresh", "--json"], node_db.url, sandbox.url, **tokyo)
    assert shown.returncode == 0, shown.stderr
    created = datetime.fromisoformat(json.loads(shown.stdout)["created_at"])
    assert created.astimezone(SERVER_ZONE).replace(tzinfo=None) == stored(node_db.url, "young-1", "created_at")
    assert timedelta(minutes=4) < datetime.now(UTC) - created < timedelta(minutes=6)

    run = midpay_process(["reconcile", "--min-age", "0", "--json"], node_db.url, sandbox.url, **tokyo)
    assert run.returncode == 0, run.stdout + run.stderr
    results = {r["order_id"]: r for r in json.loads(run.stdout)["results"]}
    assert results["young-1"]["status_after"] == "created", "5 minutes is within the 10-minute grace"
    assert results["old-1"]["status_after"] == "failure", "20 minutes is past it"
    assert stored(node_db.url, "young-1", "status") == "created"


def test_a_timezone_in_the_database_url_is_honoured(node_db: NodeDb, node_cli: Any, sandbox: Any) -> None:
    """The way to tell midpay the other backend's sessions ran in another zone."""
    seeded = node_db.node("seed.js")
    assert node_cli("migrate").exit_code == 0
    order = seeded["orders"]["expired"]
    url = node_db.url + "&options=" + quote("-c TimeZone=UTC")
    shown = midpay_process(["status", order, "--json"], url, sandbox.url)
    assert shown.returncode == 0, shown.stderr
    created = datetime.fromisoformat(json.loads(shown.stdout)["created_at"])
    assert created.astimezone(ZoneInfo("UTC")).replace(tzinfo=None) == stored(node_db.url, order, "created_at")


def test_paid_at_written_by_midpay_is_the_servers_wall_clock(node_db: NodeDb, node_cli: Any, sandbox: Any) -> None:
    seeded = node_db.node("seed.js")
    assert node_cli("migrate").exit_code == 0
    order = seeded["orders"]["lost"]
    assert node_cli("reconcile", "--min-age", "0", "--json").exit_code == 0
    settlement_time = sandbox.get_order(order)["settlement_time"]
    settled = datetime.fromisoformat(settlement_time).replace(tzinfo=ZoneInfo("Asia/Jakarta"))
    assert stored(node_db.url, order, "paid_at") == settled.astimezone(SERVER_ZONE).replace(tzinfo=None)
    with psycopg.connect(node_db.url) as conn:  # and read back by SQL the way the Node side reads it
        row = conn.execute(
            "SELECT paid_at::timestamptz = %s FROM payment_transactions WHERE order_id = %s", (settled, order)
        ).fetchone()
    assert row == (True,)
