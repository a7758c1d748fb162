"""`midpay listen` holds a small fixed number of PostgreSQL connections per worker, whatever its threads.

A request needs a connection to store, screen and apply its body, not while it waits on
Midtrans' Get Status. Here every Get Status takes 300 ms and 32 requests are in flight
on 2 workers of 16 threads: a receiver that kept its connection across the call would
hold up to 32 at once. pg_stat_activity is sampled throughout.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from midpay.web.app import DB_CONNECTIONS
from tests.helpers import payment_row
from tests.listen_process import start_process
from tests.pg_activity import PeakConnections
from tests.web.test_listen import charged, listen_env

WORKERS = 2
THREADS = 16
SENDERS = 32


def test_workers_hold_at_most_their_fixed_pool_while_requests_wait_on_midtrans(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    orders = [charged(cli, 30000 + i) for i in range(SENDERS)]
    bodies = [json.dumps(sandbox.pay(order_id, "settlement")).encode() for order_id in orders]
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 300}, timeout=10).raise_for_status()
    server = start_process(
        listen_env(env, MIDPAY_TIMEOUT="10"), tmp_path / "listen.log", "--workers", str(WORKERS),
        "--threads", str(THREADS), cwd=tmp_path,
    )
    try:
        with PeakConnections(db_url) as sampler, ThreadPoolExecutor(max_workers=SENDERS) as senders:
            answers = list(senders.map(
                lambda body: requests.post(server.url, data=body, headers={"Content-Type": "application/json"},
                                           timeout=60).status_code,
                bodies,
            ))
    finally:
        assert server.stop() == 0, server.log_path.read_text()[-3000:]
    assert answers == [200] * SENDERS
    assert all(payment_row(db_url, order_id)["status"] == "settlement" for order_id in orders)
    assert sampler.samples > 10 and sampler.peak >= 1
    assert sampler.peak <= WORKERS * DB_CONNECTIONS, f"{sampler.peak} connections for {WORKERS} workers"
