"""Scenarios 1 and 2: notification replays racing reconcile runs, and overlapping cron runs.

Scenario 1 makes Midtrans and the notifications agree: every order gets ONE terminal
outcome (settlement, expire or cancel), the sandbox is moved there, and the valid
bodies of the order are its pending and outcome notifications, duplicated and
shuffled. Whatever the interleaving, the forward-only rule then admits exactly one
final state, the outcome, and ``paid_at`` is the sandbox's settlement_time iff it
is a settlement. Forged bodies claim a different outcome, so applying any of them
would show.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.midtrans.notifications import compute_signature, parse_time
from midpay.sandbox import NOTIFICATION_CODES

from ..helpers import wait_until
from .conftest import (
    Figures,
    Proc,
    charge_in_sandbox,
    insert_rows,
    process_env,
    rows,
    run,
    sandbox_states,
    spawn,
    total_faults,
)

OUTCOMES = ("settlement", "expire", "cancel")
# What a reconcile run may report as a row error while the sandbox injects faults.
FAULT_ERROR = re.compile(r"HTTP (500|503|429)|not Midtrans-shaped|could not process it now|no answer within")


@dataclass(frozen=True)
class Load:
    processes: int
    notifications: int
    orders: int
    reconcile_runs: int  # at least this many, the first ones overlapping the replays
    latency_ms: int  # per status call: sized so that a reconcile run lasts about as long as the replays
    timeout: float


QUICK = Load(processes=2, notifications=200, orders=20, reconcile_runs=2, latency_ms=100, timeout=120)
FULL = Load(processes=8, notifications=2000, orders=200, reconcile_runs=3, latency_ms=40, timeout=300)


@dataclass(frozen=True)
class Sent:
    """One line of a replay file: which order, which claimed status, forged or not."""

    order_id: str
    status: str
    forged: bool


def _forge(template: dict[str, Any], status: str, kind: int, rng: random.Random) -> dict[str, Any]:
    """A body claiming ``status`` whose signature cannot verify (three ways of getting it wrong)."""
    body = {**template, "transaction_status": status, "status_code": NOTIFICATION_CODES[status]}
    if status == "settlement":
        body["settlement_time"] = template["transaction_time"]
    if kind == 0:  # signed with another merchant's key
        body["signature_key"] = compute_signature(
            body["order_id"], body["status_code"], body["gross_amount"], "SB-Mid-server-not-ours"
        )
    elif kind == 1:  # noise
        body["signature_key"] = f"{rng.getrandbits(512):0128x}"
    else:  # the genuine pending signature, replayed over a changed status_code
        body["signature_key"] = template["signature_key"]
    return body


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(QUICK, id="quick"),
        pytest.param(FULL, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
def test_replays_race_reconcile_and_every_order_ends_in_its_outcome(
    load: Load,
    env: dict[str, str],
    db_url: str,
    sandbox: Any,
    gateway: Any,
    tmp_path: Path,
    figures: Figures,
) -> None:
    rng = random.Random(2026)
    orders = {f"load-{i:04d}": 1000 + 7 * i for i in range(load.orders)}
    # Rows still `created` (the charge answer not yet applied), known to Midtrans: the
    # pending notification can apply too, so out-of-order delivery matters.
    insert_rows(db_url, orders, status="created")
    charge_in_sandbox(gateway, orders)
    outcome = {o: rng.choice(OUTCOMES) for o in orders}
    pending_body = {o: sandbox.pay(o, "pending") for o in orders}
    final_body = {o: sandbox.pay(o, outcome[o]) for o in orders}
    settlement_time = {
        o: parse_time(final_body[o]["settlement_time"], "settlement_time") for o in orders if outcome[o] == "settlement"
    }

    bad_total = round(load.notifications * 0.05)
    valid_total = load.notifications - bad_total
    base, extra = divmod(valid_total, load.orders)
    stream: list[tuple[str, Sent]] = []
    for index, order_id in enumerate(orders):
        copies = base + (1 if index < extra else 0)
        finals = rng.randint(1, copies - 1)
        stream += [(json.dumps(pending_body[order_id]), Sent(order_id, "pending", False))] * (copies - finals)
        stream += [(json.dumps(final_body[order_id]), Sent(order_id, outcome[order_id], False))] * finals
    for kind in range(bad_total):
        order_id = rng.choice(list(orders))
        claim = rng.choice([s for s in OUTCOMES if s != outcome[order_id]])
        stream.append((json.dumps(_forge(pending_body[order_id], claim, kind % 3, rng)), Sent(order_id, claim, True)))
    rng.shuffle(stream)
    assert len(stream) == load.notifications

    work = tmp_path / "work"
    work.mkdir()
    chunks: list[tuple[Path, list[Sent]]] = []
    for k in range(load.processes):
        part = stream[k :: load.processes]
        path = work / f"deliveries-{k}.jsonl"
        path.write_text("".join(text + "\n" for text, _ in part))
        chunks.append((path, [sent for _, sent in part]))

    sandbox.reset_stats()
    sandbox.set_faults(fail_rate=0.1, rate_limit_rate=0.03, malformed_rate=0.02, latency_ms=load.latency_ms, seed=11)
    penv = process_env(env, MIDPAY_TIMEOUT="5")
    reconciles: list[Proc] = []
    loop_errors: list[BaseException] = []
    replays_done = threading.Event()

    def reconcile_loop() -> None:
        try:
            while len(reconciles) < load.reconcile_runs or not replays_done.is_set():
                reconciles.append(
                    run(
                        ["reconcile", "--min-age", "0", "--recheck-after", "0", "--concurrency", "2", "--json"],
                        penv, work, timeout=load.timeout, name=f"reconcile-{len(reconciles)}",
                    )
                )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            loop_errors.append(exc)

    looper = threading.Thread(target=reconcile_loop, name="reconcile-loop")
    looper.start()
    # The replays start once the first reconcile run is asking Midtrans: both are in flight.
    wait_until(
        lambda: sandbox.stats()["by_endpoint"]["status"] > 0 or not looper.is_alive(), 60,
        what="the first reconcile run to ask Midtrans",
    )
    replays = [
        spawn(["replay-webhook", str(path), "--json"], penv, work, name=f"replay-{k}")
        for k, (path, _) in enumerate(chunks)
    ]
    try:
        for proc in replays:
            proc.wait(load.timeout)
    finally:
        replays_done.set()
        looper.join(load.timeout * 2)
    assert not looper.is_alive(), "the reconcile loop did not finish"
    assert not loop_errors, loop_errors
    sandbox.set_faults(fail_rate=0, rate_limit_rate=0, malformed_rate=0, latency_ms=0)

    # --- what happened --------------------------------------------------------------
    final = rows(db_url)
    with psycopg.connect(db_url) as conn:
        events = conn.execute(
            "SELECT order_id, raw_body->>'transaction_status', is_verified, outcome FROM payment_webhook_events"
        ).fetchall()
    wrong_state = [o for o in orders if final[o]["status"] != outcome[o]]
    wrong_paid = [o for o in orders if final[o]["paid_at"] != settlement_time.get(o)]
    forged_applied = [e for e in events if not e[2] and e[3] != "rejected"]
    applied_twice = [key for key, n in Counter((e[0], e[1]) for e in events if e[3] == "applied").items() if n > 1]
    docs = [json.loads(p.stdout) if p.stdout.strip() else None for p in replays]
    rec_docs = [json.loads(p.stdout) if p.stdout.strip() else None for p in reconciles]
    figures.events = load.notifications
    figures.orders = load.orders
    figures.processes = len(replays) + len(reconciles)
    figures.faults_injected = total_faults(sandbox)
    figures.lost = load.notifications - len(events)
    figures.wrongly_applied = len(wrong_state) + len(wrong_paid) + len(forged_applied) + len(applied_twice)
    figures.notes = {
        "replay_processes": len(replays),
        "reconcile_runs": len(reconciles),
        "forged_bodies": bad_total,
        "rejected": sum(d["summary"]["rejected"] for d in docs if d),
        "applied_by_notifications": sum(d["summary"]["applied"] for d in docs if d),
        "unchanged": sum(d["summary"]["unchanged"] for d in docs if d),
        "reconcile_checked": sum(d["summary"]["checked"] for d in rec_docs if d),
        "reconcile_row_errors": sum(d["summary"]["errors"] for d in rec_docs if d),
        "reconcile_exit_codes": [p.returncode for p in reconciles],
        "status_requests": sandbox.stats()["by_endpoint"]["status"],
        "slowest_replay_s": round(max(p.elapsed or 0 for p in replays), 2),
        "outcomes": dict(Counter(outcome.values())),
    }

    # --- what must hold -------------------------------------------------------------
    for proc, (path, sent), doc in zip(replays, chunks, docs, strict=True):
        assert "Traceback" not in proc.stderr, proc
        assert proc.returncode == (1 if any(s.forged for s in sent) else 0), proc
        assert doc is not None and doc["summary"]["total"] == len(sent), proc
        for number, (result, s) in enumerate(zip(doc["results"], sent, strict=True), start=1):
            assert result["source"] == f"{path}:{number}"
            assert result["order_id"] == s.order_id
            if s.forged:
                assert (result["verified"], result["applied"]) == (False, False), result
                assert result["error"].startswith("signature mismatch"), result
            else:
                assert result["verified"] is True and result["error"] is None, result
                if result["applied"]:  # confirmed: Midtrans' state applies, whatever the body says
                    assert result["status_after"] == outcome[s.order_id], result
    assert figures.notes["rejected"] == bad_total
    for proc, doc in zip(reconciles, rec_docs, strict=True):
        assert "Traceback" not in proc.stderr, proc
        assert proc.returncode in (0, 1) and doc is not None, proc
        assert (proc.returncode == 1) == (doc["summary"]["errors"] > 0), proc
        for result in doc["results"]:
            if result["error"] is not None:
                assert FAULT_ERROR.search(result["error"]), result
                assert result["status_after"] == result["status_before"], result
            else:
                assert result["status_after"] == outcome[result["order_id"]], result
    assert figures.lost == 0
    assert sum(1 for e in events if e[3] == "rejected") == bad_total
    assert wrong_state == [] and wrong_paid == [] and forged_applied == [] and applied_twice == []
    assert figures.wrongly_applied == 0


@pytest.mark.parametrize(
    "count",
    [pytest.param(150, id="quick"), pytest.param(1000, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(600)])],
)
def test_overlapping_cron_runs_check_each_row_exactly_once(
    count: int,
    env: dict[str, str],
    db_url: str,
    sandbox: Any,
    gateway: Any,
    tmp_path: Path,
    figures: Figures,
) -> None:
    rng = random.Random(99)
    orders = {f"cron-{i:05d}": 2000 + i for i in range(count)}
    insert_rows(db_url, orders, status="pending")
    charge_in_sandbox(gateway, orders)
    for order_id in orders:
        draw = rng.random()
        if draw < 0.2:
            sandbox.pay(order_id, "settlement")
        elif draw < 0.3:
            sandbox.pay(order_id, "expire")
        elif draw < 0.35:
            sandbox.pay(order_id, "cancel")
    sandbox.reset_stats()
    # A little latency so that the three runs overlap for most of their work.
    sandbox.set_faults(latency_ms=10)
    penv = process_env(env)
    procs = [
        spawn(["reconcile", "--min-age", "0", "--json"], penv, tmp_path / "work", name=f"cron-{k}") for k in range(3)
    ]
    for proc in procs:
        proc.wait(300)
    sandbox.set_faults(latency_ms=0)

    docs = [json.loads(p.stdout) if p.stdout.strip() else None for p in procs]
    checks = sandbox.stats()["status_checks"]
    truth = sandbox_states(sandbox)
    final = rows(db_url)
    reported = Counter(r["order_id"] for d in docs if d for r in d["results"])
    wrong = [
        o for o in orders
        if final[o]["status"] != truth[o]["transaction_status"]
        or (final[o]["paid_at"] is not None) != (truth[o]["transaction_status"] == "settlement")
    ]
    figures.events = sum(checks.values())
    figures.orders = count
    figures.processes = len(procs)
    figures.lost = count - len(checks)
    figures.wrongly_applied = len(wrong) + sum(1 for n in checks.values() if n != 1)
    figures.notes = {
        "checked_per_run": [d["summary"]["checked"] if d else None for d in docs],
        "changed": sum(d["summary"]["changed"] for d in docs if d),
        "exit_codes": [p.returncode for p in procs],
        "checked_more_than_once": sum(1 for n in checks.values() if n > 1),
        "slowest_run_s": round(max(p.elapsed or 0 for p in procs), 2),
    }

    for proc, doc in zip(procs, docs, strict=True):
        assert proc.returncode == 0 and doc is not None, proc
        assert doc["summary"]["errors"] == 0, proc
    assert sum(d["summary"]["checked"] for d in docs if d) == count
    assert len(checks) == count and set(checks.values()) == {1}, Counter(checks.values())
    assert set(reported) == set(orders) and set(reported.values()) == {1}
    assert wrong == []


def test_recheck_after_zero_checks_each_row_once_and_ends(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp_path: Path, figures: Figures
) -> None:
    orders = {f"rc0-{i:04d}": 5000 + i for i in range(250)}  # two batches, all pending at Midtrans
    insert_rows(db_url, orders, status="pending")
    charge_in_sandbox(gateway, orders)
    sandbox.reset_stats()
    proc = spawn(["reconcile", "--min-age", "0", "--recheck-after", "0", "--json"], process_env(env), tmp_path / "w")
    try:
        # About one second of work. A row asked about twice means the run has started over: it is stopped.
        wait_until(
            lambda: proc.popen.poll() is not None or max(sandbox.stats()["status_checks"].values(), default=0) > 1,
            30, what="the run to end",
        )
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.wait(10)
        checks = sandbox.stats()["status_checks"]
        figures.orders = len(orders)
        figures.events = sum(checks.values())
        figures.processes = 1
        figures.wrongly_applied = sum(1 for n in checks.values() if n != 1)
        figures.notes = {"exit": proc.returncode, "max_checks_of_one_row": max(checks.values(), default=0)}
    assert proc.returncode == 0, proc
    assert proc.json()["summary"]["checked"] == 250
    assert set(checks.values()) == {1}
