"""midpay.sandbox.notify: the notifications the sandbox sends.

Signed as Midtrans signs them, written to a file each, POSTed and retried by Midtrans' table.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from midpay.midtrans.notifications import parse_notification, verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer, safe_file_stem
from tests.sandbox.conftest import Client, expected_signature


def test_pay_emits_a_notification_signed_with_the_formula(sandbox: SandboxServer, client: Client) -> None:
    assert sandbox.server_key == DEV_SERVER_KEY and sandbox.using_dev_key
    charged = client.charge("Order-5100", 154600)
    note = sandbox.pay("Order-5100")
    assert note["signature_key"] == expected_signature("Order-5100", "200", "154600.00", DEV_SERVER_KEY)
    assert verify_signature(note, DEV_SERVER_KEY)
    assert list(note) == [
        "transaction_time", "transaction_status", "transaction_id", "status_message", "status_code",
        "signature_key", "settlement_time", "payment_type", "order_id", "merchant_id", "gross_amount",
        "fraud_status", "currency",
    ]  # the field order of Midtrans' GoPay settlement sample
    assert note["transaction_id"] == charged["transaction_id"]
    assert (note["status_message"], note["currency"], note["fraud_status"]) == (
        "midtrans payment notification", "IDR", "accept"
    )
    view = parse_notification(note)
    assert view.transaction_status == "settlement" and view.settlement_time is not None


def test_qris_notification_fields(sandbox: SandboxServer, client: Client) -> None:
    client.charge("qris-01", 5539, "qris", qris={"acquirer": "gopay"})
    pending = sandbox.pay("qris-01", "pending")
    assert pending["status_code"] == "201" and pending["acquirer"] == "gopay" and "issuer" not in pending
    settled = sandbox.pay("qris-01", "settlement")
    assert (settled["transaction_type"], settled["issuer"], settled["acquirer"]) == ("on-us", "gopay", "gopay")
    assert settled["signature_key"] == expected_signature("qris-01", "200", "5539.00", DEV_SERVER_KEY)


def test_notifications_are_written_and_posted(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    notes = tmp_path / "notes"
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/midtrans"
        with SandboxServer(notify_url=url, notify_dir=notes) as server:
            http = Client(server)
            http.charge("a/b")
            http.charge("c-1")
            server.pay("a/b")
            assert http.post("/v2/c-1/cancel").json()["status_code"] == "200"  # Midtrans notifies this too
            http.close()
            assert server.wait_for_deliveries(timeout=10)  # an API answer never waits for its notification
            stats = server.stats()["notifications"]
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert [(n["order_id"], n["transaction_status"]) for n in received] == [("a/b", "settlement"), ("c-1", "cancel")]
    names = sorted(p.name for p in notes.iterdir())
    assert names == sorted([f"{safe_file_stem('a/b')}-settlement-1.json", "c-1-cancel-1.json"])
    assert json.loads((notes / f"{safe_file_stem('a/b')}-settlement-1.json").read_text()) == received[0]
    assert stats == {"emitted": 2, "written": 2, "posted": 2, "failed": 0, "attempts": 2, "retries": 0, "forgotten": 0}


class ScriptedReceiver:
    """A notification endpoint whose path says how it answers: /code/N, /flaky/K, /redirect, /slow."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.posts.append((self.path, self.headers.get("User-Agent", ""), body))
                    seen = sum(1 for path, _, _ in receiver.posts if path == self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                code, headers = 200, {}
                if parts[0] == "code":
                    code = int(parts[1])
                elif parts[0] == "flaky":
                    code = 503 if seen <= int(parts[1]) else 200
                elif parts[0] == "redirect":
                    code, headers = 307, {"Location": "/code/200?from=redirect"}
                elif parts[0] == "slow":
                    time.sleep(0.5)  # a slow receiver is the case under test (the sandbox times out at 0.2 s)
                if code in (301, 302, 303):
                    headers = {"Location": "/code/200"}
                try:
                    self.send_response(code)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"OK")
                except OSError:
                    pass  # the sandbox gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def paths(self, order_id: str) -> list[str]:
        with self.lock:
            return [path for path, _, body in self.posts if body["order_id"] == order_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    scripted = ScriptedReceiver()
    yield scripted
    scripted.close()


def test_deliveries_are_retried_by_midtrans_table(receiver: ScriptedReceiver) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}/nobody"
    targets = {
        "n-200": "/code/200", "n-500": "/code/500", "n-503": "/code/503", "n-400": "/code/400",
        "n-404": "/code/404", "n-301": "/code/301", "n-302": "/code/302", "n-303": "/code/303",
        "n-418": "/code/418", "n-slow": "/slow", "n-flaky": "/flaky/2", "n-307": "/redirect", "n-refused": None,
    }
    expected_attempts = {
        "n-200": 1, "n-500": 2, "n-503": 5, "n-400": 3, "n-404": 3, "n-301": 1, "n-302": 1, "n-303": 1,
        "n-418": 6, "n-slow": 6, "n-flaky": 3, "n-307": 1, "n-refused": 6,
    }
    scale = 0.0001
    with SandboxServer(notify_url=receiver.url + "/code/200", notify_retry_scale=scale, notify_timeout=0.2) as server:
        http = Client(server)
        for order_id, path in targets.items():
            url = refused if path is None else receiver.url + path
            http.charge(order_id, headers={"X-Override-Notification": url})
            server.pay(order_id)
        assert server.wait_for_deliveries(timeout=60)
        http.close()
        records = server.deliveries()
        notes = server.stats()["notifications"]

    def attempts(order_id: str) -> list[dict[str, Any]]:
        return [r for r in records if r["order_id"] == order_id and r["hop"] == 0]

    assert {o: len(attempts(o)) for o in targets} == expected_attempts
    assert [r["http_status"] for r in attempts("n-flaky")] == [503, 503, 200]
    waits = [r["next_retry_in"] for r in attempts("n-503")]
    assert waits[:4] == pytest.approx([120 * scale, 600 * scale, 1800 * scale, 5400 * scale]) and waits[4] is None
    assert [r["next_retry_in"] for r in attempts("n-418")][4] == pytest.approx(12600 * scale)
    assert {r["error"] for r in attempts("n-slow")} == {"timeout"}
    assert all(r["http_status"] is None and r["error"] for r in attempts("n-refused"))
    hops = [(r["hop"], r["http_status"]) for r in records if r["order_id"] == "n-307"]
    assert hops == [(0, 307), (1, 200)]  # 307 followed within the attempt
    assert receiver.paths("n-307") == ["/redirect", "/code/200?from=redirect"]
    posts = [(agent, body) for path, agent, body in receiver.posts if body["order_id"] == "n-307"]
    assert posts[0] == posts[1] and posts[0][0] == "Veritrans"  # the same body, POSTed again
    assert receiver.paths("n-302") == ["/code/302"]  # 301/302/303 not followed
    assert (notes["posted"], notes["failed"]) == (3, 10)  # 200, flaky and 307 delivered
    assert notes["retries"] == sum(expected_attempts.values()) - len(targets)


def test_pay_returns_once_the_first_delivery_is_answered(receiver: ScriptedReceiver) -> None:
    with SandboxServer(notify_url=receiver.url + "/code/200") as server:
        http = Client(server)
        http.charge("p-1")
        note = server.pay("p-1")
        assert receiver.paths("p-1") == ["/code/200"]  # no waiting needed
        assert receiver.posts[0][2] == note
        http.charge("p-2", headers={"X-Append-Notification": f"{receiver.url}/code/201, ftp://ignored, "})
        server.pay("p-2")
        assert sorted(receiver.paths("p-2")) == ["/code/200", "/code/201"]  # the default and the appended one
        overrides = ",".join(f"{receiver.url}/code/20{i}" for i in range(5))
        http.charge("p-3", headers={"X-Override-Notification": overrides})
        server.pay("p-3")
        assert sorted(receiver.paths("p-3")) == ["/code/200", "/code/201", "/code/202"]  # at most 3, no default
        http.close()
