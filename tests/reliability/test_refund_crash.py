"""Scenario 8: `midpay refund` killed, or its PostgreSQL connection terminated, at every step.

Real ``python -m midpay`` processes against a real PostgreSQL and the sandbox over
HTTP. Each step is reached exactly through the test-only crash points
(``midpay.testing.crashpoints``: ``MIDPAY_TEST_CRASH_AT=<point>`` makes the process SIGKILL
itself there; ``<point>:pause`` makes it wait there while the test terminates its
PostgreSQL backend with ``pg_terminate_backend`` from another connection).

The oracle is the sandbox's own payout record: after each scenario and its recovery
(the same command again, ``status``, or ``reconcile``), Midtrans has paid out exactly
the money that was asked for, once, and the ledger agrees.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..conftest import SERVER_KEY
from ..helpers import payment_status, wait_until
from ..refund_support import dashboard_refund, paid_out
from .conftest import Figures, Proc, assert_clean_failure, process_env, run, spawn

POINTS = (
    "refund.checked", "refund.before_row", "refund.row_committed",
    "refund.answered", "refund.outcome_written", "refund.committed",
)
# Midtrans has made the refund by the time a process dies here.
PAID_POINTS = ("refund.answered", "refund.outcome_written", "refund.committed")


@pytest.fixture
def gw(sandbox: Any) -> Iterator[Any]:
    from midpay.midtrans.gateway import Gateway

    with Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=10.0, backoff=0.01) as gateway:
        yield gateway


def settle(url: str, gateway: Any, sandbox: Any, orders: dict[str, int]) -> None:
    """Payments settled at Midtrans and here, as charge and its notification leave them."""
    with psycopg.connect(url) as conn:
        for order_id, amount in orders.items():
            answer = gateway.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"seed-{order_id}"[:46])
            sandbox.pay(order_id, "settlement")
            conn.execute(
                "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, "
                "midtrans_transaction_id, paid_at, created_at) "
                "VALUES (%s, %s, 'gopay', 'settlement', %s, now(), now() - interval '5 minutes')",
                (order_id, amount, answer["transaction_id"]),
            )


def ledger(url: str, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT r.refund_key, r.amount, r.status, r.origin FROM payment_refunds r "
            "WHERE r.order_id = %s ORDER BY r.created_at, r.id",
            (order_id,),
        ).fetchall()


def refunded_here(url: str, order_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM payment_refunds WHERE order_id = %s AND status = 'done'",
            (order_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def refund_args(order_id: str, amount: int | None, reason: str) -> list[str]:
    args = ["refund", order_id, "--yes", "--json", "--reason", reason]
    return args + (["--amount", str(amount)] if amount is not None else [])


def crash_env(
    env: dict[str, str], point: str | None, folder: Path | None = None, *, pause: bool = False
) -> dict[str, str]:
    if point is None:
        return process_env(env, MIDPAY_TEST_CRASH_AT=None, MIDPAY_TEST_CRASH_DIR=None)
    assert folder is not None or not pause
    return process_env(
        env,
        MIDPAY_TEST_CRASH_AT=f"{point}:pause" if pause else point,
        MIDPAY_TEST_CRASH_DIR=str(folder) if folder is not None else None,
    )


def terminate_at(url: str, proc: Proc, folder: Path, point: str, timeout: float = 60) -> bool:
    """Wait for ``proc`` to pause at ``point``, terminate its PostgreSQL backend, let it go on.

    False when the process ended without reaching the point (a path that skips it).
    """
    reached = folder / f"{point}.reached"
    wait_until(lambda: reached.exists() or proc.popen.poll() is not None, timeout, what=f"{proc} to reach {point}")
    if not reached.exists():
        return False
    info = json.loads(reached.read_text())
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (info["backend_pid"],))
    (folder / f"{point}.go").touch()
    return True


def finish(env: dict[str, str], work: Path, args: list[str], attempts: int = 3) -> Proc:
    """The same command again, until it says it is done (exit 0)."""
    tried = []
    for n in range(attempts):
        proc = run(args, crash_env(env, None), work, name=f"rerun-{time.monotonic_ns()}-{n}")
        if proc.returncode == 0:
            return proc
        tried.append(proc)
    raise AssertionError(f"{args} did not finish: {tried}")


# --- each step, deterministically ------------------------------------------------------------


def test_refund_killed_at_each_step_then_the_same_command_finishes_it(
    env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path, figures: Figures
) -> None:
    orders = {f"kill-{i}": 100000 + i for i in range(len(POINTS))}
    settle(db_url, gw, sandbox, orders)
    work = tmp_path / "work"
    found: dict[str, Any] = {}
    for (order_id, _amount), point in zip(orders.items(), POINTS, strict=True):
        args = refund_args(order_id, 40000, "killed")
        killed = run(args, crash_env(env, point), work, name=f"{order_id}-killed")
        assert killed.returncode == -signal.SIGKILL, killed
        left = ledger(db_url, order_id)
        midtrans_paid = paid_out(sandbox, order_id)
        done = finish(env, work, args)
        found[point] = {"left": [r[2] for r in left], "paid_before_rerun": midtrans_paid,
                        "rerun_result": done.json()["result"]}
        assert paid_out(sandbox, order_id) == 40000, (point, found[point])
        assert ledger(db_url, order_id) == [(f"{order_id}-rf-1", 40000, "done", "midpay")], point
        assert payment_status(db_url, order_id) == "partial_refund"
        # And once more: still nothing more is paid.
        assert finish(env, work, args).json()["result"] == "already"
        assert paid_out(sandbox, order_id) == 40000
    figures.orders = figures.faults_injected = len(POINTS)
    figures.processes = 3 * len(POINTS)
    figures.events = figures.processes
    figures.lost = 0
    figures.wrongly_applied = sum(1 for o in orders if paid_out(sandbox, o) != 40000)
    figures.notes = {"by_point": found}
    # What each crash left: no row before the insert; a requested row after it, paid at Midtrans
    # only once it answered; after the commit, everything done.
    assert found["refund.checked"]["left"] == [] and found["refund.before_row"]["left"] == []
    assert found["refund.row_committed"] == {"left": ["requested"], "paid_before_rerun": 0, "rerun_result": "resent"}
    for point in ("refund.answered", "refund.outcome_written"):
        assert found[point] == {"left": ["requested"], "paid_before_rerun": 40000, "rerun_result": "recorded"}
    assert found["refund.committed"] == {"left": ["done"], "paid_before_rerun": 40000, "rerun_result": "already"}


RECONCILE = ["reconcile", "--min-age", "0", "--recheck-after", "0", "--json"]


@pytest.mark.parametrize("recovery", ["status", "reconcile"])
@pytest.mark.parametrize("point", PAID_POINTS[:2])
def test_status_or_reconcile_finishes_a_refund_whose_process_was_killed(
    point: str, recovery: str, env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path
) -> None:
    settle(db_url, gw, sandbox, {"st-1": 90000})
    work = tmp_path / "work"
    args = refund_args("st-1", 25000, "status finishes it")
    assert run(args, crash_env(env, point), work).returncode == -signal.SIGKILL
    assert payment_status(db_url, "st-1") == "settlement" and ledger(db_url, "st-1")[0][2] == "requested"
    if recovery == "status":
        shown = run(["status", "st-1", "--json"], crash_env(env, None), work)
        assert shown.returncode == 0, shown
        assert (shown.json()["status"], shown.json()["refunded_amount"]) == ("partial_refund", 25000)
    else:
        checked = run(RECONCILE, crash_env(env, None), work)
        assert checked.returncode == 0, checked
        assert [(r["order_id"], r["status_after"]) for r in checked.json()["results"]] == [("st-1", "partial_refund")]
    assert ledger(db_url, "st-1") == [("st-1-rf-1", 25000, "done", "midpay")]
    assert finish(env, work, args).json()["result"] == "already"
    assert paid_out(sandbox, "st-1") == 25000


def test_refund_losing_its_database_connection_at_each_step_then_the_same_command(
    env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path, figures: Figures
) -> None:
    orders = {f"drop-{i}": 70000 + i for i in range(len(POINTS))}
    settle(db_url, gw, sandbox, orders)
    work = tmp_path / "work"
    seen: dict[str, Any] = {}
    for (order_id, _amount), point in zip(orders.items(), POINTS, strict=True):
        folder = tmp_path / f"crash-{order_id}"
        folder.mkdir()
        args = refund_args(order_id, 30000, "dropped")
        proc = spawn(args, crash_env(env, point, folder, pause=True), work, name=f"{order_id}-dropped")
        assert terminate_at(db_url, proc, folder, point), point
        code = proc.wait(60)
        if point == "refund.committed":
            assert code == 0, proc  # all was written; only printing was left
        else:
            assert_clean_failure(proc, 3)
            assert "rerun the same command" in proc.stderr, proc
        left = [r[2] for r in ledger(db_url, order_id)]
        seen[point] = {"exit": code, "error": proc.stderr.strip()[:200], "left": left}
        finish(env, work, args)
        assert paid_out(sandbox, order_id) == 30000, (point, seen[point])
        assert ledger(db_url, order_id) == [(f"{order_id}-rf-1", 30000, "done", "midpay")], point
    figures.orders = figures.faults_injected = len(POINTS)
    figures.processes = 2 * len(POINTS)
    figures.events = figures.processes
    figures.lost = 0
    figures.wrongly_applied = sum(1 for o in orders if paid_out(sandbox, o) != 30000)
    figures.notes = {"by_point": seen}
    assert "nothing was sent to Midtrans" in seen["refund.checked"]["error"]
    assert "Midtrans made refund" in seen["refund.answered"]["error"]


# --- races and refunds made elsewhere --------------------------------------------------------


def test_racing_refunds_of_one_payment_pay_once(
    env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path, figures: Figures
) -> None:
    settle(db_url, gw, sandbox, {"race-1": 100000, "race-2": 100000})
    work = tmp_path / "work"
    # Four copies of one command at once: one refund.
    same = refund_args("race-1", 30000, "same command")
    procs = [spawn(same, crash_env(env, None), work, name=f"race-1-{n}") for n in range(4)]
    codes = [p.wait(60) for p in procs]
    assert codes == [0, 0, 0, 0], procs
    assert {p.json()["refund"]["refund_key"] for p in procs} == {"race-1-rf-1"}
    assert paid_out(sandbox, "race-1") == 30000

    # One refund paused after its row is committed; another refund meanwhile must wait for it,
    # and the same command meanwhile finishes it.
    folder = tmp_path / "crash-race-2"
    folder.mkdir()
    first = spawn(refund_args("race-2", 20000, "first"), crash_env(env, "refund.row_committed", folder, pause=True),
                  work, name="race-2-first")
    reached = folder / "refund.row_committed.reached"
    wait_until(lambda: reached.exists() or first.popen.poll() is not None, 60, what="the first refund to pause")
    assert reached.exists(), first
    other = run(refund_args("race-2", 50000, "other"), crash_env(env, None), work, name="race-2-other")
    assert_clean_failure(other, 1)
    assert "whose outcome is unknown (refund_key race-2-rf-1); finish it first" in other.stderr
    twin = run(refund_args("race-2", 20000, "first"), crash_env(env, None), work, name="race-2-twin")
    assert twin.returncode == 0 and twin.json()["result"] == "resent", twin
    (folder / "refund.row_committed.go").touch()
    assert first.wait(60) == 0, first
    assert paid_out(sandbox, "race-2") == 20000
    after = run(refund_args("race-2", 50000, "other"), crash_env(env, None), work, name="race-2-after")
    assert after.returncode == 0, after
    assert paid_out(sandbox, "race-2") == 70000 and refunded_here(db_url, "race-2") == 70000
    figures.orders, figures.processes, figures.events = 2, 8, 8
    figures.lost = figures.wrongly_applied = 0


def test_dashboard_refund_arriving_only_as_a_notification_then_the_rest(
    env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path, notes: Path
) -> None:
    settle(db_url, gw, sandbox, {"dash-1": 150000})
    work = tmp_path / "work"
    dashboard_refund(sandbox, "dash-1", 60000)
    bodies = sorted(p for p in notes.glob("*.json") if "refund" in p.name)
    assert bodies
    replay = run(["replay-webhook", *map(str, bodies), "--json"], crash_env(env, None), work)
    assert replay.returncode == 0, replay
    shown = run(["status", "dash-1", "--no-refresh", "--json"], crash_env(env, None), work).json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (60000, 90000)
    assert [r["origin"] for r in shown["refunds"]] == ["outside"]
    rest = run(["refund", "dash-1", "--yes", "--json"], crash_env(env, None), work)
    assert rest.returncode == 0, rest
    assert rest.json()["refund"]["amount"] == 90000 and rest.json()["payment"]["status"] == "refund"
    assert paid_out(sandbox, "dash-1") == 150000 and refunded_here(db_url, "dash-1") == 150000


# --- the randomized loop ---------------------------------------------------------------------


@dataclass
class Trial:
    """One payment: one refund asked for, interrupted at random, then recovered."""

    order_id: str
    gross: int
    outside: int  # refunded on the dashboard first
    amount: int | None  # None: "the rest"
    faults: list[str] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    recovery: str = ""

    @property
    def asked(self) -> int:
        return self.amount if self.amount is not None else self.gross - self.outside


def _interrupted(trial: Trial, env: dict[str, str], url: str, work: Path, rng: random.Random) -> None:
    """Run the refund once with a random fault: a kill at a step, a dropped connection, a kill at a moment."""
    args = refund_args(trial.order_id, trial.amount, f"loop {trial.order_id}")
    kind = rng.choice(("kill", "drop", "timed"))
    point = rng.choice(POINTS)
    if kind == "kill":
        proc = run(args, crash_env(env, point), work)
        trial.faults.append(f"kill@{point}" if proc.returncode == -signal.SIGKILL else f"kill@{point}:unreached")
    elif kind == "drop":
        folder = work / f"c-{trial.order_id}-{len(trial.faults)}"
        folder.mkdir(parents=True)
        proc = spawn(args, crash_env(env, point, folder, pause=True), work)
        hit = terminate_at(url, proc, folder, point)
        proc.wait(60)
        trial.faults.append(f"drop@{point}" if hit else f"drop@{point}:unreached")
    else:
        delay = rng.uniform(0.15, 0.9)
        proc = spawn(args, crash_env(env, None), work)
        timer = threading.Timer(delay, lambda: proc.popen.poll() is None and os.kill(proc.popen.pid, signal.SIGKILL))
        timer.start()
        proc.wait(60)
        timer.cancel()
        trial.faults.append(f"timed@{delay:.2f}s" + ("" if proc.returncode == -signal.SIGKILL else ":finished"))
    trial.exits.append(proc.returncode or 0)
    if proc.returncode not in (0, 3, -signal.SIGKILL):
        raise AssertionError(f"unexpected exit: {proc}")


def _struck(trial: Trial) -> bool:
    return any(not f.endswith((":unreached", ":finished")) for f in trial.faults)


def _kind(fault: str) -> str:
    """``kill``, ``drop``, ``timed``, with ``:unreached`` / ``:finished`` when it did not strike."""
    kind, _, rest = fault.partition("@")
    return kind + (":" + rest.rsplit(":", 1)[1] if ":" in rest else "")


def _recover(trial: Trial, env: dict[str, str], work: Path, rng: random.Random) -> None:
    way = rng.choice(("rerun", "status", "reconcile"))
    if way == "status":
        shown = run(["status", trial.order_id, "--json"], crash_env(env, None), work)
        assert shown.returncode == 0, shown
    elif way == "reconcile":  # it also meets the other trials' refunds in flight
        checked = run(RECONCILE, crash_env(env, None), work)
        assert checked.returncode == 0, checked
    trial.recovery = way
    finish(env, work, refund_args(trial.order_id, trial.amount, f"loop {trial.order_id}"))


@pytest.mark.parametrize(
    "count",
    [pytest.param(16, id="quick"), pytest.param(240, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(1800)])],
)
def test_randomized_kills_and_dropped_connections_pay_out_exactly_what_was_asked(
    count: int, env: dict[str, str], db_url: str, sandbox: Any, gw: Any, tmp_path: Path, figures: Figures
) -> None:
    rng = random.Random(20261126 + count)
    trials = []
    for i in range(count):
        gross = rng.randrange(20, 200) * 1000
        outside = rng.choice((0, 0, rng.randrange(1, gross // 1000) * 1000))
        left = gross - outside
        amount = rng.choice((None, rng.randrange(1, left // 1000 + 1) * 1000))
        trials.append(Trial(f"loop-{i:04d}", gross, outside, amount))
    settle(db_url, gw, sandbox, {t.order_id: t.gross for t in trials})
    for t in trials:
        if t.outside:
            dashboard_refund(sandbox, t.order_id, t.outside)
    work = tmp_path / "work"
    seeds = [rng.randrange(2**32) for _ in trials]

    def one(index: int) -> None:
        trial, local = trials[index], random.Random(seeds[index])
        # One to three interrupted attempts in a row; more while none of them struck.
        wanted = local.choice((1, 1, 2, 3))
        while len(trial.faults) < wanted or (not _struck(trial) and len(trial.faults) < 6):
            _interrupted(trial, env, db_url, work, local)
        _recover(trial, env, work, local)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(one, range(count)))
    outcome = {t.order_id: (paid_out(sandbox, t.order_id), refunded_here(db_url, t.order_id)) for t in trials}
    wrong = {
        t.order_id: {"asked": t.asked, "outside": t.outside, "paid_out_and_ledger": outcome[t.order_id],
                     "faults": t.faults}
        for t in trials
        if outcome[t.order_id] != (t.outside + t.asked, t.outside + t.asked)
    }
    kinds = Counter(_kind(f) for t in trials for f in t.faults)
    figures.orders = count
    figures.faults_injected = sum(1 for t in trials for f in t.faults if not f.endswith((":unreached", ":finished")))
    figures.processes = len(list(work.glob("*.out")))
    figures.events = figures.processes
    figures.lost = sum(1 for t in trials if any(r[2] == "requested" for r in ledger(db_url, t.order_id)))
    figures.wrongly_applied = len(wrong)
    figures.notes = {
        "faults_by_kind": dict(kinds),
        "asked_total": sum(t.asked for t in trials),
        "paid_out_total": sum(paid for paid, _ in outcome.values()) - sum(t.outside for t in trials),
        "duration_of_trials_s": round(time.monotonic() - started, 1),
        "exit_codes": dict(Counter(code for t in trials for code in t.exits)),
        "recovered_by": dict(Counter(t.recovery for t in trials)),
    }
    assert wrong == {}
    assert figures.lost == 0
    assert sum(1 for t in trials if _struck(t)) >= count * 0.9  # a fault struck (nearly) every payment
