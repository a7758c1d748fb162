"""PostgreSQL stopped under `midpay listen` mid-stream: nothing is lost.

This test runs its own PostgreSQL server (not the session's shared one) so that it
can stop and start it. A sender like Midtrans sends each body until it is answered
2xx. Every 2xx must stand for a committed body; everything else must be an answer
that makes Midtrans resend (503) or no answer at all.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from midpay import embedded
from midpay.db import migrate
from midpay.payments import charge as charges
from tests.conftest import SERVER_KEY
from tests.helpers import payment_row, wait_until
from tests.listen_process import start_process
from tests.web.test_listen import events, listen_env
from tests.web.test_listen_load import send


class OwnPostgres:
    """A PostgreSQL server of this test alone (midpay's embedded one), which it stops and starts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = embedded.url(embedded.start(home), "postgres")

    def stop(self) -> None:
        embedded.stop(self.home)  # fast shutdown: sessions in flight are cut

    def start(self) -> None:
        assert embedded.url(embedded.start(self.home), "postgres") == self.url  # same socket, same URL

    def close(self) -> None:
        embedded.stop(self.home)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    root = Path(tempfile.mkdtemp(prefix="midpay-outage-pg-"))
    root.chmod(0o711)  # as root the server runs as nobody, who must pass through
    server = OwnPostgres(root)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_stopped_mid_stream_loses_no_notification(
    own_postgres: OwnPostgres, env: dict[str, str], tmp_path: Path, gateway: Any, sandbox: Any
) -> None:
    url = own_postgres.url
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
        orders = [charges.charge(conn, gateway, amount=40000 + i).payment.order_id for i in range(24)]
    bodies = [sandbox.pay(order_id, "settlement") for order_id in orders]

    server = start_process(listen_env(env, DATABASE_URL=url), tmp_path / "listen.log", cwd=tmp_path)
    answers: list[tuple[str, int | str]] = []
    lock = threading.Lock()

    def midtrans() -> None:
        """Send each body until it is answered 2xx (Midtrans' retries, compressed)."""
        for body in bodies:
            for _ in range(300):  # bounded
                outcome = send(server.url, body)
                with lock:
                    answers.append((body["order_id"], outcome))
                if outcome == 200:
                    break
                time.sleep(0.2)  # the sender's own pause between retries (Midtrans', compressed), not a wait

    def answered() -> list[int | str]:
        with lock:
            return [outcome for _, outcome in answers]

    sender = threading.Thread(target=midtrans)
    sender.start()
    try:
        wait_until(lambda: len(answered()) >= 6, 120)
        own_postgres.stop()
        down = requests.get(server.health_url, timeout=30)
        wait_until(lambda: any(outcome != 200 for outcome in answered()), 120)
        own_postgres.start()
        sender.join(120)
        up = requests.get(server.health_url, timeout=30)
    finally:
        sender.join(120)
        assert server.stop() == 0

    assert (down.status_code, down.json()["status"]) == (503, "unavailable")
    assert down.json()["database"].startswith("PostgreSQL connection failed")
    assert (up.status_code, up.json()) == (200, {"status": "ok", "database": "ok", "migrations": "ok"})

    outcomes = [outcome for _, outcome in answers]
    assert 503 in outcomes
    assert set(outcomes) <= {200, 503, "ConnectionError"}
    stored: dict[str, int] = {}
    for event in events(url):
        stored[event["order_id"]] = stored.get(event["order_id"], 0) + 1
    for order_id, outcome in answers:
        if outcome == 200:
            assert stored.get(order_id, 0) >= 1, order_id  # a 2xx stands for a committed body
    assert {order_id for order_id, outcome in answers if outcome == 200} == set(orders)
    assert {payment_row(url, order_id)["status"] for order_id in orders} == {"settlement"}
    not_json = [line for line in server.log_lines() if "unparsed" in line]
    assert not_json == []
    failures = [line for line in server.log_lines() if line.get("method") == "POST" and line["status"] == 503]
    assert failures
    assert all(line["outcome"] == "error" and line["error"].startswith("PostgreSQL") for line in failures)
    assert SERVER_KEY not in server.log_path.read_text()


def test_the_sandbox_resends_a_503_until_listen_stores_it(
    own_postgres: OwnPostgres, env: dict[str, str], tmp_path: Path
) -> None:
    """Midtrans' own retries (the sandbox's, compressed) carry a notification across an outage."""
    from midpay.midtrans.gateway import Gateway
    from tests.listen_process import free_port
    from tests.web.test_listen import sandbox_process

    url = own_postgres.url
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    port = free_port()
    notify_url = f"http://127.0.0.1:{port}/midtrans/notification"
    # 503 is retried four times, the first after 2 min: 2.4 s here.
    with sandbox_process(env, tmp_path, "--notify-url", notify_url, "--notify-retry-scale", "0.02") as api_url:
        with Gateway(base_url=api_url, server_key=SERVER_KEY, timeout=5.0) as gw, psycopg.connect(url) as conn:
            order_id = charges.charge(conn, gw, amount=77000).payment.order_id
        server = start_process(
            listen_env(env, DATABASE_URL=url, MIDTRANS_API_URL=api_url), tmp_path / "listen.log", port=port
        )
        try:
            own_postgres.stop()
            requests.post(f"{api_url}/_sandbox/pay/{order_id}", json={"status": "settlement"}, timeout=30)
            wait_until(lambda: any(line.get("status") == 503 for line in server.log_lines()), 120)
            own_postgres.start()
            wait_until(lambda: any(line.get("status") == 200 for line in server.log_lines()), 120)
        finally:
            assert server.stop() == 0
    posts = [(line["status"], line["outcome"]) for line in server.log_lines() if line.get("method") == "POST"]
    assert posts[0] == (503, "error")
    assert posts[-1] == (200, "applied")
    assert payment_row(url, order_id)["status"] == "settlement"
    assert [e["outcome"] for e in events(url)] == ["applied"]  # the failed attempts stored nothing
