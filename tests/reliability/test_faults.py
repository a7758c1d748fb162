"""Scenario 3: Midtrans failing, PostgreSQL restarting under a run, PostgreSQL unreachable at start.

Nothing a fault does may corrupt a row: a row either keeps its state or takes
Midtrans' state, and a rerun once the fault is gone finishes the job.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ..helpers import wait_until
from .conftest import (
    Figures,
    assert_clean_failure,
    charge_in_sandbox,
    insert_rows,
    process_env,
    rows,
    run,
    sandbox_states,
    spawn,
)


def _assert_ended_or_recovered(proc: Any) -> None:
    """A run that lost PostgreSQL either recovered (0/1) or ended with exit 3 and ``Error: …`` last."""
    assert proc.returncode in (0, 1, 3), proc
    assert "Traceback" not in proc.stderr, proc
    if proc.returncode == 3:
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("Error: PostgreSQL connection failed"), proc
        assert len(lines) == 1, proc


def _move_some(sandbox: Any, orders: dict[str, int], seed: int) -> None:
    """About half the orders reach an outcome at Midtrans; the rest stay pending."""
    rng = random.Random(seed)
    for order_id in orders:
        draw = rng.random()
        if draw < 0.25:
            sandbox.pay(order_id, "settlement")
        elif draw < 0.4:
            sandbox.pay(order_id, "expire")
        elif draw < 0.5:
            sandbox.pay(order_id, "cancel")


def _disagreements(url: str, sandbox: Any, orders: dict[str, int]) -> list[str]:
    """Orders whose row differs from Midtrans (state, or paid_at against settlement_time)."""
    from midpay.midtrans.notifications import parse_time

    truth = sandbox_states(sandbox)
    final = rows(url)
    wrong = []
    for order_id in orders:
        state = truth[order_id]["transaction_status"]
        paid = parse_time(truth[order_id]["settlement_time"], "settlement_time")
        if final[order_id]["status"] != state or final[order_id]["paid_at"] != paid:
            wrong.append(order_id)
    return wrong


# --- Midtrans failing 20% of the calls ---------------------------------------------------


@pytest.mark.parametrize(
    "count",
    [pytest.param(100, id="quick"), pytest.param(500, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(600)])],
)
def test_reconcile_under_faults_corrupts_nothing_and_a_rerun_finishes(
    count: int,
    env: dict[str, str],
    db_url: str,
    sandbox: Any,
    gateway: Any,
    tmp_path: Path,
    figures: Figures,
) -> None:
    orders = {f"flt-{i:04d}": 3000 + i for i in range(count)}
    insert_rows(db_url, orders, status="pending")
    charge_in_sandbox(gateway, orders)
    _move_some(sandbox, orders, seed=3)
    before = rows(db_url)
    sandbox.reset_stats()
    # 20% of the calls fail: 5xx and 429 (retried), stalls past the 1 s timeout and
    # garbage answers (not retried: the row is reported and left alone).
    sandbox.set_faults(
        fail_rate=0.08, rate_limit_rate=0.04, stall_rate=0.04, malformed_rate=0.04, stall_seconds=1.5, seed=5
    )
    work = tmp_path / "work"
    first = run(["reconcile", "--min-age", "0", "--json"], process_env(env, MIDPAY_TIMEOUT="1"), work, timeout=300)
    stats = sandbox.stats()
    sandbox.set_faults(fail_rate=0, rate_limit_rate=0, stall_rate=0, malformed_rate=0)
    truth = sandbox_states(sandbox)
    after = rows(db_url)
    doc = json.loads(first.stdout) if first.stdout.strip() else None
    errored = {r["order_id"] for r in doc["results"] if r["error"]} if doc else set()
    changed = [o for o in orders if after[o]["status"] != before[o]["status"]]
    wrongly = [o for o in changed if after[o]["status"] != truth[o]["transaction_status"]]
    wrongly += [o for o in orders if (after[o]["paid_at"] is not None) != (after[o]["status"] == "settlement")]
    wrongly += [o for o in errored if after[o]["status"] != before[o]["status"]]

    rerun = run(
        ["reconcile", "--min-age", "0", "--recheck-after", "0", "--json"],
        process_env(env, MIDPAY_TIMEOUT="5"), work, timeout=300,
    )
    left = _disagreements(db_url, sandbox, orders)
    figures.events = stats["requests"]
    figures.orders = count
    figures.processes = 2
    figures.faults_injected = sum(stats["faults"].values())
    figures.lost = len(left)
    figures.wrongly_applied = len(wrongly)
    figures.notes = {
        "faults": stats["faults"],
        "status_requests": stats["by_endpoint"]["status"],
        "first_run": {
            "exit": first.returncode, **(doc["summary"] if doc else {}), "seconds": round(first.elapsed or 0, 2)
        },
        "rerun": {"exit": rerun.returncode, **(rerun.json()["summary"] if rerun.stdout.strip() else {})},
        "changed_by_first_run": len(changed),
    }

    assert doc is not None, first
    assert "Traceback" not in first.stderr, first
    assert first.returncode == 1, first
    assert doc["summary"]["checked"] == count
    assert doc["summary"]["errors"] == len(errored) > 0
    assert stats["requests"] > count, "5xx and 429 answers were retried"
    for result in doc["results"]:
        if result["error"]:
            assert "\n" not in result["error"] and result["status_after"] == result["status_before"], result
    assert wrongly == []
    assert rerun.returncode == 0, rerun
    assert rerun.json()["summary"]["errors"] == 0
    assert left == []


# --- PostgreSQL restarted during a run ---------------------------------------------------


class RestartablePostgres:
    """A PostgreSQL of this test alone (midpay.embedded in a tmp dir), restartable (fast shutdown, start)."""

    def __init__(self, root: Path) -> None:
        from midpay import embedded

        root.chmod(0o711)  # as root the server runs as nobody, who must pass through
        self.home = root
        self.server = embedded.start(root)

    def url(self, database: str = "postgres") -> str:
        from midpay import embedded

        return embedded.url(self.server, database)

    def restart(self) -> None:
        from midpay import embedded

        embedded.stop(self.home)
        self.server = embedded.start(self.home)

    def close(self) -> None:
        from midpay import embedded

        embedded.stop(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def restartable() -> Iterator[RestartablePostgres]:
    # Outside pytest's basetemp, which a concurrent pytest session may prune.
    server = RestartablePostgres(Path(tempfile.mkdtemp(prefix="midpay-restart-pg-")))
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_postgres_restart_during_reconcile_then_a_rerun_completes(
    restartable: RestartablePostgres,
    env: dict[str, str],
    sandbox: Any,
    gateway: Any,
    tmp_path: Path,
    figures: Figures,
) -> None:
    from midpay.db import migrate

    with psycopg.connect(restartable.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("midpay")))
    url = restartable.url("midpay")
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    orders = {f"rst-{i:04d}": 4000 + i for i in range(500)}
    insert_rows(url, orders, status="pending")
    charge_in_sandbox(gateway, orders)
    _move_some(sandbox, orders, seed=4)
    sandbox.reset_stats()
    sandbox.set_faults(latency_ms=25)
    penv = process_env(env, DATABASE_URL=url)
    work = tmp_path / "work"

    proc = spawn(["reconcile", "--min-age", "0", "--concurrency", "4", "--json"], penv, work, name="interrupted")
    wait_until(lambda: sum(sandbox.stats()["status_checks"].values()) >= 100, 60, what="100 checks")
    checked_before_restart = sum(sandbox.stats()["status_checks"].values())
    restart_started = time.monotonic()
    restartable.restart()
    restart_seconds = time.monotonic() - restart_started
    proc.wait(300)
    sandbox.set_faults(latency_ms=0)
    rerun = run(
        ["reconcile", "--min-age", "0", "--recheck-after", "0", "--json"], penv, work,
        name="rerun",
    )
    left = _disagreements(url, sandbox, orders)
    figures.events = sum(sandbox.stats()["status_checks"].values())
    figures.orders = len(orders)
    figures.processes = 2
    figures.faults_injected = 1
    figures.lost = len(left)
    figures.wrongly_applied = len(left)
    figures.notes = {
        "interrupted_exit": proc.returncode,
        "interrupted_stderr": proc.stderr.strip().splitlines()[-3:],
        "checked_before_restart": checked_before_restart,
        "restart_seconds": round(restart_seconds, 2),
        "interrupted_seconds": round(proc.elapsed or 0, 2),
        "rerun_exit": rerun.returncode,
        "rerun_summary": rerun.json()["summary"] if rerun.stdout.strip() else None,
    }

    _assert_ended_or_recovered(proc)
    assert rerun.returncode == 0, rerun
    assert left == []


def test_connections_killed_during_reconcile_then_a_rerun_completes(
    env: dict[str, str],
    db_url: str,
    pg_admin_url: str,
    sandbox: Any,
    gateway: Any,
    tmp_path: Path,
    figures: Figures,
) -> None:
    """The quick sibling of the restart: every backend of the run is terminated under it."""
    orders = {f"kill-{i:04d}": 4500 + i for i in range(150)}
    insert_rows(db_url, orders, status="pending")
    charge_in_sandbox(gateway, orders)
    _move_some(sandbox, orders, seed=6)
    sandbox.reset_stats()
    sandbox.set_faults(latency_ms=25)
    penv = process_env(env)
    work = tmp_path / "work"
    proc = spawn(["reconcile", "--min-age", "0", "--concurrency", "4", "--json"], penv, work, name="interrupted")
    wait_until(lambda: sum(sandbox.stats()["status_checks"].values()) >= 40, 60, what="40 checks")
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
    proc.wait(120)
    sandbox.set_faults(latency_ms=0)
    rerun = run(
        ["reconcile", "--min-age", "0", "--recheck-after", "0", "--json"], penv, work,
        name="rerun",
    )
    left = _disagreements(db_url, sandbox, orders)
    figures.orders = len(orders)
    figures.events = sum(sandbox.stats()["status_checks"].values())
    figures.processes = 2
    figures.faults_injected = int(killed[0]) if killed else 0
    figures.lost = len(left)
    figures.wrongly_applied = len(left)
    figures.notes = {
        "interrupted_exit": proc.returncode,
        "interrupted_stderr": proc.stderr.strip()[-300:],
        "backends_terminated": figures.faults_injected,
        "rerun_exit": rerun.returncode,
    }
    _assert_ended_or_recovered(proc)
    assert rerun.returncode == 0, rerun
    assert left == []


# --- PostgreSQL unreachable at start -----------------------------------------------------

UNREACHABLE = "postgresql://u:pw@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ("reconcile", "--min-age", "0"),
            id="reconcile",
        ),
        pytest.param(("status", "some-order"), id="status"),
        pytest.param(("replay-webhook", "body.json"), id="replay-webhook"),
        pytest.param(("charge", "--amount", "10000"), id="charge"),
        pytest.param(("migrate",), id="migrate"),
        pytest.param(("migrate", "--status"), id="migrate-status"),
    ],
)
def test_unreachable_postgres_at_start_is_exit_3_one_line(
    args: tuple[str, ...], env: dict[str, str], sandbox: Any, tmp_path: Path, figures: Figures
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "body.json").write_text("{}")
    proc = run(args, process_env(env, DATABASE_URL=UNREACHABLE), work, timeout=60)
    figures.processes = 1
    figures.faults_injected = 1
    figures.lost = figures.wrongly_applied = 0  # nothing could be written
    figures.notes = {"exit": proc.returncode, "seconds": round(proc.elapsed or 0, 2), "stderr": proc.stderr[-400:]}
    assert_clean_failure(proc, 3)
    assert "cannot connect to PostgreSQL" in proc.stderr and "Connection refused" in proc.stderr
    assert "pw@" not in proc.stderr
    assert (proc.elapsed or 0) < 5, "a refused connection is reported at once"
    assert sandbox.stats()["requests"] == 0, "nothing was sent to Midtrans"
