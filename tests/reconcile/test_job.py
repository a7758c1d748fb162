"""reconcile on its bad days: leases, failed rows, the circuit breaker, 401, signals, one answer that cannot be stored.

Real PostgreSQL, the sandbox over HTTP, and (for faults the sandbox does not have) a
proxy in front of it that misbehaves for chosen orders. Runs that are killed or
signalled are real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO
from tests.helpers import wait_until
from tests.midtrans_proxy import MidtransProxy, Rule


def _seed(url: str, gateway: Any, orders: dict[str, int], *, at_midtrans: bool = True, age: int = 300) -> None:
    """Pending rows for ``orders``, charged in the sandbox unless ``at_midtrans`` is False."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES (%s, %s, 'gopay', 'pending', now() - make_interval(secs => %s))",
            [(o, a, age) for o, a in orders.items()],
        )
    if at_midtrans:
        for order_id, amount in orders.items():
            gateway.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"seed-{order_id}"[:46])


def _records(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT order_id, status, last_checked_at, check_attempts, check_error, check_retry_at, "
            "check_lease_owner, check_lease_until, now() AS now FROM payment_transactions"
        )
        names = [d.name for d in cur.description or ()]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _spawn(env: dict[str, str], *args: str, **overrides: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "midpay", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env, **overrides, "PYTHONPATH": str(REPO)},
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- leases and failed rows ----------------------------------------------------------


def test_a_completed_check_stamps_the_row_and_ends_its_lease(cli: Any, db_url: str, gateway: Any) -> None:
    _seed(db_url, gateway, {"lease-1": 1000, "lease-2": 2000})
    result = cli("reconcile", "--min-age", "0", "--json")
    assert result.exit_code == 0, result
    assert result.json()["summary"] == {"checked": 2, "changed": 0, "unchanged": 2, "errors": 0}
    for record in _records(db_url).values():
        assert record["last_checked_at"] is not None and record["check_attempts"] == 0
        assert record["check_lease_owner"] is None and record["check_lease_until"] is None
    again = cli("reconcile", "--min-age", "0", "--json")
    assert again.json()["summary"]["checked"] == 0  # completed moments ago: not due


def test_a_failed_row_is_due_again_at_once_then_backs_off(cli: Any, db_url: str, gateway: Any) -> None:
    _seed(db_url, gateway, {"ok-1": 1000, "ok-2": 2000})
    _seed(db_url, gateway, {"ghost-1": 3000}, at_midtrans=False)  # pending here, unknown at Midtrans
    first = cli("reconcile", "--min-age", "0", "--json")
    assert first.exit_code == 1, first
    (failed,) = [r for r in first.json()["results"] if r["error"]]
    assert failed == {
        "order_id": "ghost-1", "status_before": "pending", "status_after": "pending",
        "error": "Midtrans does not know order ghost-1 (404) although it is pending here",
    }
    ghost = _records(db_url)["ghost-1"]
    assert ghost["check_attempts"] == 1 and ghost["check_error"] == failed["error"]
    assert ghost["last_checked_at"] is None  # no check of it ever completed
    assert ghost["check_retry_at"] <= ghost["now"] and ghost["check_lease_owner"] is None

    # The rerun the exit code asks for, with the default --recheck-after 30: the failed row at once.
    second = cli("reconcile", "--min-age", "0", "--json")
    assert second.exit_code == 1, second
    assert [r["order_id"] for r in second.json()["results"]] == ["ghost-1"]
    ghost = _records(db_url)["ghost-1"]
    assert ghost["check_attempts"] == 2
    wait = (ghost["check_retry_at"] - ghost["now"]).total_seconds()
    assert 55 < wait <= 60  # the second failure: a minute

    third = cli("reconcile", "--min-age", "0", "--json")
    assert third.exit_code == 0 and third.json()["summary"]["checked"] == 0  # backing off: not due yet
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE payment_transactions SET check_attempts = 40, check_retry_at = now() - interval '1 s'")
    cli("reconcile", "--min-age", "0", "--json")
    ghost = _records(db_url)["ghost-1"]
    assert ghost["check_attempts"] == 41
    assert 3590 < (ghost["check_retry_at"] - ghost["now"]).total_seconds() <= 3600  # capped at an hour


def test_a_rerun_after_25_faults_completes_every_row_at_once(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = {f"fault-{i:03d}": 4000 + i for i in range(100)}
    _seed(db_url, gateway, orders)
    for i, order_id in enumerate(orders):
        if i % 3 == 0:
            sandbox.pay(order_id, "settlement")
        elif i % 3 == 1:
            sandbox.pay(order_id, "expire")
    faulty = list(orders)[::4]  # 25 rows, spread out
    with MidtransProxy(sandbox.url) as proxy:
        for k, order_id in enumerate(faulty):
            if k % 5 == 0:
                proxy.rules[order_id] = Rule(http_status=503)  # retried by the gateway, then given up
            elif k % 5 == 1:
                proxy.rules[order_id] = Rule(stall=2.5)  # past MIDPAY_TIMEOUT
            else:
                proxy.rules[order_id] = Rule(raw=b"<html>502 Bad Gateway</html>")  # not Midtrans-shaped
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        monkeypatch.setenv("MIDPAY_TIMEOUT", "1")
        first = cli("reconcile", "--min-age", "0", "--json")
        assert first.exit_code == 1, first
        doc = first.json()
        assert doc["summary"]["checked"] == 100 and doc["summary"]["errors"] == 25
        assert {r["order_id"] for r in doc["results"] if r["error"]} == set(faulty)
        proxy.rules.clear()
        sandbox.reset_stats()
        rerun = cli("reconcile", "--min-age", "0", "--json")  # default --recheck-after: 30 s
    assert rerun.exit_code == 0, rerun
    assert rerun.json()["summary"]["checked"] == 25 and rerun.json()["summary"]["errors"] == 0
    assert set(sandbox.stats()["status_checks"]) == set(faulty)
    truth = {o["order_id"]: o["transaction_status"] for o in sandbox.orders()}
    records = _records(db_url)
    assert {o: r["status"] for o, r in records.items()} == {o: truth[o] for o in orders}
    assert all(r["check_attempts"] == 0 and r["check_lease_owner"] is None for r in records.values())


# --- one answer cannot sink the run --------------------------------------------------


def test_an_answer_that_cannot_be_stored_fails_only_its_row(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = {f"iso-{i}": 5000 + i for i in range(8)}
    _seed(db_url, gateway, orders)
    for order_id in orders:
        sandbox.pay(order_id, "settlement")
    with MidtransProxy(sandbox.url) as proxy:
        proxy.rules["iso-1"] = Rule(patch={"transaction_id": "t" * 300})
        proxy.rules["iso-3"] = Rule(patch={"status_message": "Success\x00, transaction is found"})
        proxy.rules["iso-5"] = Rule(patch={"gross_amount": "1.00"})
        proxy.rules["iso-6"] = Rule(patch={"order_id": "someone-else"})
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        result = cli("reconcile", "--min-age", "0", "--concurrency", "2", "--json")
    assert result.exit_code == 1, result
    doc = result.json()
    errors = {r["order_id"]: r["error"] for r in doc["results"] if r["error"]}
    assert errors == {
        "iso-1": "Midtrans' status answer cannot be stored: midtrans_transaction_id is 300 characters long, "
                 "the column holds 255",
        "iso-3": "Midtrans' status answer cannot be stored: field 'status_message' contains a NUL character",
        "iso-5": "amount mismatch for iso-5: Midtrans says 1.00, stored 5005; nothing applied",
        "iso-6": "order iso-6: Midtrans' answer is about order 'someone-else'; nothing applied",
    }
    assert doc["summary"] == {"checked": 8, "changed": 4, "unchanged": 0, "errors": 4}
    records = _records(db_url)
    assert {o for o, r in records.items() if r["status"] == "settlement"} == {"iso-0", "iso-2", "iso-4", "iso-7"}
    assert all(records[o]["status"] == "pending" and records[o]["check_attempts"] == 1 for o in errors)


# --- exit codes by cause ----------------------------------------------------------------


def test_midtrans_unreachable_stops_the_run_with_exit_3(env: dict[str, str], db_url: str, gateway: Any) -> None:
    _seed(db_url, gateway, {f"down-{i:02d}": 1000 + i for i in range(40)})
    port = _closed_port()
    proc = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "4", "--json",
                  MIDTRANS_API_URL=f"http://127.0.0.1:{port}")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    line = _one_error_line(err)
    assert line.startswith("Error: Midtrans could not be reached, reconcile stopped: status check of order 'down-")
    assert line.endswith(f"could not connect to Midtrans at http://127.0.0.1:{port}: "
                         "the connection was refused or the host is unreachable")
    doc = json.loads(out)
    assert doc["error"] == line.removeprefix("Error: ")
    assert doc["summary"]["checked"] <= 4  # the calls already under way, no more
    records = _records(db_url)
    # Not the rows' fault: no attempt recorded, no lease left, every row due for the next run.
    assert all(r["check_attempts"] == 0 and r["check_lease_owner"] is None for r in records.values())
    assert all(r["last_checked_at"] is None for r in records.values())


def test_consecutive_timeouts_open_the_circuit_breaker(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    _seed(db_url, gateway, {f"slow-{i:02d}": 1000 + i for i in range(40)})
    with MidtransProxy(sandbox.url) as proxy:
        proxy.default = Rule(stall=2.0)
        proc = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "2", "--json",
                      MIDTRANS_API_URL=proxy.url, MIDPAY_TIMEOUT="1")
        out, err = proc.communicate(timeout=60)
        calls = proxy.count("status")
    assert proc.returncode == 3, (out, err)
    line = _one_error_line(err)
    assert line.startswith("Error: Midtrans failed 5 calls in a row, reconcile stopped: status check of order 'slow-")
    assert line.endswith("no answer within 1 s (timed out)")
    assert 5 <= calls <= 5 + 1  # the breaker's five, and the other worker's call already under way
    doc = json.loads(out)
    assert doc["error"] == line.removeprefix("Error: ") and doc["summary"]["errors"] == doc["summary"]["checked"]
    assert all(r["check_attempts"] == 0 for r in _records(db_url).values())


def test_a_wrong_server_key_stops_at_the_first_401_with_exit_2(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    _seed(db_url, gateway, {f"key-{i:02d}": 1000 + i for i in range(60)})
    sandbox.reset_stats()
    proc = _spawn(env, "reconcile", "--min-age", "0", "--concurrency", "3", "--json",
                  MIDTRANS_SERVER_KEY="SB-Mid-server-not-the-right-one")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    line = _one_error_line(err)
    assert line.startswith("Error: reconcile stopped at the first 401: status check of order 'key-")
    assert line.endswith("Midtrans refused the server key (401); "
                         "check MIDTRANS_SERVER_KEY and MIDTRANS_IS_PRODUCTION/MIDTRANS_API_URL")
    assert "not-the-right-one" not in out + err
    assert sum(sandbox.stats()["status_checks"].values()) <= 3  # only the calls already under way
    doc = json.loads(out)
    assert doc["error"] == line.removeprefix("Error: ") and doc["summary"]["checked"] == 0
    assert all(r["check_attempts"] == 0 and r["check_lease_owner"] is None for r in _records(db_url).values())


# --- signals and crashes ------------------------------------------------------------------


def _wait_for_checks(sandbox: Any, count: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    def asked() -> bool:
        assert proc.poll() is None, proc.communicate()
        return sum(sandbox.stats()["status_checks"].values()) >= count

    wait_until(asked, timeout, what=f"the run to ask Midtrans about {count} orders")


def _leases_ended(url: str, orders: Iterable[str] | None = None) -> bool:
    """Every lease on ``orders`` (all rows when None) has run out by the database's clock, or was released."""
    records = _records(url)
    chosen = records.values() if orders is None else (records[o] for o in orders)
    return all(r["check_lease_until"] is None or r["check_lease_until"] < r["now"] for r in chosen)


def test_sigterm_ends_the_run_with_one_document_and_releases_its_rows(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any
) -> None:
    orders = {f"term-{i:03d}": 1000 + i for i in range(120)}
    _seed(db_url, gateway, orders)
    sandbox.reset_stats()
    proc = _spawn(env, "reconcile", "--min-age", "0", "--max-rps", "40", "--json")
    _wait_for_checks(sandbox, 15, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert _one_error_line(err) == "Error: interrupted"
    doc = json.loads(out)
    assert doc["error"] == "interrupted" and 15 <= doc["summary"]["checked"] < 120
    records = _records(db_url)
    assert all(r["check_lease_owner"] is None for r in records.values())  # nothing left reserved
    rerun = _spawn(env, "reconcile", "--min-age", "0", "--json")
    rout, rerr = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, rerr
    assert doc["summary"]["checked"] + json.loads(rout)["summary"]["checked"] == 120
    assert set(sandbox.stats()["status_checks"].values()) == {1}  # no row asked about twice


def test_a_killed_runs_leases_expire(env: dict[str, str], db_url: str, sandbox: Any, gateway: Any) -> None:
    orders = {f"kill-{i:03d}": 1000 + i for i in range(80)}
    _seed(db_url, gateway, orders)
    sandbox.reset_stats()
    proc = _spawn(env, "reconcile", "--min-age", "0", "--max-rps", "40", "--lease", "3", "--json")
    _wait_for_checks(sandbox, 10, proc)
    proc.kill()
    proc.communicate(timeout=30)
    held = {o for o, r in _records(db_url).items() if r["check_lease_owner"] is not None}
    assert held, "the killed run held leases"
    second = _spawn(env, "reconcile", "--min-age", "0", "--json")
    out, _ = second.communicate(timeout=60)
    assert {r["order_id"] for r in json.loads(out)["results"]}.isdisjoint(held)  # still reserved
    wait_until(lambda: _leases_ended(db_url, held), 10, what="the killed run's leases to run out")
    third = _spawn(env, "reconcile", "--min-age", "0", "--json")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    assert {r["order_id"] for r in json.loads(out)["results"]} == held  # expired: due again
    records = _records(db_url)
    assert all(r["last_checked_at"] is not None and r["check_lease_owner"] is None for r in records.values())


# --- overlapping runs --------------------------------------------------------------------


def overlapping_runs(env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp: Path, *,
                     count: int, max_rps: int, recheck: float) -> None:
    """Three runs started ``recheck`` seconds apart, each held by --max-rps to longer than --recheck-after.

    Every order has reached a final state at Midtrans, so a row leaves the open set
    at its first completed check: any second status request for an order is a row
    checked twice.
    """
    orders = {f"ovl-{i:05d}": 1000 + i for i in range(count)}
    _seed(db_url, gateway, orders)
    for i, order_id in enumerate(orders):
        sandbox.pay(order_id, ("settlement", "expire", "cancel")[i % 3])
    sandbox.reset_stats()
    args = ("reconcile", "--min-age", "0", "--max-rps", str(max_rps), "--recheck-after", str(recheck), "--json")
    procs, started = [], []
    for _ in range(3):
        started.append(time.monotonic())
        procs.append(_spawn(env, *args))
        time.sleep(recheck * 1.2)  # the scenario itself: each run starts after --recheck-after has passed
    outs = [p.communicate(timeout=600) for p in procs]
    docs = [json.loads(out) for out, _ in outs]
    checks = sandbox.stats()["status_checks"]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert len(checks) == count and set(checks.values()) == {1}, {o: n for o, n in checks.items() if n != 1}
    assert sum(d["summary"]["checked"] for d in docs) == count
    assert all(d["summary"]["checked"] > 0 for d in docs), "every run took part"
    truth = {o["order_id"]: o["transaction_status"] for o in sandbox.orders()}
    assert {o: r["status"] for o, r in _records(db_url).items()} == {o: truth[o] for o in orders}


def test_overlapping_slow_runs_check_each_row_exactly_once(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    overlapping_runs(env, db_url, sandbox, gateway, tmp_path, count=360, max_rps=60, recheck=1.0)
