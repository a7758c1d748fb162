"""A change and its event: kill the process anywhere, never one without the other (issue 21).

The event is written by a trigger in the statement that makes the change, so there is no
point between them where a process can die; these tests check it on real ``python -m
midpay`` processes. ``refund`` is killed with SIGKILL at each of its crash points
(``midpay.testing.crashpoints``), and paused inside the transaction that changes the
payment (its status written, its event written, nothing committed) to be looked at from
outside and then killed there. After every step, each payment's events are compared
with its row, and with what the row was before the step.
"""

from __future__ import annotations

import itertools
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import wait_until
from tests.refund_support import dashboard_refund
from tests.reliability.conftest import run, spawn
from tests.reliability.test_refund_crash import POINTS, crash_env, finish, refund_args, settle


@dataclass(frozen=True)
class State:
    """One payment's row (status, paid) and its events (type, previous_status, status, paid), in sequence."""

    status: str
    paid: bool
    events: tuple[tuple[str, str | None, str, bool], ...]


def states(url: str) -> dict[str, State]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT order_id, lower(btrim(status)), paid_at IS NOT NULL FROM payment_transactions")
        found = {order_id: State(status, paid, ()) for order_id, status, paid in rows.fetchall()}
        seen: dict[str, list[int]] = {}
        for order_id, sequence, *event in conn.execute(
            "SELECT order_id, sequence, type, previous_status, status, paid FROM payment_events "
            "ORDER BY order_id, sequence"
        ).fetchall():
            assert order_id in found, f"an event without its payment: {order_id}"
            seen.setdefault(order_id, []).append(sequence)
            state = found[order_id]
            found[order_id] = State(state.status, state.paid, (*state.events, tuple(event)))
    for order_id, sequences in seen.items():
        assert sequences == list(range(1, len(sequences) + 1)), (order_id, sequences)
    return found


def assert_events_match_rows(now: dict[str, State]) -> None:
    """Every row's status and paid_at are the ones its events last said; no event says more."""
    for order_id, state in now.items():
        moves = [e for e in state.events if e[0] != "payment.paid"]
        assert (moves[-1][2] if moves else "created") == state.status, (order_id, state)
        assert [e[0] for e in state.events].count("payment.paid") == int(state.paid), (order_id, state)
        for before, after in itertools.pairwise(moves):
            assert after[1] == before[2], (order_id, state)


def assert_step(before: dict[str, State], after: dict[str, State]) -> None:
    """What a step changed in the rows is exactly what its new events say, one event per change."""
    assert_events_match_rows(after)
    for order_id, old in before.items():
        new = after[order_id]
        assert new.events[: len(old.events)] == old.events, f"an event of {order_id} changed or vanished"
        added = new.events[len(old.events):]
        expected = []
        if new.status != old.status:
            expected.append(f"payment.{new.status}")
        if new.paid and not old.paid:
            expected.append("payment.paid")
        # One step moves a payment at most once (refund: settlement -> partial_refund).
        assert [e[0] for e in added] == expected, (order_id, old, new)
        if added:
            assert added[0][1] == old.status, (order_id, added)


pytestmark = pytest.mark.slow


def test_refund_killed_at_each_crash_point(
    env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    orders = {f"evk-{i}": 100000 + i for i in range(len(POINTS))}
    settle(db_url, gateway, sandbox, orders)
    work = tmp_path / "work"
    before = states(db_url)
    assert_events_match_rows(before)
    assert {s.events[-1][0] for s in before.values()} == {"payment.paid"}
    for order_id, point in zip(orders, POINTS, strict=True):
        args = refund_args(order_id, 40000, "killed")
        killed = run(args, crash_env(env, point), work, name=f"{order_id}-killed")
        assert killed.returncode == -signal.SIGKILL, killed
        after = states(db_url)
        assert_step(before, after)
        changed = after[order_id].status != before[order_id].status
        assert changed is (point == "refund.committed"), (point, after[order_id])
        finish(env, work, args)
        before, after = after, states(db_url)
        assert_step(before, after)
        assert after[order_id].status == "partial_refund"
        assert [e[0] for e in after[order_id].events][-1] == "payment.partial_refund"
        before = after


@pytest.mark.parametrize("point", ["refund.outcome_written", "refund.before_row"])
def test_paused_inside_the_transaction_then_killed(
    point: str, env: dict[str, str], db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    """Status and event are both written and neither is visible; killed there, neither remains."""
    settle(db_url, gateway, sandbox, {"evp-1": 90000})
    if point == "refund.before_row":
        dashboard_refund(sandbox, "evp-1", 10000)  # Midtrans' figures move the row inside refund's lock
    work, folder = tmp_path / "work", tmp_path / "points"
    folder.mkdir()
    before = states(db_url)
    args = refund_args("evp-1", 30000, "paused")
    proc = spawn(args, crash_env(env, point, folder, pause=True), work, name="paused")
    reached = folder / f"{point}.reached"
    wait_until(lambda: reached.exists() or proc.popen.poll() is not None, 60, what=f"refund to reach {point}")
    assert reached.exists(), proc
    backend = json.loads(reached.read_text())["backend_pid"]
    with psycopg.connect(db_url, autocommit=True) as admin:
        written = admin.execute(  # the paused transaction has changed the row (and so written its event)
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND relation = 'payment_events'::regclass "
            "AND mode = 'RowExclusiveLock'",
            (backend,),
        ).fetchone()
    assert written == (1,), "the paused transaction has written its event"
    assert states(db_url) == before, "nothing of it is visible before the commit"
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert states(db_url) == before, "killed before the commit: neither the change nor its event"
    finish(env, work, args)
    after = states(db_url)
    assert_step(before, after)
    assert after["evp-1"].status == "partial_refund"
