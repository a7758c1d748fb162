"""reconcile's batched writes and its connection bound: the workers only ask Midtrans, the loop writes.

A run holds a few PostgreSQL connections whatever its --concurrency; the rows whose
answer changes them are written several to a transaction, each through the one apply
path; a row that PostgreSQL refuses fails alone, and a run that dies completes no
lease whose write did not commit. Real PostgreSQL, the sandbox over HTTP, real processes.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import psycopg
import pytest

from tests.helpers import wait_until
from tests.pg_activity import PeakConnections
from tests.reconcile.test_job import _leases_ended, _records, _seed, _spawn, _wait_for_checks

APP = "midpay-bound-test"


def _db_now(url: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def test_a_run_at_concurrency_64_holds_a_few_connections(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    orders = {f"bound-{i:03d}": 1000 + i for i in range(256)}
    _seed(db_url, gateway, orders)
    paid = list(orders)[::2]
    for order_id in paid:
        sandbox.pay(order_id, "settlement")
    sandbox.set_faults(latency_ms=100)  # every call waits: 64 of them under way at once
    with PeakConnections(db_url, application_name=APP) as peak:
        proc = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "64", "--json", PGAPPNAME=APP)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["summary"] == {"checked": 256, "changed": 128, "unchanged": 128, "errors": 0}
    # A few connections whatever --concurrency: 8 runs fit in max_connections 100 with room to spare.
    assert peak.samples > 10 and 1 <= peak.peak <= 4, peak.peak
    records = _records(db_url)
    assert {o for o, r in records.items() if r["status"] == "settlement"} == set(paid)


def test_many_changed_rows_end_right_in_a_few_transactions(
    cli: Any, db_url: str, sandbox: Any, gateway: Any
) -> None:
    orders = {f"many-{i:03d}": 3000 + i for i in range(120)}
    _seed(db_url, gateway, orders)
    outcomes = ("settlement", "expire", "cancel", None)  # None: still pending at Midtrans
    for i, order_id in enumerate(orders):
        if outcomes[i % 4] is not None:
            sandbox.pay(order_id, outcomes[i % 4])
    before = _commits(db_url)
    result = cli("reconcile", "--min-age", "0", "--concurrency", "16", "--json")
    assert result.exit_code == 0, result
    assert result.json()["summary"] == {"checked": 120, "changed": 90, "unchanged": 30, "errors": 0}
    # 90 rows moved: one transaction each would be 90 commits, besides the claims and leases.
    assert _commits(db_url) - before < 60
    truth = {o["order_id"]: o["transaction_status"] for o in sandbox.orders()}
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT order_id, status, paid_at, last_checked_at FROM payment_transactions").fetchall()
    for order_id, status, paid_at, checked_at in rows:
        assert status == truth[order_id]
        assert (paid_at is not None) == (status == "settlement"), order_id
        assert checked_at is not None


@pytest.mark.parametrize("when", ["at once", "at commit"])
def test_a_row_postgresql_refuses_fails_alone_and_the_next_run_applies_it(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, when: str
) -> None:
    orders = {f"refuse-{i:02d}": 4000 + i for i in range(24)}
    _seed(db_url, gateway, orders)
    for order_id in orders:
        sandbox.pay(order_id, "settlement")
    deferred = "CONSTRAINT TRIGGER refuse AFTER UPDATE ON payment_transactions DEFERRABLE INITIALLY DEFERRED"
    trigger = deferred if when == "at commit" else "TRIGGER refuse BEFORE UPDATE ON payment_transactions"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.order_id = 'refuse-05' AND NEW.status = 'settlement' THEN "
            "RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$"
        )
        conn.execute(f"CREATE {trigger} FOR EACH ROW EXECUTE FUNCTION refuse()")
    result = cli("reconcile", "--min-age", "0", "--concurrency", "8", "--json")
    assert result.exit_code == 1, result
    doc = result.json()
    errors = {r["order_id"]: r["error"] for r in doc["results"] if r["error"]}
    assert list(errors) == ["refuse-05"] and "refused for the test" in errors["refuse-05"], errors
    assert doc["summary"] == {"checked": 24, "changed": 23, "unchanged": 0, "errors": 1}
    records = _records(db_url)
    assert {o for o, r in records.items() if r["status"] == "settlement"} == set(orders) - {"refuse-05"}
    assert records["refuse-05"]["status"] == "pending" and records["refuse-05"]["check_attempts"] == 1
    assert records["refuse-05"]["last_checked_at"] is None  # its check did not complete

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON payment_transactions")
    again = cli("reconcile", "--min-age", "0", "--json")
    assert again.exit_code == 0, again
    assert [r["order_id"] for r in again.json()["results"]] == ["refuse-05"]
    assert _records(db_url)["refuse-05"]["status"] == "settlement"


def test_a_killed_run_completes_no_row_whose_write_did_not_commit(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    orders = {f"crash-{i:03d}": 5000 + i for i in range(200)}
    _seed(db_url, gateway, orders)
    for order_id in orders:
        sandbox.pay(order_id, "settlement")
    sandbox.set_faults(latency_ms=50)
    sandbox.reset_stats()
    proc = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "16", "--lease", "2", "--json")
    _wait_for_checks(sandbox, 60, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    records = _records(db_url)
    # Every row whose check is recorded as completed had its answer written first.
    assert all(r["status"] == "settlement" for r in records.values() if r["last_checked_at"] is not None)
    assert any(r["status"] == "pending" for r in records.values())
    wait_until(lambda: _leases_ended(db_url), 10, what="the dead run's leases to run out")
    rerun = _spawn(env, "reconcile", "--min-age", "0", "--json")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    records = _records(db_url)
    assert all(r["status"] == "settlement" and r["last_checked_at"] is not None for r in records.values())
    assert all(r["check_lease_owner"] is None for r in records.values())


def test_leases_are_renewed_while_a_long_run_lives(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    known = {f"renew-{i:02d}": 6000 + i for i in range(40)}
    unknown = {f"renew-x{i}": 7000 + i for i in range(4)}  # pending here, unknown at Midtrans: they fail
    _seed(db_url, gateway, unknown, at_midtrans=False)
    _seed(db_url, gateway, known)
    sandbox.set_faults(latency_ms=200)
    sandbox.reset_stats()
    # A failed row keeps its lease until its run ends: about 4 s here, with leases of 1 s.
    first = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "2", "--lease", "1", "--json")
    _wait_for_checks(sandbox, 12, first)
    taken = [r["check_lease_until"] for r in _records(db_url).values() if r["check_lease_owner"] is not None]
    assert taken, "the first run holds leases"
    # Past the end of every lease as first taken: only its renewal keeps the failed rows reserved.
    wait_until(lambda: _db_now(db_url) > max(taken), 10, what="the first leases' end")
    assert first.poll() is None, "the first run ended too soon to test renewal"
    second = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "2", "--json")
    outs = [p.communicate(timeout=120) for p in (first, second)]
    docs = [json.loads(out) for out, _ in outs]
    assert [first.returncode, second.returncode] == [1, 0], outs  # only the first run met the unknown rows
    checks = sandbox.stats()["status_checks"]
    assert all(checks.get(o) == 1 for o in unknown), checks  # the second run never took a leased row
    assert sum(d["summary"]["checked"] for d in docs) == len(known) + len(unknown)


@pytest.mark.parametrize("now", ["created", "pending"])
def test_a_404_failure_is_written_only_while_the_row_is_still_created(db_url: str, now: str) -> None:
    """reconcile decides "the charge never reached Midtrans" on the claimed row; if a notification moved
    the row on before the batch is written, that stale failure must not overwrite it."""
    import dataclasses

    from midpay import db
    from midpay.payments.answers import Answered, apply_batch
    from midpay.payments.transition import synthetic_failure

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES ('stale-404', 25000, 'qris', %s, now() - interval '1 hour')",
            (now,),
        )
    with db.connect(db_url) as conn:
        stored = db.get_payment(conn, "stale-404")
        conn.commit()
        assert stored is not None
        claimed = dataclasses.replace(stored, status="created")  # the row as the claim read it
        view = synthetic_failure(claimed, "404", "the charge never reached Midtrans", {})
        [written] = apply_batch(conn, [Answered(claimed, view)])
        after = db.get_payment(conn, "stale-404")
        conn.commit()
    assert written.checked is not None and written.checked.problem is None
    assert after is not None
    expected = "failure" if now == "created" else "pending"
    assert after.status == expected
    assert written.checked.status_after == expected
