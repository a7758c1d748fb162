"""Scenario 8: reconcile as a cron job on its bad days, through real processes.

Overlapping runs slower than --recheck-after (the done-when of issue 13: three runs
over 2,000 rows, each row checked exactly once), and PostgreSQL killed under a
reconcile and under a replay: exit 3, one line on stderr, and a --json document that
parses. The PostgreSQL that is killed is this test's own (midpay's embedded
layer in a temporary directory, tests/private_postgres.py), never the session's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ..helpers import wait_until
from ..private_postgres import PrivatePostgres
from ..reconcile.test_job import _seed, overlapping_runs
from .conftest import Figures, count, disagreeing, process_env, spawn


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_overlapping_runs_slower_than_recheck_after_check_2000_rows_exactly_once(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    overlapping_runs(env, db_url, sandbox, gateway, tmp_path, count=2000, max_rps=150, recheck=2.0)
    figures.orders = figures.events = 2000
    figures.processes = 3
    figures.lost = count(db_url, "SELECT count(*) FROM payment_transactions WHERE last_checked_at IS NULL")
    figures.wrongly_applied = len(disagreeing(db_url, sandbox))
    figures.notes = {"max_rps": 150, "recheck_after": 2.0, "seconds": round(time.monotonic() - started, 1)}
    assert figures.lost == 0 and figures.wrongly_applied == 0, disagreeing(db_url, sandbox)[:20]


@pytest.fixture
def killable() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres("midpay-kill-pg-")
    try:
        yield server
    finally:
        server.close()


def _fresh(killable: PrivatePostgres) -> str:
    from midpay.db import migrate

    with psycopg.connect(killable.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("midpay")))
    url = killable.url("midpay")
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    return url


def _assert_cut_short(proc: Any, figures: Figures, *, one_line: bool) -> dict[str, Any]:
    """Exit 3, one ``Error: …`` line naming PostgreSQL, and one complete JSON document with that error."""
    figures.notes.update({"exit": proc.returncode, "stderr": proc.stderr.strip()[-300:]})
    assert proc.returncode == 3, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc
    assert lines[0].startswith(("Error: PostgreSQL connection failed", "Error: cannot connect to PostgreSQL")), proc
    if one_line:
        assert proc.stdout.count("\n") == 1, proc  # reconcile's document: one line, for `>> file.jsonl`
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["error"] == lines[0].removeprefix("Error: ")
    return doc


def test_postgres_killed_under_reconcile_exits_3_with_one_document(
    killable: PrivatePostgres, env: dict[str, str], sandbox: Any, gateway: Any, tmp_path: Path, figures: Figures
) -> None:
    url = _fresh(killable)
    orders = {f"pgk-{i:04d}": 2000 + i for i in range(300)}
    _seed(url, gateway, orders)
    for order_id in list(orders)[::2]:
        sandbox.pay(order_id, "settlement")
    sandbox.reset_stats()
    proc = spawn(["reconcile", "--min-age", "0", "--max-rps", "100", "--json"], process_env(env, DATABASE_URL=url),
                 tmp_path / "work", name="reconcile")

    def checked(count: int) -> bool:
        assert proc.popen.poll() is None, proc
        return sum(sandbox.stats()["status_checks"].values()) >= count

    wait_until(lambda: checked(40), 60, what="40 checks")
    killable.kill()
    proc.wait(120)
    figures.orders, figures.processes, figures.faults_injected = len(orders), 1, 1
    doc = _assert_cut_short(proc, figures, one_line=True)
    # Answers that change a row wait for their batch's commit before they count as
    # checked: those of the batch PostgreSQL died under are not reported (nor completed).
    assert 0 < doc["summary"]["checked"] < len(orders)
    assert len(doc["results"]) == doc["summary"]["checked"]
    figures.lost = figures.wrongly_applied = 0


def test_postgres_killed_under_replay_exits_3_with_one_document(
    killable: PrivatePostgres, env: dict[str, str], sandbox: Any, gateway: Any, tmp_path: Path, figures: Figures
) -> None:
    url = _fresh(killable)
    orders = {f"pgr-{i:04d}": 3000 + i for i in range(20)}
    _seed(url, gateway, orders)
    lines = [json.dumps(sandbox.pay(order_id, "settlement")) for order_id in orders]
    big = tmp_path / "many.jsonl"
    big.write_text("\n".join(lines * 500) + "\n")  # 10,000 bodies: long enough to be killed under
    proc = spawn(["replay-webhook", str(big), "--json"], process_env(env, DATABASE_URL=url), tmp_path / "work",
                 name="replay")

    def stored(count: int) -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM payment_webhook_events").fetchone()
        except psycopg.OperationalError:
            row = (0,)
        assert proc.popen.poll() is None, proc
        return bool(row and row[0] >= count)

    wait_until(lambda: stored(200), 60, what="200 stored events")
    killable.kill()
    proc.wait(120)
    figures.events, figures.processes, figures.faults_injected = 10_000, 1, 1
    doc = _assert_cut_short(proc, figures, one_line=False)
    # How many were decided before the kill is the intake's business; the document is whole.
    assert doc["summary"]["total"] < 10_000 and len(doc["results"]) == doc["summary"]["total"]
    figures.lost = figures.wrongly_applied = 0
