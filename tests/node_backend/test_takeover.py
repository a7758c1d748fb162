"""midpay over the database the real node-pg-migrate built, with rows the Node backend wrote.

Every command runs on it, and afterwards every original column of every row is what
the Node backend left, except where midpay moved a payment forward (README: "Taking
over the older Node backend's database" is written from this test).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from midpay import states

from ..helpers import payment_row
from .conftest import SERVER_TIMEZONE, NodeDb

NODE_TABLES = ("users", "payment_transactions", "payment_webhook_events")
SERVER_ZONE = ZoneInfo(SERVER_TIMEZONE)
# What node-pg-migrate named the six indexes midpay's 001 would otherwise create.
NODE_INDEXES = {
    "payment_transactions_order_id_key": "payment_transactions_order_id_unique_index",
    "payment_transactions_user_id_idx": "payment_transactions_user_id_index",
    "payment_transactions_status_idx": "payment_transactions_status_index",
    "payment_transactions_midtrans_transaction_id_key": "payment_transactions_midtrans_transaction_id_unique_index",
    "payment_webhook_events_order_id_idx": "payment_webhook_events_order_id_index",
    "payment_webhook_events_midtrans_transaction_id_idx": "payment_webhook_events_midtrans_transaction_id_index",
}


def snapshot(url: str, columns: dict[str, list[str]] | None = None) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of the Node backend's tables by id, in the columns the backend laid out."""
    with psycopg.connect(url) as conn:
        if columns is None:
            columns = {}
            for table in NODE_TABLES:
                rows = conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
                columns[table] = [r[0] for r in rows]
        found: dict[str, dict[Any, dict[str, Any]]] = {}
        for table, names in columns.items():
            cur = conn.execute(f"SELECT {', '.join(names)} FROM {table}")  # names from the catalog
            found[table] = {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
    return found


def original_columns(url: str) -> dict[str, list[str]]:
    return {table: list(next(iter(rows.values())).keys()) for table, rows in snapshot(url).items() if rows}


def duplicate_indexes(url: str) -> list[tuple[str, str]]:
    """Pairs of indexes of one table that are the same but for their names."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text FROM pg_index a JOIN pg_index b "
            "ON a.indrelid = b.indrelid AND a.indexrelid < b.indexrelid "
            "AND a.indisunique = b.indisunique "
            "AND regexp_replace(pg_get_indexdef(a.indexrelid), '^.*? USING ', '') "
            "  = regexp_replace(pg_get_indexdef(b.indexrelid), '^.*? USING ', '') "
            "WHERE a.indrelid::regclass::text LIKE 'payment%'"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def stored(url: str, order_id: str, column: str) -> Any:
    return payment_row(url, order_id, (column,))[column]


def as_wall_clock(value: datetime) -> datetime:
    """What a ``timestamp`` column written in the server's TimeZone holds for this moment."""
    return value.astimezone(SERVER_ZONE).replace(tzinfo=None)


@pytest.fixture
def seeded(node_db: NodeDb) -> dict[str, Any]:
    data: dict[str, Any] = node_db.node("seed.js")
    return data


def test_every_command_on_the_node_backends_database(
    node_db: NodeDb, node_cli: Any, seeded: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    orders = seeded["orders"]
    url = node_db.url
    columns = original_columns(url)
    before = snapshot(url, columns)
    assert {p["status"] for p in before["payment_transactions"].values()} == {"pending", "settlement", "expire"}

    # migrate: adopts both tables, reuses node-pg-migrate's six indexes, adds its own columns.
    first = node_cli("migrate")
    assert first.exit_code == 0, first
    listing = node_cli("migrate", "--status", "--json")
    assert listing.exit_code == 0, listing
    adoption = listing.json()["adoption"]
    assert adoption["tables_adopted"] == ["payment_transactions", "payment_webhook_events"]
    reused = {e["name"]: e["existing"] for e in adoption["indexes_reused"]}
    assert {k: reused.get(k) for k in NODE_INDEXES} == NODE_INDEXES
    assert {(e["table"], e["column"]) for e in adoption["columns_added"]} >= {
        ("payment_transactions", "last_checked_at"),
        ("payment_webhook_events", "source"),
        ("payment_webhook_events", "outcome"),
        ("payment_webhook_events", "processed_at"),
    }
    assert adoption["constraints_reused"] == []  # the foreign key has PostgreSQL's own name, as midpay's
    assert duplicate_indexes(url) == []
    human = node_cli("migrate", "--status")
    assert (
        "index reused: payment_transactions_order_id_unique_index "
        "(instead of midpay's payment_transactions_order_id_key)" in human.stdout
    )
    nothing = node_db.migrate_up()
    assert nothing.returncode == 0 and "No migrations to run!" in nothing.stdout, nothing

    # status of a pending row: its wall-clock created_at read in the server's TimeZone.
    pending = node_cli("status", orders["pending"], "--json")
    assert pending.exit_code == 0, pending
    doc = pending.json()
    created = datetime.fromisoformat(doc["created_at"])
    assert as_wall_clock(created) == stored(url, orders["pending"], "created_at")
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=10)
    assert (doc["status"], doc["gross_amount"], doc["user_id"]) == ("pending", 25000, seeded["users"]["budi"])

    # status of a payment whose notification was lost: settled, paid_at from Midtrans, as wall clock.
    lost = node_cli("status", orders["lost"], "--json")
    assert lost.exit_code == 0 and lost.json()["status"] == "settlement", lost
    settled_at = datetime.fromisoformat(sandbox.get_order(orders["lost"])["settlement_time"]).replace(
        tzinfo=ZoneInfo("Asia/Jakarta")
    )
    assert datetime.fromisoformat(lost.json()["paid_at"]) == settled_at
    assert stored(url, orders["lost"], "paid_at") == as_wall_clock(settled_at)

    # payments: filtered by status in any case, and by --since across the zones.
    paid = node_cli("payments", "--status", "SETTLEMENT", "--json").json()["payments"]
    assert {p["order_id"] for p in paid} == {orders["settled"], orders["to_refund"], orders["lost"]}
    assert len(node_cli("payments", "--since", "1h", "--json").json()["payments"]) == 9
    ahead = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert node_cli("payments", "--since", ahead, "--json").json()["payments"] == []
    assert node_cli("payments", "--since", "10m", "--json").json()["payments"] != []

    # events: what the Node handler stored, including the body kept as a JSON string.
    events = node_cli("events", "--limit", "100", "--json")
    assert events.exit_code == 0, events
    listed = events.json()["events"]
    assert len(listed) == 7
    received = min(datetime.fromisoformat(e["received_at"]) for e in listed)
    assert abs(datetime.now(UTC) - received) < timedelta(minutes=10)

    # replay-webhook: a notification for one of the backend's pending orders.
    body = sandbox.pay(orders["to_replay"], "settlement")
    path = tmp_path / "paid.json"
    path.write_text(json.dumps(body))
    replay = node_cli("replay-webhook", str(path), "--json")
    assert replay.exit_code == 0, replay
    assert replay.json()["results"][0]["status_after"] == "settlement"

    # events reprocess: the body a crashed handler stored applies; the one an older handler
    # kept as a JSON string is read as the body it encodes (pending again: unchanged); the
    # forged one and the dashboard's test without an order are rejected again (exit 1).
    again = node_cli("events", "reprocess", "--json")
    assert again.exit_code == 1, again
    outcomes = sorted((r["order_id"] or "-", r["verified"], r["applied"]) for r in again.json()["results"])
    assert outcomes == sorted([
        (orders["crashed"], True, True), (orders["to_cancel"], True, False),
        (orders["pending"], False, False), ("-", False, False),
    ])
    assert stored(url, orders["crashed"], "status") == "settlement"

    # reconcile: every open row checked, nothing wrong.
    reconcile = node_cli("reconcile", "--min-age", "0", "--json")
    assert reconcile.exit_code == 0, reconcile
    summary = reconcile.json()["summary"]
    assert summary["errors"] == 0 and summary["checked"] >= 3

    # cancel, expire, refund.
    assert node_cli("cancel", orders["to_cancel"], "--yes", "--json").json()["status"] == "cancel"
    assert node_cli("expire", orders["to_expire"], "--yes", "--json").json()["status"] == "expire"
    refund = node_cli("refund", orders["to_refund"], "--amount", "9000", "--yes", "--json")
    assert refund.exit_code == 0, refund
    assert refund.json()["payment"]["status"] == "partial_refund"

    # charge: user_id is NOT NULL and references users here.
    count = len(snapshot(url, columns)["payment_transactions"])
    no_user = node_cli("charge", "--amount", "10000")
    assert no_user.exit_code == 2
    assert no_user.stderr.strip() == (
        "Error: this database needs a user for every payment (payment_transactions.user_id is NOT NULL): "
        "give --user-id N"
    )
    unknown = node_cli("charge", "--amount", "10000", "--user-id", "999")
    assert unknown.exit_code == 2 and unknown.stderr.startswith("Error: --user-id 999: no such user"), unknown
    assert len(snapshot(url, columns)["payment_transactions"]) == count, "a refused charge writes nothing"
    charged = node_cli("charge", "--amount", "10000", "--user-id", str(seeded["users"]["sari"]), "--json")
    assert charged.exit_code == 0, charged
    new = charged.json()
    assert (new["status"], new["user_id"]) == ("pending", seeded["users"]["sari"])
    assert as_wall_clock(datetime.fromisoformat(new["created_at"])) == stored(url, new["order_id"], "created_at")

    # Every original column of every original row is as the backend left it, except where
    # midpay moved a payment forward.
    after = snapshot(url, columns)
    moved = {
        orders["lost"]: "settlement", orders["crashed"]: "settlement", orders["to_replay"]: "settlement",
        orders["to_cancel"]: "cancel", orders["to_expire"]: "expire", orders["to_refund"]: "partial_refund",
    }
    assert after["users"] == before["users"]
    for pid, old in before["payment_transactions"].items():
        now = after["payment_transactions"][pid]
        if old["order_id"] not in moved:
            assert now == old, old["order_id"]
            continue
        assert now["status"] == moved[old["order_id"]]
        assert states.decide(old["status"], now["status"]) is states.Decision.APPLY or old["status"] == "settlement"
        for name in columns["payment_transactions"]:
            if name in ("status", "updated_at", "midtrans_response_json"):
                continue
            if name == "paid_at" and old["paid_at"] is None:
                assert now["paid_at"] is not None or now["status"] in ("cancel", "expire")
                continue
            assert now[name] == old[name], (old["order_id"], name)
        assert now["updated_at"] >= old["updated_at"]
    crashed_event = [e for e in before["payment_webhook_events"].values() if e["order_id"] == orders["crashed"]]
    reprocessed = {e["id"] for e in before["payment_webhook_events"].values() if not e["processed"]}
    assert len(reprocessed) == 4 and len(crashed_event) == 1
    for eid, old in before["payment_webhook_events"].items():
        now = after["payment_webhook_events"][eid]
        if eid not in reprocessed:
            assert now == old
            continue
        for name in columns["payment_webhook_events"]:
            if name not in ("is_verified", "processed", "processing_error"):
                assert now[name] == old[name], name
    assert after["payment_webhook_events"][crashed_event[0]["id"]]["processed"] is True

    final = node_db.migrate_up()
    assert final.returncode == 0 and "No migrations to run!" in final.stdout, final
