"""The older Node backend's own handler writes the same events as midpay (issue 21).

The database is the one the real node-pg-migrate built (``timestamp`` columns in a
server at America/New_York, statuses possibly upper-case), taken over by ``midpay
migrate``; then the backend's create route and webhook handler (tests/node_backend/
backend.js, run by node) write payment_transactions as they always did. The trigger
gives every change its event, numbered on with midpay's own changes, and each event's
``data`` is what ``midpay status --json`` prints for the row.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.node_backend import conftest as node_backend
from tests.node_backend.conftest import NodeDb
from tests.outbox.test_events import check_lifecycle, events, payment_of, status_json

# The Node backend's fixtures (its conftest.py serves its own folder only), used here too.
node_project = node_backend.node_project
node_pg = node_backend.node_pg
node_templates = node_backend.node_templates
node_db = node_backend.node_db
node_cli = node_backend.node_cli

# Node scripts and a private cluster: seconds per test.
pytestmark = pytest.mark.slow

# The backend's create route and webhook handler for one order, as its HTTP routes run them.
_ONE_ORDER = """
const { pool, createPayment, handleNotification, customer } = require('./backend');
(async () => {
  const db = pool();
  const { rows } = await db.query("INSERT INTO users (email, name) VALUES ('eka@example.com', 'Eka') RETURNING id");
  const row = await createPayment(db, { userId: Number(rows[0].id), amount: 64000 });
  await handleNotification(db, await customer(row.order_id, 'settlement'));
  await db.end();
  process.stdout.write(JSON.stringify({ order_id: row.order_id }));
})().catch((err) => { console.error(err); process.exit(1); });
"""


def test_the_node_backends_handler_writes_the_documented_events(node_db: NodeDb, node_cli: Any) -> None:
    assert node_cli("migrate").exit_code == 0
    orders = node_db.node("seed.js")["orders"]
    for name, types in {
        "pending": ["payment.pending"],  # its forged notification changed nothing
        "settled": ["payment.pending", "payment.settlement", "payment.paid"],
        "expired": ["payment.pending", "payment.expire"],
        "lost": ["payment.pending"],
        "crashed": ["payment.pending"],
    }.items():
        found = events(node_db.url, orders[name])
        check_lifecycle(found, types)
        assert found[0]["data"]["previous_status"] is None, "the create route inserts the row as pending"
        assert payment_of(found[-1]) == status_json(node_cli, orders[name]), name

    order = orders["to_refund"]
    refunded = node_cli("refund", order, "--amount", "9000", "--yes", "--json")
    assert refunded.exit_code == 0, refunded
    found = events(node_db.url, order)
    check_lifecycle(found, ["payment.pending", "payment.settlement", "payment.paid", "payment.partial_refund"])
    assert payment_of(found[-1]) == status_json(node_cli, order)


def test_upper_case_statuses_make_the_same_events(node_db: NodeDb, node_cli: Any) -> None:
    assert node_cli("migrate").exit_code == 0
    order = node_db.node("-e", _ONE_ORDER, extra={"NODE_BACKEND_STATUS_CASE": "upper"})["order_id"]
    found = events(node_db.url, order)
    check_lifecycle(found, ["payment.pending", "payment.settlement", "payment.paid"])
    assert [e["data"]["status"] for e in found] == ["pending", "settlement", "settlement"]
    assert payment_of(found[-1]) == status_json(node_cli, order)
    assert found[-1]["data"]["paid_at"].endswith("+07:00")


sibling_db = node_backend.sibling_db
sibling_cli = node_backend.sibling_cli


def test_the_sibling_layout_numeric_amounts_and_upper_case(sibling_db: NodeDb, sibling_cli: Any) -> None:
    assert sibling_cli("migrate").exit_code == 0
    seeded = sibling_db.node("seed.js", extra={"NODE_BACKEND_STATUS_CASE": "upper"})
    orders = seeded["orders"]
    with psycopg.connect(sibling_db.url) as conn:  # a row the backend wrote by hand: a fraction of a rupiah
        conn.execute(
            "INSERT INTO payment_transactions (user_id, order_id, gross_amount, payment_type, status, paid_at) "
            "VALUES (%s, 'FRACTION-1', 15000.50, 'gopay', 'SETTLEMENT', current_timestamp)",
            (seeded["users"]["budi"],),
        )
    for order in (orders["settled"], orders["expired"], "FRACTION-1"):
        found = events(sibling_db.url, order)
        assert payment_of(found[-1]) == status_json(sibling_cli, order), order
    settled = events(sibling_db.url, orders["settled"])
    check_lifecycle(settled, ["payment.pending", "payment.settlement", "payment.paid"])
    fraction = events(sibling_db.url, "FRACTION-1")
    check_lifecycle(fraction, ["payment.settlement", "payment.paid"])
    assert fraction[0]["data"]["gross_amount"] == "15000.50"
