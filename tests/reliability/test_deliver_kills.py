"""`midpay deliver` SIGKILLed every 2 s for 30 s against a receiver that fails, stalls and answers at random.

5,000 events over 500 orders, written by the outbox trigger itself: each order's row is
inserted ``created`` (no event) and moved by nine SQL UPDATEs (one statement per step over
all 500 rows, the way the older backend writes the table) through nine statuses, the one
that sets ``paid_at`` (capture) making two events (its own and ``payment.paid``): ten
events per order. The walk visits every event type rather than one lifecycle Midtrans
would produce: the deliverer reads neither the order of statuses nor their meaning, only
the events.

One endpoint, the Python receiver in its seeded ``random`` mode (verifying every request
with PyPI's ``standardwebhooks``): 30 % of the requests get 500, 5 % no answer at all (the
socket is held 3 s, past deliver's ``--timeout 1``, then closed), the rest 204.
``midpay deliver --retry-base 0.05 --timeout 1 --concurrency 8`` is killed with SIGKILL
every 2 s for 30 s and started again at once; the last one is left to finish, then
stopped with SIGTERM. Checked: every event delivered (a 2xx answered by the receiver and
``delivered`` in the table), no order's ``sequence`` ever goes backwards at the receiver,
and the events answered 2xx more than once (requests in flight at a kill: the killed
process never recorded them, so their lease expires and they are sent again) are counted
and at most kills × concurrency.

Full numbers, not scaled down: the whole test took 102 s and 109 s on the 2 shared cores
(figures in docs/RELIABILITY.md). Rerun:
``MIDPAY_RELIABILITY_REPORT=/tmp/rel python -m pytest tests/reliability/test_deliver_kills.py -p no:cacheprovider``
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..helpers import wait_until
from ..outbox.receivers.python_receiver import Chaos, PythonReceiver
from ..outbox.receivers.support import add_endpoint, in_order, new_secret
from .conftest import Figures, Proc, count, process_env, spawn

ORDERS = 500
# Nine status changes per order; "capture" also sets paid_at, so payment.paid too: ten events per order.
STEPS = ("pending", "deny", "cancel", "expire", "failure", "capture", "settlement", "partial_refund", "refund")
EVENTS_PER_ORDER = len(STEPS) + 1
EVENTS = ORDERS * EVENTS_PER_ORDER
CONCURRENCY = 8
KILL_EVERY = 2.0
KILL_FOR = 30.0
DELIVER = ("deliver", "--retry-base", "0.05", "--timeout", "1", "--concurrency", str(CONCURRENCY))


def _write_events(url: str) -> None:
    """500 orders, each inserted ``created`` (no event) and moved through STEPS: the trigger writes 5,000 events."""
    orders = [f"ORD-KILL-{n:04d}" for n in range(ORDERS)]
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status)"
                " VALUES (%s, 25000, 'gopay', 'created')",
                [(o,) for o in orders],
            )
        for status in STEPS:
            conn.execute(
                "UPDATE payment_transactions SET status = %s,"
                " paid_at = CASE WHEN %s = 'capture' THEN now() ELSE paid_at END"
                " WHERE order_id = ANY(%s)",
                (status, status, orders),
            )


def _undelivered(url: str) -> int:
    return count(url, "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")


def _kill(proc: Proc) -> bool:
    """SIGKILL; whether the process was still running (not ended on its own, which would be a failure)."""
    running = proc.popen.poll() is None
    if running:
        os.kill(proc.popen.pid, signal.SIGKILL)
    proc.wait(10)
    return running


def _run_with_kills(env: dict[str, str], workdir: Path) -> tuple[int, list[Proc]]:
    """Start deliver, kill it every KILL_EVERY s for KILL_FOR s, starting a new one after each kill."""
    procs = [spawn(DELIVER, env, workdir, name="deliver-0")]
    kills = 0
    started = time.monotonic()
    while time.monotonic() - started < KILL_FOR:
        # The scenario's own clock (a kill every 2 s), not a wait for a state.
        time.sleep(max(0.0, started + (kills + 1) * KILL_EVERY - time.monotonic()))
        assert _kill(procs[-1]), f"deliver ended before it was killed: {procs[-1]}"
        kills += 1
        procs.append(spawn(DELIVER, env, workdir, name=f"deliver-{kills}"))
    return kills, procs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deliver_killed_every_2s_loses_nothing_keeps_order_and_repeats_only_what_was_in_flight(
    db_url: str, env: dict[str, str], tmp_path: Path, figures: Figures
) -> None:
    secret = new_secret()
    with PythonReceiver([secret]) as r:
        add_endpoint(db_url, r.url, secret)
        _write_events(db_url)
        assert count(db_url, "SELECT count(*) FROM webhook_deliveries") == EVENTS
        r.randomly(Chaos(seed=21, fail=0.30, silent=0.05, hold=3.0))
        started = time.monotonic()
        kills, procs = _run_with_kills(process_env(env), tmp_path / "deliver")
        last = procs[-1]
        wait_until(lambda: _undelivered(db_url) == 0, 240, interval=0.5, what="every delivery delivered")
        finished = time.monotonic() - started
        last.popen.send_signal(signal.SIGTERM)
        assert last.wait(30) == 0, last
        got = r.received()
    _check(db_url, got, kills, last, figures, finished)


def _check(url: str, got: list[dict[str, Any]], kills: int, last: Proc, figures: Figures, finished: float) -> None:
    whole = [g for g in got if g["complete"]]
    assert all(g["verified"] for g in whole)  # every request that arrived whole was signed right
    ok = Counter(g["id"] for g in whole if g["answer"] is not None and 200 <= g["answer"] < 300)
    with psycopg.connect(url) as conn:
        events = {row[0] for row in conn.execute("SELECT id FROM payment_events").fetchall()}
        statuses = Counter(row[0] for row in conn.execute("SELECT status FROM webhook_deliveries").fetchall())
        recorded = Counter(row[0] for row in conn.execute("SELECT event_id FROM webhook_attempts").fetchall())
    assert set(ok) == events and len(events) == EVENTS  # each event answered 2xx by the receiver at least once
    assert statuses == {"delivered": EVENTS}
    assert in_order(whole)  # no order's sequence goes backwards, whatever was answered
    duplicates = sum(n - 1 for n in ok.values())
    assert duplicates <= kills * CONCURRENCY, (duplicates, kills)
    # Requests that reached the receiver but whose attempt no process kept: those of the killed processes.
    sent = Counter(g["id"] for g in got)
    unrecorded = sum(max(0, n - recorded[event]) for event, n in sent.items())
    assert unrecorded <= kills * CONCURRENCY, (unrecorded, kills)
    assert "Traceback" not in last.stderr, last
    answers = Counter("none" if g["answer"] is None else str(g["answer"]) for g in got)
    figures.events, figures.orders, figures.processes = EVENTS, ORDERS, kills + 1
    figures.faults_injected = kills + answers["500"] + answers["none"]
    figures.lost, figures.wrongly_applied = EVENTS - len(ok), 0
    figures.notes = {
        "kills": kills, "concurrency": CONCURRENCY, "duplicates": duplicates, "duplicate_bound": kills * CONCURRENCY,
        "requests_unrecorded": unrecorded, "attempts_recorded": sum(recorded.values()),
        "requests": len(got), "cut_short": len(got) - len(whole), "answers": dict(answers),
        "seconds_to_all_delivered": round(finished, 1),
    }
    print(f"deliver kills: {figures.notes}")
