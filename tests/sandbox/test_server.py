"""midpay.sandbox.server: SandboxServer's life (stop during a stall, a busy port) and bulk seeding."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from midpay.errors import UsageError
from midpay.sandbox import SandboxServer
from tests.helpers import wait_until
from tests.sandbox.conftest import Client


def test_stop_returns_promptly_during_a_stall() -> None:
    server = SandboxServer(stall_rate=1.0, stall_seconds=30).start()
    outcome: list[object] = []

    def stalled_call() -> None:
        try:
            with requests.get(f"{server.url}/v2/x/status", timeout=20) as response:
                outcome.append(response.status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stalled_call)
    thread.start()
    wait_until(lambda: server.stats()["faults"]["stall"] > 0, 5, what="the call to stall")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)
    server.stop()  # twice is harmless


def test_a_busy_port_is_a_usage_error(sandbox: SandboxServer) -> None:
    with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{sandbox.port}"):
        SandboxServer(port=sandbox.port).start()
    with pytest.raises(ValueError, match="fail_rate"):
        SandboxServer(fail_rate=1.5)


def test_seed_orders_at_once(sandbox: SandboxServer, client: Client) -> None:
    rows = sandbox.seed_orders(10, prefix="bulk-", amount=7000, settle_fraction=0.3)
    assert [r["order_id"] for r in rows] == [f"bulk-{i}" for i in range(10)]
    settled = [r["order_id"] for r in rows if r["transaction_status"] == "settlement"]
    assert settled == ["bulk-3", "bulk-6", "bulk-9"]  # spread evenly
    answer = client.get("/v2/bulk-3/status").json()
    assert (answer["transaction_status"], answer["gross_amount"], answer["transaction_id"]) == (
        "settlement", "7000.00", rows[3]["transaction_id"]
    )
    assert answer["settlement_time"] == rows[3]["settlement_time"]
    assert client.get("/v2/bulk-0/status").json()["transaction_status"] == "pending"
    assert sandbox.pay("bulk-0")["transaction_status"] == "settlement"  # a seeded order moves like any other
    stats = sandbox.stats()
    assert stats["seeded"] == 10 and stats["charges"] == {} and stats["notifications"]["emitted"] == 1

    over_http = client.post("/_sandbox/seed", {"order_ids": ["e-1", "e-2"], "amount": [100, 200]}).json()
    assert [(r["order_id"], r["gross_amount"]) for r in over_http["orders"]] == [("e-1", 100), ("e-2", 200)]
    taken = client.post("/_sandbox/seed", {"order_ids": ["e-3", "e-1"]})
    assert taken.status_code == 409 and sandbox.get_order("e-3") is None  # all or nothing
    for bad in ({}, {"count": 0}, {"count": 2, "amount": 0}, {"count": 2, "settle_fraction": 2},
                {"order_ids": ["a", "a"]}, {"count": 1, "payment_type": "ovo"}, {"count": 1, "speed": 9}):
        assert client.post("/_sandbox/seed", bad).status_code == 400, bad
    assert client.charge("e-1")["status_code"] == "406"  # seeded orders are real to the API
