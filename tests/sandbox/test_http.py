"""midpay.sandbox.http: the HTTP front.

Unknown orders, authentication, path decoding, added latency, many keep-alive connections.
"""

from __future__ import annotations

import threading
import time

import requests

from midpay.sandbox import SandboxServer
from tests.sandbox.conftest import Client


def test_unknown_and_unauthorized(sandbox: SandboxServer, client: Client) -> None:
    unknown = client.get("/v2/nope/status")
    assert unknown.status_code == 200
    assert unknown.json()["status_code"] == "404" and unknown.json()["status_message"] == "Transaction doesn't exist."
    for key in ("SB-Mid-server-wrong", ""):
        stranger = Client(sandbox, key=key or "x")
        answer = stranger.get("/v2/nope/status")
        stranger.close()
        assert answer.status_code == 401
        assert answer.json()["status_message"] == "Transaction cannot be authorized with the current client/server key."
    with requests.get(f"{sandbox.url}/v2/nope/status", timeout=5) as anonymous:
        assert anonymous.status_code == 401
    with requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5) as control:  # no auth needed
        assert control.status_code == 200


def test_path_ids_are_percent_decoded(client: Client) -> None:
    client.charge("a/b")
    assert client.get("/v2/a%2Fb/status").json()["order_id"] == "a/b"
    raw = client.get("/v2/a/b/status")  # unencoded: Midtrans' front answers a non-Midtrans 404
    assert raw.status_code == 404 and raw.json()["error"] == "Not Found" and "status_code" not in raw.json()


def test_latency_is_added(sandbox: SandboxServer, client: Client) -> None:
    sandbox.set_faults(latency_ms=150)
    started = time.monotonic()
    client.get("/v2/x/status")
    assert time.monotonic() - started >= 0.15


def test_many_concurrent_keep_alive_connections(sandbox: SandboxServer) -> None:
    Client(sandbox).charge("c")
    codes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        http = Client(sandbox)
        for _ in range(25):
            response = http.get("/v2/c/status")
            with lock:
                codes.append(response.status_code)
        http.close()

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert codes == [200] * 800
    assert sandbox.stats()["status_checks"] == {"c": 800}
