"""`midpay deliver` as real processes: woken by LISTEN, stopped by SIGTERM after its requests, and shared.

Each test runs ``python -m midpay deliver`` against its own database and waits on the
receiver's state (never a fixed sleep).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ..conftest import REPO
from ..helpers import wait_until
from .receivers.support import Receiver, add_endpoint, deliveries, in_order, new_secret, pay, receiver


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "midpay", "deliver", *args], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def running(env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Deliverers the test starts; any still running at the end is stopped."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _endpoint_receiver(db_url: str, events: tuple[str, ...]) -> Iterator[Receiver]:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        add_endpoint(db_url, r.url, secret, events=events)
        yield r


@pytest.fixture
def paid_receiver(db_url: str) -> Iterator[Receiver]:
    """A Python receiver behind an endpoint that takes `payment.paid` only (one event per paid order)."""
    yield from _endpoint_receiver(db_url, ("payment.paid",))


@pytest.fixture
def every_event_receiver(db_url: str) -> Iterator[Receiver]:
    """A Python receiver behind an endpoint that takes every event (three per paid order)."""
    yield from _endpoint_receiver(db_url, ("*",))


def _listening(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN midpay_outbox'"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.slow
def test_listen_wakes_a_running_deliverer_within_moments_of_the_commit(
    db_url: str, paid_receiver: Receiver, running: list[subprocess.Popen[str]]
) -> None:
    running.append(_start())
    wait_until(lambda: _listening(db_url), 15, what="the deliverer listening on midpay_outbox")
    latencies = []
    for n in range(7):
        committed = time.monotonic()
        pay(db_url, [f"ORD-L{n}"])
        wait_until(lambda n=n: len(paid_receiver.received()) == n + 1, 10, interval=0.002, what=f"event {n} arrived")
        latencies.append(time.monotonic() - committed)
    # Polling alone (once a second) would put the median near half a second.
    assert statistics.median(latencies) < 0.25, latencies
    running[0].send_signal(signal.SIGTERM)
    assert running[0].wait(timeout=15) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("once", "code"), [(False, 0), (True, 130)])
def test_sigterm_finishes_the_requests_in_flight(
    once: bool, code: int, db_url: str, paid_receiver: Receiver, running: list[subprocess.Popen[str]]
) -> None:
    """A service stopped is done (0); a --once run cut short did not send all that was due (130)."""
    r = paid_receiver
    r.control(mode="stall")
    proc = _start("--timeout", "30", *(["--once"] if once else []))
    running.append(proc)
    pay(db_url, ["ORD-T1", "ORD-T2"])
    wait_until(lambda: len(r.received()) == 2, 15, what="both requests held by the receiver")
    proc.send_signal(signal.SIGTERM)
    pay(db_url, ["ORD-T3"])  # committed after the stop: not sent by this process
    r.control(mode="answer", answer=204)
    assert proc.wait(timeout=30) == code
    _, err = proc.communicate(timeout=30)
    assert err == ("" if code == 0 else "Error: interrupted: stopped before everything due was sent (the requests in "
                   "flight were finished)\n")
    got = r.received()
    assert sorted(g["order"] for g in got) == ["ORD-T1", "ORD-T2"]
    states = {row["order_id"]: row["status"] for row in deliveries(db_url)}
    assert states == {"ORD-T1": "delivered", "ORD-T2": "delivered", "ORD-T3": "pending"}


@pytest.mark.slow
def test_two_processes_share_the_work_and_never_send_one_delivery_twice(
    db_url: str, every_event_receiver: Receiver, running: list[subprocess.Popen[str]]
) -> None:
    pay(db_url, [f"ORD-P{n:03d}" for n in range(60)])
    procs = [_start("--once", "--json", "--concurrency", "4") for _ in range(2)]
    running.extend(procs)
    outs: list[Any] = [p.communicate(timeout=120) for p in procs]
    got = every_event_receiver.received()
    assert [p.returncode for p in procs] == [0, 0], outs
    import json

    sent = [json.loads(out)["summary"]["delivered"] for out, _ in outs]
    assert sum(sent) == 180 and len(got) == 180
    assert len({g["id"] for g in got}) == 180  # every delivery exactly once
    assert in_order(got) and all(g["verified"] for g in got)
    assert {row["status"] for row in deliveries(db_url)} == {"delivered"}


@pytest.mark.slow
def test_killed_deliverers_lose_nothing_and_only_requests_in_flight_are_sent_twice(
    db_url: str, every_event_receiver: Receiver, running: list[subprocess.Popen[str]]
) -> None:
    r = every_event_receiver
    pay(db_url, [f"ORD-K{n:03d}" for n in range(100)])
    kills = 0
    for _ in range(3):
        proc = _start("--concurrency", "4", "--timeout", "1")
        running.append(proc)
        seen = len(r.received())
        wait_until(lambda seen=seen: len(r.received()) >= seen + 20, 30, what="some deliveries by this process")
        proc.kill()
        proc.wait(timeout=10)
        kills += 1
    running.append(_start("--concurrency", "4", "--timeout", "1"))
    wait_until(lambda: {d["status"] for d in deliveries(db_url)} == {"delivered"}, 90, interval=0.2,
               what="every delivery delivered after the kills")
    got = r.received()
    ids = [g["id"] for g in got]
    assert len(set(ids)) == 300 and all(g["verified"] for g in got)
    assert len(ids) - 300 <= kills * 4  # only what was in flight at a kill went twice
    assert in_order(got)
