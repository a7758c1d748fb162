"""Scenario 4: `midpay charge` killed with SIGKILL at each step, and charges under random faults.

Each kill point is reached deterministically:

(a) after the insert, before Midtrans is called: MIDTRANS_API_URL points at a socket
    that accepts and reads but never answers, so Midtrans never hears of the charge;
    the process is killed once the request has left and the row is committed.
(b) after Midtrans answered, before the commit: the sandbox answers late (latency),
    the test locks the committed row meanwhile, so the process holds Midtrans' answer
    and waits on the row lock inside ``apply_view``; killed there.
(c) while Midtrans is still processing: the sandbox stalls the request (it processes
    it after the stall, whether or not anyone still listens); killed during the stall.

Afterwards reconcile (``--grace 0``: no charge is still on its way) brings every order
to Midtrans' state, and no order was charged twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.errors import MidpayError
from midpay.midtrans.gateway import Gateway
from midpay.payments import charge as charges
from midpay.payments import refresh

from ..conftest import SERVER_KEY
from ..helpers import abandoned_connections, payment_status, wait_until
from .conftest import Figures, Proc, process_env, rows, run, sandbox_states, spawn, total_faults


def _kill(proc: Proc) -> None:
    assert proc.popen.poll() is None, f"{proc} ended before it could be killed"
    os.kill(proc.popen.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


@contextmanager
def black_hole() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP address that accepts, reads the request, and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    received: list[bytes] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.settimeout(2)
            try:
                received.append(conn.recv(65536))
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", received
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def test_charge_killed_at_each_step_recovers_and_never_charges_twice(
    env: dict[str, str], db_url: str, sandbox: Any, tmp_path: Path, figures: Figures
) -> None:
    work = tmp_path / "work"
    penv = process_env(env, MIDPAY_TIMEOUT="30")
    kills: dict[str, str] = {}

    # (a) after the insert, before Midtrans is called.
    with black_hole() as (nowhere, received):
        proc = spawn(
            ["charge", "--amount", "11000", "--order-id", "crash-a", "--json"],
            process_env(env, MIDPAY_TIMEOUT="30", MIDTRANS_API_URL=nowhere), work, name="crash-a",
        )
        wait_until(lambda: any(b"POST /v2/charge" in r for r in received), 30, what="the charge request of crash-a")
        assert payment_status(db_url, "crash-a") == "created"
        _kill(proc)
    kills["crash-a"] = "after insert, before Midtrans"

    # (b) after Midtrans answered, before the commit.
    sandbox.set_faults(latency_ms=1500)
    proc = spawn(["charge", "--amount", "12000", "--order-id", "crash-b", "--json"], penv, work, name="crash-b")
    wait_until(lambda: payment_status(db_url, "crash-b") is not None, 30, what="the row of crash-b")
    with psycopg.connect(db_url) as locker:
        held = locker.execute(
            "SELECT status FROM payment_transactions WHERE order_id = 'crash-b' FOR UPDATE"
        ).fetchone()
        assert held == ("created",), "the answer was applied before the lock: raise the latency"

        def waiting_on_the_lock() -> bool:
            with psycopg.connect(db_url, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> %s",
                    (locker.info.backend_pid,),
                ).fetchone()
            return bool(row and row[0])

        wait_until(waiting_on_the_lock, 30, what="crash-b to wait on the row lock with Midtrans' answer")
        assert sandbox.stats()["charges"].get("crash-b") == 1
        _kill(proc)
        locker.rollback()
    sandbox.set_faults(latency_ms=0)
    kills["crash-b"] = "after Midtrans answered, before the commit"

    # (c) while Midtrans is still processing.
    sandbox.set_faults(stall_rate=1.0, stall_seconds=2)
    before = sandbox.stats()["by_endpoint"]["charge"]
    proc = spawn(["charge", "--amount", "13000", "--order-id", "crash-c", "--json"], penv, work, name="crash-c")
    wait_until(lambda: sandbox.stats()["by_endpoint"]["charge"] > before, 30, what="crash-c's charge to reach Midtrans")
    _kill(proc)
    sandbox.set_faults(stall_rate=0.0)  # the stalled request keeps its stall and is processed after it
    kills["crash-c"] = "while Midtrans was still processing"
    # Midtrans has not finished: within the grace period the row stays `created`, never
    # `failure` (what `midpay status crash-c` does, in-process so that it surely runs inside the stall).
    with (
        psycopg.connect(db_url) as conn,
        Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=5.0) as gateway,
    ):
        early = refresh.refresh(conn, gateway, "crash-c")
    assert sandbox.stats()["charges"].get("crash-c") is None, "the stall ended before the check: raise it"
    assert early.error is None and early.payment.status == "created", early
    wait_until(lambda: sandbox.stats()["charges"].get("crash-c") == 1, 10, what="the sandbox to process crash-c")

    for order_id in kills:
        assert payment_status(db_url, order_id) == "created"
    recovered = run(
        ["reconcile", "--min-age", "0", "--grace", "0", "--recheck-after", "0", "--json"], penv, work, name="reconcile"
    )
    again = run(["charge", "--amount", "12000", "--order-id", "crash-b"], penv, work, name="charge-again")
    charges = sandbox.stats()["charges"]
    truth = sandbox_states(sandbox)
    expected = {o: truth[o]["transaction_status"] if o in truth else "failure" for o in kills}
    final = rows(db_url)
    figures.orders = len(kills)
    figures.events = len(kills) + 1  # charge attempts, the refused repeat included
    figures.processes = len(kills) + 2
    figures.faults_injected = len(kills)
    figures.lost = sum(1 for o in kills if final[o]["status"] == "created")
    figures.wrongly_applied = sum(1 for o in kills if final[o]["status"] != expected[o]) + sum(
        1 for n in charges.values() if n > 1
    )
    figures.notes = {
        "kill_points": kills,
        "final": {o: final[o]["status"] for o in kills},
        "midtrans_charges": {o: charges.get(o, 0) for o in kills},
    }

    assert recovered.returncode == 0, recovered
    assert {r["order_id"]: r["status_after"] for r in recovered.json()["results"]} == expected
    assert expected == {"crash-a": "failure", "crash-b": "pending", "crash-c": "pending"}
    assert {o: final[o]["status"] for o in kills} == expected
    assert again.returncode == 2 and "already exists" in again.stderr, again
    assert all(charges.get(o, 0) <= 1 for o in kills), charges
    assert figures.wrongly_applied == 0 and figures.lost == 0


@pytest.mark.parametrize(
    "count",
    [pytest.param(30, id="quick"), pytest.param(300, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(600)])],
)
def test_charges_under_random_faults_end_in_midtrans_state(
    count: int, env: dict[str, str], db_url: str, sandbox: Any, tmp_path: Path, figures: Figures
) -> None:
    sandbox.set_faults(
        fail_rate=0.1, rate_limit_rate=0.05, stall_rate=0.05, malformed_rate=0.05, stall_seconds=1.5, seed=9
    )
    errors: Counter[str] = Counter()
    with (
        psycopg.connect(db_url) as conn,
        Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=1.0, backoff=0.01) as gateway,
    ):
        for i in range(count):
            try:
                charges.charge(conn, gateway, amount=20000 + i, order_id=f"fc-{i:04d}")
                errors["ok"] += 1
            except MidpayError as exc:
                errors[type(exc).__name__] += 1
    faults = total_faults(sandbox)
    stats = sandbox.stats()
    sandbox.set_faults(fail_rate=0, rate_limit_rate=0, stall_rate=0, malformed_rate=0)
    # A stalled charge is processed after midpay gave up on its answer: reconcile must start only once the
    # sandbox has handled every request given up on, or it would find such an order unknown at Midtrans.
    wait_until(lambda: abandoned_connections(sandbox.port) == 0, 15, what="the sandbox to finish its stalled charges")
    left_created = sum(1 for r in rows(db_url).values() if r["status"] == "created")
    recovered = run(
        ["reconcile", "--min-age", "0", "--grace", "0", "--recheck-after", "0", "--json"],
        process_env(env), tmp_path / "work",
    )
    truth = sandbox_states(sandbox)
    final = rows(db_url)
    charged = sandbox.stats()["charges"]
    wrong = [
        o for o, r in final.items()
        if r["status"] != (truth[o]["transaction_status"] if o in truth else "failure")
    ]
    figures.orders = count
    figures.events = stats["by_endpoint"]["charge"]
    figures.processes = 1
    figures.faults_injected = faults
    figures.lost = sum(1 for r in final.values() if r["status"] == "created")
    figures.wrongly_applied = len(wrong) + sum(1 for n in charged.values() if n > 1)
    figures.notes = {
        "charge_outcomes": dict(errors),
        "left_created_before_reconcile": left_created,
        "unknown_to_midtrans": sum(1 for o in final if o not in truth),
        "faults": stats["faults"],
    }

    assert recovered.returncode == 0, recovered
    assert json.loads(recovered.stdout)["summary"]["errors"] == 0
    assert left_created > 0, "some charges were left with an unknown outcome"
    assert wrong == []
    assert set(charged.values()) <= {1}
    assert figures.lost == 0
