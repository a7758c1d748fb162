"""The intake offline, and what settles its awaiting notifications later: real PostgreSQL, sandbox, CLI.

``--offline`` applies only what a verified body's signed status_code proves; the rest
awaits confirmation, and an online ``events reprocess`` or ``reconcile`` settles it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.midtrans.notifications import compute_signature
from tests.conftest import SERVER_KEY
from tests.helpers import payment_row
from tests.intake_helpers import as_stored, charge_order, midtrans_says, stored_events, write_json

# --- the offline rule, row by row ---------------------------------------------------------

# (signed status_code, stored status) -> (status after, outcome, exit code)
OFFLINE_RULE: dict[tuple[str, str], tuple[str, str, int]] = {
    ("201", "created"): ("pending", "applied", 0),
    ("201", "pending"): ("pending", "unchanged", 0),
    ("201", "settlement"): ("settlement", "unchanged", 0),
    ("407", "created"): ("expire", "applied", 0),
    ("407", "pending"): ("expire", "applied", 0),
    ("407", "settlement"): ("settlement", "unchanged", 0),
    ("200", "created"): ("pending", "awaiting", 1),
    ("200", "pending"): ("pending", "awaiting", 1),
    ("200", "settlement"): ("settlement", "awaiting", 1),
    ("202", "created"): ("pending", "awaiting", 1),
    ("202", "pending"): ("pending", "awaiting", 1),
    ("202", "settlement"): ("settlement", "awaiting", 1),
    ("300", "created"): ("created", "awaiting", 1),
    ("300", "pending"): ("pending", "awaiting", 1),
    ("301", "settlement"): ("settlement", "awaiting", 1),
}


@pytest.mark.parametrize(("code", "stored"), sorted(OFFLINE_RULE), ids=[f"{c}-{s}" for c, s in sorted(OFFLINE_RULE)])
def test_offline_rule(cli: Any, db_url: str, tmp_path: Path, code: str, stored: str) -> None:
    paid = "2026-11-26 09:00:00+07" if stored == "settlement" else None
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, paid_at) "
            "VALUES ('off-1', 21000, 'gopay', %s, %s)",
            (stored, paid),
        )
    claims = {"201": "pending", "407": "expire", "200": "settlement", "202": "cancel"}.get(code, "settlement")
    body = {
        "order_id": "off-1", "status_code": code, "gross_amount": "21000.00", "transaction_status": claims,
        "transaction_id": "cccccccc-0000-4000-8000-000000000000", "settlement_time": "2026-11-26 10:00:00",
        "signature_key": compute_signature("off-1", code, "21000.00", SERVER_KEY),
    }
    before = payment_row(db_url, "off-1")
    result = cli("replay-webhook", str(write_json(tmp_path / "b.json", body)), "--offline", "--json")
    status, outcome, code_exit = OFFLINE_RULE[(code, stored)]
    [item] = result.json()["results"]
    after = payment_row(db_url, "off-1")
    assert (result.exit_code, item["outcome"], after["status"]) == (code_exit, outcome, status), result
    assert item["confirmed"] is False and item["verified"] is True
    assert after["paid_at"] == before["paid_at"], "no paid_at from an unsigned time"
    assert after["midtrans_transaction_id"] is None, "no unsigned transaction id"
    assert (after["unconfirmed_since"] is not None) is (outcome == "awaiting")
    event = stored_events(db_url)[-1]
    assert event["processed"] is (outcome != "awaiting") and event["outcome"] == outcome


# --- awaiting confirmation, settled later ---------------------------------------------------


def test_offline_then_events_reprocess_online_applies_midtrans_answer(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    order_id = charge_order(cli, 22000)
    path = write_json(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    offline = cli("replay-webhook", str(path), "--offline", "--json")
    assert offline.exit_code == 1 and offline.json()["summary"]["awaiting"] == 1
    assert payment_row(db_url, order_id)["status"] == "pending"
    still = cli("events", "reprocess", "--offline", "--json")
    assert still.exit_code == 1 and still.json()["summary"]["awaiting"] == 1
    online = cli("events", "reprocess", "--json")
    assert online.exit_code == 0, online
    assert online.json()["results"][0]["status_after"] == "settlement"
    row = payment_row(db_url, order_id)
    assert as_stored(row) == midtrans_says(sandbox, order_id) and row["unconfirmed_since"] is None
    [event] = stored_events(db_url, order_id)
    assert (event["processed"], event["outcome"]) == (True, "applied") and event["confirmed_at"] is not None


def test_reconcile_settles_an_awaiting_refund_of_a_settled_row(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    order_id = charge_order(cli, 23000)
    settled = write_json(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    assert cli("replay-webhook", str(settled)).exit_code == 0
    paid_at = payment_row(db_url, order_id)["paid_at"]
    gateway.refund(order_id, refund_key="outside-1")  # refunded in the dashboard, say
    assert sandbox.get_order(order_id)["transaction_status"] == "refund"
    notice = {  # its notification, signed as Midtrans signs it
        "order_id": order_id, "status_code": "200", "gross_amount": "23000.00", "transaction_status": "refund",
        "signature_key": compute_signature(order_id, "200", "23000.00", SERVER_KEY),
    }
    offline = cli("replay-webhook", str(write_json(tmp_path / "r.json", notice)), "--offline", "--json")
    assert offline.exit_code == 1 and offline.json()["results"][0]["outcome"] == "awaiting"
    assert payment_row(db_url, order_id)["status"] == "settlement"  # a refund inside a 200 is not proven
    rec = cli("reconcile", "--min-age", "0", "--json")
    assert rec.exit_code == 0, rec
    assert [r["order_id"] for r in rec.json()["results"]] == [order_id], "a settled row awaiting is due"
    row = payment_row(db_url, order_id)
    assert (row["status"], row["paid_at"], row["unconfirmed_since"]) == ("refund", paid_at, None)
    assert [e["outcome"] for e in stored_events(db_url, order_id)] == ["applied", "applied"]
    assert all(e["processed"] for e in stored_events(db_url, order_id))
    assert cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json").json()["summary"]["checked"] == 0


def test_a_row_an_older_backend_left_paid_without_paid_at_is_due_for_reconcile(
    cli: Any, empty_db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    import os
    import shutil

    from midpay.db import migrate

    before_004 = tmp_path / "sql"
    before_004.mkdir()
    for f in sorted(migrate.sql_dir().glob("00[123]_*.sql")):
        shutil.copy(f, before_004 / f.name)
    with psycopg.connect(empty_db_url) as conn:
        migrate.migrate(conn, before_004)
    os.environ["DATABASE_URL"] = empty_db_url
    from midpay.midtrans.gateway import Gateway

    with Gateway(base_url=sandbox.url, server_key=SERVER_KEY) as gateway:
        answer = gateway.charge(order_id="legacy-paid", gross_amount=24000, idempotency_key="k-legacy-paid")
    sandbox.pay("legacy-paid", "settlement")
    with psycopg.connect(empty_db_url) as conn:  # what an older backend's webhook handler left
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, "
            "midtrans_transaction_id, created_at) VALUES ('legacy-paid', 24000, 'gopay', 'SETTLEMENT', %s, "
            "now() - interval '1 day')",
            (answer["transaction_id"],),
        )
        conn.commit()
        migrate.migrate(conn)  # 004 and later
    rec = cli("reconcile", "--min-age", "0", "--json")
    assert rec.exit_code == 0 and [r["order_id"] for r in rec.json()["results"]] == ["legacy-paid"], rec
    row = payment_row(empty_db_url, "legacy-paid")
    assert row["paid_at"] == midtrans_says(sandbox, "legacy-paid")["paid_at"] and row["unconfirmed_since"] is None


def test_offline_dry_run_writes_nothing(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = charge_order(cli, 25000)
    before = payment_row(db_url, order_id)
    path = write_json(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    dry = cli("replay-webhook", str(path), "--offline", "--dry-run", "--json")
    assert dry.exit_code == 1 and dry.json()["results"][0]["outcome"] == "awaiting", dry
    assert payment_row(db_url, order_id) == before and stored_events(db_url) == []
