"""Every statement that locks many payment rows takes them in one byte-wise order_id order: batch lockers and
reconcile's lease statements, so none can hold one row while waiting for another's."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from midpay import db
from midpay.db import claims
from tests.helpers import wait_until, waits_on_a_lock

OWNER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
# 'B-1' comes first byte-wise, 'a-1' first by row id (and by locale): a statement blocked on
# 'B-1' must not hold 'a-1' yet, or a batch that holds 'B-1' and wants 'a-1' deadlocks with it.
IDS = {"a-1": uuid.UUID("00000000-0000-4000-8000-000000000001"),
       "B-1": uuid.UUID("00000000-0000-4000-8000-000000000002")}
ALL = list(IDS.values())

def _lock_orders(conn: db.Connection) -> None:
    with conn.transaction():
        db.lock_orders(conn, list(IDS))  # every batch's locker: reconcile's writes, a replay's, offline's


STATEMENTS: dict[str, Callable[[db.Connection], Any]] = {
    "lock_orders": _lock_orders,
    "renew": lambda conn: claims.renew_leases(conn, owner=OWNER, lease_seconds=60),
    "complete": lambda conn: claims.complete(conn, owner=OWNER, ids=ALL),
    "fail": lambda conn: claims.fail(conn, owner=OWNER, failures=[(i, "timeout") for i in ALL]),
    "release": lambda conn: claims.release(conn, owner=OWNER, ids=ALL),
    "finish": lambda conn: claims.finish(conn, owner=OWNER),
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_lease_statement_waits_in_order_instead_of_deadlocking(db_url: str, name: str) -> None:
    with psycopg.connect(db_url) as conn:
        for order_id, row_id in IDS.items():
            conn.execute(
                "INSERT INTO payment_transactions (id, order_id, gross_amount, payment_type, status, "
                "check_lease_owner, check_lease_until) VALUES (%s, %s, 10000, 'gopay', 'pending', %s, "
                "now() + interval '1 minute')",
                (row_id, order_id, OWNER),
            )
    holder = psycopg.connect(db_url)
    holder.execute("SELECT 1 FROM payment_transactions WHERE order_id = 'B-1' FOR UPDATE")
    statement_conn = db.connect(db_url)
    done = threading.Event()

    def run() -> None:
        STATEMENTS[name](statement_conn)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        pid = statement_conn.info.backend_pid
        wait_until(lambda: waits_on_a_lock(db_url, pid), 10, what=f"{name} to wait on 'B-1'")
        assert not done.is_set()
        with psycopg.connect(db_url) as probe:
            probe.execute("SET lock_timeout = '200ms'")
            probe.execute("SELECT 1 FROM payment_transactions WHERE order_id = 'a-1' FOR UPDATE")  # must be free
    finally:
        holder.rollback()
        holder.close()
        thread.join(5)
        statement_conn.close()
    assert done.is_set()
