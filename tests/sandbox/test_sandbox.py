"""The local Midtrans-compatible sandbox, spoken to over raw HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from midpay.errors import GatewayProtocolError, GatewayUnavailable, MidtransRejected, NotFoundError, UsageError
from midpay.midtrans.notifications import parse_notification, parse_view, verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer, pay_remote, qris_payload, safe_file_stem

ROOT = Path(__file__).resolve().parents[2]


def expected_signature(order_id: str, status_code: str, gross_amount: str, key: str) -> str:
    """Midtrans' formula, written out again here on purpose (not midpay's helper)."""
    return hashlib.sha512((order_id + status_code + gross_amount + key).encode("utf-8")).hexdigest()


class Client:
    """Raw HTTP to a sandbox: the exact status codes and bodies, no retries, no mapping."""

    def __init__(self, server: SandboxServer, key: str | None = None) -> None:
        self.url = server.url
        self.session = requests.Session()
        token = base64.b64encode(f"{key or server.server_key}:".encode()).decode()
        self.session.headers.update({"Authorization": f"Basic {token}", "Accept": "application/json"})

    def post(self, path: str, body: object = None, **kwargs: Any) -> requests.Response:
        data = kwargs.pop("data", None if body is None else json.dumps(body))
        return self.session.post(self.url + path, data=data, timeout=5, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=5, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url + path, timeout=5)

    def charge(
        self,
        order_id: str,
        amount: object = 44000,
        payment_type: str = "gopay",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Any:
        body = {"payment_type": payment_type, "transaction_details": {"order_id": order_id, "gross_amount": amount}}
        return self.post("/v2/charge", {**body, **extra}, headers=headers).json()

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[Client]:
    http = Client(sandbox)
    yield http
    http.close()


# --- notifications --------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("status", "note_code", "answer_code"),
    [("settlement", "200", "200"), ("expire", "202", "407"), ("cancel", "202", "200"), ("deny", "202", "202")],
)
def test_status_codes_per_status(
    sandbox: SandboxServer, client: Client, status: str, note_code: str, answer_code: str
) -> None:
    client.charge("o-1", 275000)
    note = sandbox.pay("o-1", status)
    assert (note["transaction_status"], note["status_code"]) == (status, note_code)
    assert note["signature_key"] == expected_signature("o-1", note_code, "275000.00", DEV_SERVER_KEY)
    answer = client.get("/v2/o-1/status").json()
    assert (answer["transaction_status"], answer["status_code"]) == (status, answer_code)
    assert answer["signature_key"] == expected_signature("o-1", answer_code, "275000.00", DEV_SERVER_KEY)
    assert parse_view(answer).transaction_status == status


def test_pending_answer_code_and_repeat_notifications(sandbox: SandboxServer, client: Client) -> None:
    client.charge("o-2")
    assert client.get("/v2/o-2/status").json()["status_code"] == "201"
    assert sandbox.pay("o-2", "pending")["status_code"] == "201"
    first = sandbox.pay("o-2", "settlement")
    assert sandbox.pay("o-2", "settlement") == first  # a duplicate delivery, as Midtrans may send
    for status in ("expire", "pending", "cancel"):
        with pytest.raises(MidtransRejected, match="cannot move it") as caught:
            sandbox.pay("o-2", status)
        assert caught.value.status_code == "412"
    with pytest.raises(NotFoundError):
        sandbox.pay("nobody")
    with pytest.raises(UsageError):
        sandbox.pay("o-2", "refund")


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


def test_safe_file_stems_stay_apart() -> None:
    assert safe_file_stem("order-1") == "order-1"
    assert safe_file_stem("a/b") != safe_file_stem("a_b")
    assert "/" not in safe_file_stem("../../etc/passwd") and not safe_file_stem("../x").startswith(".")


# --- the API --------------------------------------------------------------------------------


def test_charge_validation(client: Client) -> None:
    for amount in (0, -1, 100.5, "abc", None, True):
        answer = client.charge("v-1", amount)
        assert answer["status_code"] == "400", amount
        assert any("gross_amount" in m for m in answer["validation_messages"])
    assert client.charge("v-1", 44000, "credit_card")["status_code"] == "402"
    assert client.charge("v-1", 44000, "qris", qris={"acquirer": "airpay shopee"})["status_code"] == "402"
    assert client.charge("x" * 51)["status_code"] == "400"
    bad_json = client.post("/v2/charge", data="{not json")
    assert (bad_json.status_code, bad_json.json()["status_code"]) == (200, "413")
    week = client.charge("v-1", custom_expiry={"expiry_duration": 1, "unit": "week"})
    assert week["status_code"] == "400"
    hours = client.charge("v-1", custom_expiry={"expiry_duration": 2, "unit": "hour"})
    view = parse_view(hours)
    assert view.expiry_time is not None and view.transaction_time is not None
    assert view.expiry_time - view.transaction_time == timedelta(hours=2)


def test_charge_is_http_200_with_body_201_and_duplicates_406(client: Client) -> None:
    body = {"payment_type": "gopay", "transaction_details": {"order_id": "d", "gross_amount": 1}}
    first = client.post("/v2/charge", body)
    assert (first.status_code, first.json()["status_code"]) == (200, "201")
    assert first.headers["Content-Length"] == str(len(first.content))
    again = client.charge("d")
    assert again["status_code"] == "406" and "id" in again


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


def test_cancel_expire_refund_answers(sandbox: SandboxServer, client: Client) -> None:
    client.charge("k-1", 30000)
    cancelled = client.post("/v2/k-1/cancel").json()
    assert (cancelled["status_code"], cancelled["status_message"]) == ("200", "Success, transaction is canceled")
    assert client.post("/v2/k-1/expire").json() == {
        "status_code": "412",
        "status_message": "Merchant cannot modify the status of the transaction",
    }
    client.charge("k-2", 30000)
    expired = client.post("/v2/k-2/expire").json()
    assert (expired["status_code"], expired["transaction_status"]) == ("407", "expire")
    client.charge("k-3", 30000)
    assert client.post("/v2/k-3/refund", {"refund_key": "a"}).json()["status_code"] == "412"
    sandbox.pay("k-3")
    assert client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 30001}).json()["status_code"] == "414"
    assert client.post("/v2/k-3/refund", {"refund_key": "bad key"}).json()["status_code"] == "400"
    partial = client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 5000, "reason": "why"}).json()
    assert (partial["transaction_status"], partial["refund_amount"], partial["refund_key"]) == (
        "partial_refund", "5000.00", "a"
    )
    assert client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 25000}).json() == partial
    full = client.post("/v2/k-3/refund", {}).json()  # no key: a new refund of what remains
    assert (full["transaction_status"], full["refund_amount"]) == ("refund", "25000.00")
    assert sandbox.stats()["refunds"] == {"k-3": 2}
    assert sandbox.get_order("k-3") is not None
    order = sandbox.get_order("k-3") or {}
    assert (order["transaction_status"], order["refunded_amount"], len(order["refunds"])) == ("refund", 30000, 2)


def test_pending_orders_expire_when_looked_at(tmp_path: Path) -> None:
    with SandboxServer(expiry_seconds=1, notify_dir=tmp_path) as server:
        http = Client(server)
        charged = http.charge("late")
        view = parse_view(charged)
        assert view.expiry_time is not None and view.transaction_time is not None
        assert view.expiry_time - view.transaction_time == timedelta(seconds=1)
        time.sleep(1.05)
        answer = http.get("/v2/late/status").json()
        assert (answer["status_code"], answer["transaction_status"]) == ("407", "expire")
        assert http.charge("late")["status_code"] == "201"  # an expired order id may be used again
        http.close()
        assert server.stats()["charges"] == {"late": 2}
        assert [p.name for p in tmp_path.iterdir()] == ["late-expire-1.json"]


def test_idempotency_key_replays_the_first_answer(sandbox: SandboxServer, client: Client) -> None:
    body = {"payment_type": "gopay", "transaction_details": {"order_id": "i-1", "gross_amount": 1000}}
    headers = {"Idempotency-Key": "d63ae3e0-a7c5-4733-8d81-b451168d8a2c-charge"}
    first = client.post("/v2/charge", body, headers=headers).json()
    other_body = {**body, "transaction_details": {"order_id": "i-2", "gross_amount": 5}}
    assert client.post("/v2/charge", other_body, headers=headers).json() == first  # regardless of the body
    long_key = {"Idempotency-Key": "k" * 47}  # ignored: too long
    assert client.post("/v2/charge", body, headers=long_key).json()["status_code"] == "406"
    assert sandbox.stats()["charges"] == {"i-1": 1}


def test_qr_code_and_qris_payload(client: Client) -> None:
    charged = client.charge("q-1", 789000, "qris")
    qr = charged["qr_string"]
    assert qr == qris_payload(charged["transaction_id"], 789000)
    assert qr.startswith("000201010212") and "5406789000.00" not in qr and "5409789000.00" in qr
    assert qr[-8:-4] == "6304"
    url = charged["actions"][0]["url"]
    with requests.get(url, timeout=5) as png:  # hotlinked: no auth
        assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")


# --- faults and control -----------------------------------------------------------------------


def fault_sequence(seed: int) -> list[int]:
    with SandboxServer(seed=seed, fail_rate=0.3, rate_limit_rate=0.2, malformed_rate=0.2) as server:
        http = Client(server)
        codes = []
        for _ in range(40):
            response = http.get("/v2/x/status")
            codes.append(response.status_code if response.headers["Content-Type"] != "text/html" else -1)
        http.close()
    return codes


def test_seeded_faults_are_reproducible() -> None:
    first = fault_sequence(seed=42)
    assert fault_sequence(seed=42) == first
    assert {200, 429, -1} <= set(first) and set(first) & {500, 503}
    assert fault_sequence(seed=43) != first


def test_fault_counters_and_control_endpoints(sandbox: SandboxServer, client: Client) -> None:
    set_to = client.post("/_sandbox/faults", {"fail_rate": 1.0}).json()
    assert set_to["fail_rate"] == 1.0
    assert client.get("/v2/x/status").status_code in (500, 503)
    assert client.post("/_sandbox/faults", {"fail_rate": 2}).status_code == 400
    assert client.post("/_sandbox/faults", {"bogus": 1}).status_code == 400
    client.post("/_sandbox/faults", {"fail_rate": 0, "rate_limit_rate": 1})
    assert client.get("/v2/x/status").status_code == 429
    stats = client.get("/_sandbox/stats").json()
    assert stats["requests"] == 2 and stats["faults"] == {"5xx": 1, "429": 1, "stall": 0, "malformed": 0}
    assert stats["by_endpoint"]["status"] == 2 and stats["status_checks"] == {"x": 2}
    assert client.post("/_sandbox/reset").json() == {"ok": True}
    assert sandbox.stats()["requests"] == 0
    assert client.get("/_sandbox/orders").json() == {"orders": []}


def test_latency_is_added(sandbox: SandboxServer, client: Client) -> None:
    sandbox.set_faults(latency_ms=150)
    started = time.monotonic()
    client.get("/v2/x/status")
    assert time.monotonic() - started >= 0.15


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
    deadline = time.monotonic() + 5
    while server.stats()["faults"]["stall"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
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


# --- the command-line entry points ----------------------------------------------------------


def test_pay_remote(sandbox: SandboxServer, client: Client) -> None:
    client.charge("r/1")
    note = pay_remote(api_url=sandbox.url + "/", order_id="r/1", status="settlement")
    assert note["order_id"] == "r/1" and verify_signature(note, DEV_SERVER_KEY)
    with pytest.raises(NotFoundError, match="no order"):
        pay_remote(api_url=sandbox.url, order_id="ghost", status="settlement")
    with pytest.raises(UsageError):
        pay_remote(api_url=sandbox.url, order_id="r/1", status="paid")
    with pytest.raises(MidtransRejected):
        pay_remote(api_url=sandbox.url, order_id="r/1", status="expire")


def test_pay_remote_without_a_sandbox() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GatewayUnavailable, match="midpay sandbox serve"):
        pay_remote(api_url=f"http://127.0.0.1:{port}", order_id="o", status="settlement", timeout=2)


def test_pay_remote_at_something_else(sandbox: SandboxServer) -> None:
    with pytest.raises(GatewayProtocolError, match="not answer like a midpay sandbox"):
        pay_remote(api_url=sandbox.url + "/v2", order_id="o", status="settlement")


def run_serve(env_key: str | None) -> str:
    code = (
        "import sys\n"
        "from midpay.sandbox import serve\n"
        "serve(host='127.0.0.1', port=0, server_key=sys.argv[1] or None, latency_ms=0, fail_rate=0.0,\n"
        "      notify_url=None, notify_dir=None, announce=lambda line: print(line, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code, env_key or ""], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    url = first.split(" on ")[1].split()[0]
    with requests.get(f"{url}/_sandbox/health", timeout=5) as health:
        assert health.json()["ok"] is True
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    rest = process.stdout.read()  # not communicate(timeout=...): it would skip readline's buffer
    process.stdout.close()
    return first + rest


def test_serve_announces_only_the_development_key() -> None:
    dev = run_serve(None)
    assert f"using the development server key {DEV_SERVER_KEY}" in dev
    assert "sandbox stopped" in dev
    secret = "SB-Mid-server-do-not-print-me"
    mine = run_serve(secret)
    assert secret not in mine and "using the server key from MIDTRANS_SERVER_KEY" in mine


def _serve_to_file(tmp_path: Path, log: Path, *args: str, key: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"PYTHONPATH": str(ROOT), "MIDTRANS_SERVER_KEY": key})
    with log.open("wb") as out:  # a file, not a terminal: Python would block-buffer it
        return subprocess.Popen(
            [sys.executable, "-m", "midpay", "sandbox", "serve", "--port", "0", *args],
            stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
        )


def _wait_for_text(log: Path, pattern: str, process: subprocess.Popen[bytes], count: int = 1) -> list[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.findall(pattern, log.read_text(), re.MULTILINE)
        if len(found) >= count:
            return found
        assert process.poll() is None, log.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} x{count} never appeared in the log:\n{log.read_text()}")


def test_serve_logs_each_request_while_it_runs(tmp_path: Path) -> None:
    secret = "SB-Mid-server-never-log-me"
    log = tmp_path / "sandbox.log"
    process = _serve_to_file(tmp_path, log, key=secret)
    try:
        url = _wait_for_text(log, r"listening on (http://\S+)", process)[0]
        session = requests.Session()
        session.headers["Authorization"] = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
        body = {"payment_type": "gopay", "transaction_details": {"order_id": "a/b c#1", "gross_amount": 1000}}
        assert session.post(f"{url}/v2/charge", json=body, timeout=5).json()["status_code"] == "201"
        assert session.get(f"{url}/v2/a%2Fb%20c%231/status", timeout=5).json()["status_code"] == "201"
        assert session.get(f"{url}/v2/ghost/status?x=1", timeout=5).json()["status_code"] == "404"
        with requests.get(f"{url}/v2/ghost/status", timeout=5, auth=("SB-Mid-server-wrong", "")) as denied:
            assert denied.status_code == 401
        with requests.get(f"{url}/_sandbox/health", timeout=5) as health:
            assert health.status_code == 200
        line = r"^\d\d:\d\d:\d\d\.\d{3} (\S+) (\S+) (\S+) (\S+) (\d+\.\d)ms$"
        lines = _wait_for_text(log, line, process, count=5)  # read while the server still runs
        session.close()
        assert [entry[:4] for entry in lines] == [
            ("POST", "/v2/charge", "200", "201"),
            ("GET", "/v2/a%2Fb%20c%231/status", "200", "201"),  # the path as sent, query left out
            ("GET", "/v2/ghost/status", "200", "404"),
            ("GET", "/v2/ghost/status", "401", "401"),
            ("GET", "/_sandbox/health", "200", "-"),
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    text = log.read_text()
    assert secret not in text and "using the server key from MIDTRANS_SERVER_KEY" in text
    assert text.rstrip().endswith("sandbox stopped")


def test_serve_quiet_logs_no_requests(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    process = _serve_to_file(tmp_path, log, "--quiet", key="SB-Mid-server-q")
    try:
        url = _wait_for_text(log, r"listening on (http://\S+)", process)[0]
        with requests.get(f"{url}/_sandbox/health", timeout=5) as health:
            assert health.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert "/_sandbox/health" not in log.read_text() and "sandbox stopped" in log.read_text()


def test_request_log_escapes_and_never_blocks() -> None:
    from midpay.sandbox.reqlog import QUEUE_SIZE, RequestLog, shown_path

    assert shown_path("/v2/a%2Fb/status?key=1") == "/v2/a%2Fb/status"
    assert shown_path("/v2/\x1b[31mx\x00/status") == "/v2/\\x1b[31mx\\x00/status"
    gate = threading.Event()
    written: list[str] = []

    def slow_write(line: str) -> None:  # a reader that does not read
        gate.wait(10)
        written.append(line)

    journal = RequestLog(slow_write)
    journal.start()
    for _ in range(QUEUE_SIZE + 50):  # never blocks, however full
        journal.record("GET", "/v2/x/status", 200, "201", 0.001)
    gate.set()
    deadline = time.monotonic() + 10
    while len(written) < QUEUE_SIZE and time.monotonic() < deadline:
        time.sleep(0.01)
    journal.record("GET", "/v2/last/status", None, None, 0.5)
    journal.stop()
    assert any("request log lines dropped" in line for line in written)
    assert written[-1].endswith("GET /v2/last/status - - 500.0ms")


# --- paying: QRIS scan, capture and fraud review ----------------------------------------------

FIXTURES = ROOT / "tests" / "fixtures" / "midtrans"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_a_gopay_charge_paid_by_qris_scan_reports_qris(sandbox: SandboxServer, client: Client) -> None:
    charged = client.charge("scan-1", 5539)
    assert charged["payment_type"] == "gopay"
    note = sandbox.pay("scan-1", "settlement", payment_type="qris")
    assert list(note) == list(fixture("notification_qris_settlement.json"))  # Midtrans' QRIS sample, field for field
    assert (note["payment_type"], note["transaction_type"], note["issuer"], note["acquirer"]) == (
        "qris", "on-us", "gopay", "gopay"
    )
    assert note["transaction_id"] == charged["transaction_id"] and verify_signature(note, DEV_SERVER_KEY)
    answer = client.get("/v2/scan-1/status").json()
    assert (answer["payment_type"], answer["transaction_status"], answer["acquirer"]) == ("qris", "settlement", "gopay")
    assert answer["merchant_cross_reference_id"] == note["merchant_cross_reference_id"]
    assert sandbox.pay("scan-1") == note  # the same notification again, still qris
    with pytest.raises(UsageError, match="only a gopay charge being paid"):
        client.charge("scan-2")
        sandbox.pay("scan-2", "cancel", payment_type="qris")
    with pytest.raises(UsageError, match="payment_type"):
        sandbox.pay("scan-2", "settlement", payment_type="ovo")


def test_capture_with_fraud_review(sandbox: SandboxServer, client: Client) -> None:
    client.charge("fr-1", 30000)
    challenged = sandbox.pay("fr-1", "capture", fraud_status="challenge")
    assert (challenged["transaction_status"], challenged["fraud_status"], challenged["status_code"]) == (
        "capture", "challenge", "200"
    )
    assert "settlement_time" not in challenged
    answer = client.get("/v2/fr-1/status").json()
    assert (answer["transaction_status"], answer["fraud_status"], answer["status_code"]) == (
        "capture", "challenge", "200"
    )
    accepted = sandbox.pay("fr-1", "capture", fraud_status="accept")  # the review accepts it
    assert (accepted["transaction_status"], accepted["fraud_status"]) == ("capture", "accept")
    settled = sandbox.pay("fr-1", "settlement")
    assert (settled["transaction_status"], settled["fraud_status"]) == ("settlement", "accept")
    with pytest.raises(MidtransRejected):
        sandbox.pay("fr-1", "capture")
    client.charge("fr-2", 30000)
    denied = sandbox.pay("fr-2", "settlement", fraud_status="deny")  # never paid, whatever the status says
    assert (denied["transaction_status"], denied["fraud_status"]) == ("settlement", "deny")
    assert client.get("/v2/fr-2/status").json()["fraud_status"] == "deny"
    with pytest.raises(UsageError, match="fraud_status"):
        sandbox.pay("fr-2", "settlement", fraud_status="maybe")


def test_pay_remote_and_the_pay_endpoint_take_payment_type_and_fraud_status(
    sandbox: SandboxServer, client: Client
) -> None:
    client.charge("rp-1")
    note = pay_remote(api_url=sandbox.url, order_id="rp-1", status="capture", fraud_status="challenge")
    assert (note["transaction_status"], note["fraud_status"]) == ("capture", "challenge")
    client.charge("rp-2")
    body = client.post("/_sandbox/pay/rp-2", {"status": "settlement", "payment_type": "qris"}).json()
    assert body["payment_type"] == "qris"
    assert client.post("/_sandbox/pay/rp-2", {"status": "settlement", "colour": "red"}).status_code == 400


# --- refunds, as Midtrans reports them ---------------------------------------------------------


def _settled(sandbox: SandboxServer, client: Client, order_id: str, amount: int = 10000) -> None:
    client.charge(order_id, amount)
    sandbox.pay(order_id)


def test_partial_refunds_to_full_and_their_shapes(sandbox: SandboxServer, client: Client, tmp_path: Path) -> None:
    _settled(sandbox, client, "rf-1")
    first = client.post("/v2/rf-1/refund", fixture("refund_request.json")).json()  # Midtrans' sample request
    assert set(first) == set(fixture("refund_partial.json"))  # the keys of Midtrans' partial refund answer
    assert (first["transaction_status"], first["refund_amount"], first["refund_key"]) == (
        "partial_refund", "5000.00", "reference1"
    )
    second = client.post("/v2/rf-1/refund", {"refund_key": "reference2", "amount": 5000}).json()
    assert (second["transaction_status"], second["refund_amount"]) == ("refund", "5000.00")  # this refund only
    ids = [first["refund_chargeback_id"], second["refund_chargeback_id"]]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and ids[0] < ids[1]

    status = client.get("/v2/rf-1/status").json()
    assert (status["transaction_status"], status["status_code"], status["refund_amount"]) == (
        "refund", "200", "10000.00"
    )
    assert [r["refund_key"] for r in status["refunds"]] == ["reference1", "reference2"]
    item = status["refunds"][0]
    assert (item["refund_chargeback_id"], item["refund_amount"], item["reason"]) == (
        ids[0], "5000.00", "for some reason"
    )
    assert set(item) == {
        "refund_chargeback_id", "refund_amount", "created_at", "reason", "refund_key",
        "refund_method", "bank_confirmed_at",
    }
    assert parse_view(status).transaction_status == "refund"

    # Two notifications per refund: made, then confirmed by the bank (refund_method, bank_confirmed_at).
    notes = sorted((tmp_path / "notes").glob("rf-1-*refund-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    bodies = [json.loads(p.read_text()) for p in notes]
    assert [b["transaction_status"] for b in bodies] == ["partial_refund"] * 2 + ["refund"] * 2
    assert ["bank_confirmed_at" in b["refunds"][-1] for b in bodies] == [False, True, False, True]
    assert [b["refund_amount"] for b in bodies] == ["5000.00", "5000.00", "10000.00", "10000.00"]
    assert all(b["status_code"] == "200" and verify_signature(b, DEV_SERVER_KEY) for b in bodies)
    assert sandbox.paid_out("rf-1") == 10000


def test_the_same_refund_key_never_pays_twice(sandbox: SandboxServer, client: Client) -> None:
    _settled(sandbox, client, "rf-2", 30000)
    first = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 10000}).json()
    again = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 10000}).json()
    other_amount = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 999}).json()
    assert again == first == other_amount  # the safe retry: the same refund, answered again
    assert client.post("/v2/rf-2/refund", {"refund_key": "k2", "amount": 20001}).json() == fixture("refund_414.json")
    assert sandbox.paid_out("rf-2") == 10000
    requests_seen = sandbox.refund_requests("rf-2")
    assert [(r["refund_key"], r["amount"], r["replay"], r["paid"], r["status_code"]) for r in requests_seen] == [
        ("k1", 10000, False, 10000, "200"),
        ("k1", 10000, True, 0, "200"),
        ("k1", 999, True, 0, "200"),
        ("k2", 20001, False, 0, "414"),
    ]
    assert sandbox.stats()["refunds"] == {"rf-2": 1}
    over_http = client.get("/_sandbox/refunds/rf-2").json()
    assert over_http["paid_out"] == 10000 and over_http["requests"] == requests_seen
    assert len(over_http["refunds"]) == 1 and over_http["refunds"][0]["source"] == "api"


def test_refund_before_settlement_and_without_a_key(sandbox: SandboxServer, client: Client) -> None:
    client.charge("rf-3", 8000)
    assert client.post("/v2/rf-3/refund", {"refund_key": "x", "amount": 1}).json() == fixture("refund_412.json")
    sandbox.pay("rf-3")
    keyless = client.post("/v2/rf-3/refund", {}).json()  # no key, no amount: a new refund of it all
    assert keyless["refund_amount"] == "8000.00" and keyless["transaction_status"] == "refund"
    assert uuid.UUID(keyless["refund_key"])  # Midtrans makes one up
    assert sandbox.refund_requests("rf-3")[-1]["refund_key"] is None
    assert client.post("/v2/rf-3/refund", {}).json()["status_code"] == "412"  # refund is final


def test_direct_refund_endpoint(sandbox: SandboxServer, client: Client) -> None:
    _settled(sandbox, client, "rf-4")
    direct = client.post("/v2/rf-4/refund/online/direct", {"refund_key": "d-1"}).json()
    assert set(direct) == set(fixture("refund_direct_success.json"))
    assert direct["status_message"] == "Success, refund request is approved by the bank"
    assert sandbox.refund_requests("rf-4")[0]["endpoint"] == "direct" and sandbox.stats()["by_endpoint"]["refund"] == 1


def test_refunds_wait_for_the_bank_when_asked(tmp_path: Path) -> None:
    with SandboxServer(notify_dir=tmp_path, auto_confirm_refunds=False) as server:
        http = Client(server)
        _settled(server, http, "rf-5")
        http.post("/v2/rf-5/refund", {"refund_key": "m-1", "amount": 4000})
        status = http.get("/v2/rf-5/status").json()
        assert "bank_confirmed_at" not in status["refunds"][0] and "refund_method" not in status["refunds"][0]
        assert len(list(tmp_path.glob("rf-5-partial_refund-*.json"))) == 1
        confirmed = server.confirm_refunds("rf-5")
        assert len(confirmed) == 1 and confirmed[0]["refunds"][0]["refund_method"] == "online"
        assert "bank_confirmed_at" in http.get("/v2/rf-5/status").json()["refunds"][0]
        assert server.confirm_refunds("rf-5") == []  # nothing left to confirm
        assert http.post("/_sandbox/settings", {"auto_confirm_refunds": True}).json() == {"auto_confirm_refunds": True}
        http.close()


def test_a_refund_made_outside_midpay(sandbox: SandboxServer, client: Client, tmp_path: Path) -> None:
    _settled(sandbox, client, "out-1", 20000)
    item = sandbox.refund_outside("out-1", 5000, reason="dashboard")
    assert item["source"] == "outside" and item["refund_amount"] == "5000.00" and uuid.UUID(item["refund_key"])
    status = client.get("/v2/out-1/status").json()
    assert (status["transaction_status"], status["refund_amount"]) == ("partial_refund", "5000.00")
    assert status["refunds"][0]["refund_key"] == item["refund_key"] and status["refunds"][0]["reason"] == "dashboard"
    assert len(list((tmp_path / "notes").glob("out-1-partial_refund-*.json"))) == 2
    assert sandbox.refund_requests("out-1") == [] and sandbox.paid_out("out-1") == 5000
    rest = client.post("/_sandbox/refund-outside/out-1", {}).json()["refund"]  # all that remains
    assert rest["refund_amount"] == "15000.00" and sandbox.paid_out("out-1") == 20000
    with pytest.raises(MidtransRejected) as caught:
        sandbox.refund_outside("out-1", 1)
    assert caught.value.status_code == "412"
    _settled(sandbox, client, "out-2", 1000)
    with pytest.raises(MidtransRejected) as too_much:
        sandbox.refund_outside("out-2", 1001)
    assert too_much.value.status_code == "414"
    assert client.post("/_sandbox/refund-outside/out-2", {"amount": 1001}).status_code == 409
    with pytest.raises(NotFoundError):
        sandbox.paid_out("nobody")


# --- tampered answers and per-order faults -----------------------------------------------------


def test_tampered_status_answers(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-1", 1000)
    client.charge("t-2", 2000)
    sandbox.tamper("t-1", {"order_id": "t-2", "gross_amount": "2000.00"}, times=2, endpoints=["status"])
    for _ in range(2):
        lie = client.get("/v2/t-1/status").json()
        assert (lie["order_id"], lie["gross_amount"]) == ("t-2", "2000.00")
        assert lie["signature_key"] == expected_signature("t-2", "201", "2000.00", DEV_SERVER_KEY)  # re-signed
    truth = client.get("/v2/t-1/status").json()  # two uses, then the truth again
    assert (truth["order_id"], truth["gross_amount"]) == ("t-1", "1000.00")
    assert client.get("/v2/t-2/status").json()["order_id"] == "t-2"  # other orders untouched

    weird = {"transaction_id": "x" * 300, "status_message": "found\x00 it", "transaction_status": "teleported"}
    sandbox.tamper("t-1", weird, remove=["fraud_status"], resign=False)
    by_txn = client.get(f"/v2/{truth['transaction_id']}/status")  # asked by transaction id: still about t-1
    assert b"\\u0000" in by_txn.content
    body = by_txn.json()
    assert body["transaction_id"] == "x" * 300 and body["status_message"] == "found\x00 it"
    assert body["transaction_status"] == "teleported" and "fraud_status" not in body
    assert body["signature_key"] == truth["signature_key"]  # resign=False keeps the original
    assert client.get("/v2/t-1/status").json()["transaction_status"] == "teleported"  # times=None: until cleared
    sandbox.clear_rules("t-1")
    assert client.get("/v2/t-1/status").json()["transaction_status"] == "pending"
    assert sandbox.stats()["tampered"] == 4


def test_an_error_answer_that_echoes_the_authorization_header(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-3")
    rule = sandbox.tamper(
        "t-3",
        {"status_code": "500", "status_message": "Internal error"},
        replace=True,
        echo_authorization=True,
        http_status=500,
        endpoints=["cancel"],
    )
    assert rule["endpoints"] == ["cancel"] and rule["http_status"] == 500
    leaked = client.post("/v2/t-3/cancel")
    assert leaked.status_code == 500
    assert leaked.json() == {
        "status_code": "500",
        "status_message": "Internal error",
        "headers": {"Authorization": client.session.headers["Authorization"]},
    }
    assert client.get("/v2/t-3/status").json()["transaction_status"] == "cancel"  # the cancel itself happened


def test_tampered_charge_and_refund_answers(sandbox: SandboxServer, client: Client) -> None:
    sandbox.tamper("t-4", {"transaction_id": "not-the-real-one"}, times=1, endpoints=["charge"])
    charged = client.charge("t-4", 5000)
    assert charged["transaction_id"] == "not-the-real-one"
    sandbox.pay("t-4")
    sandbox.tamper("t-4", {"gross_amount": "9999.00"}, endpoints="refund")
    refunded = client.post("/v2/t-4/refund", {"refund_key": "r", "amount": 1000}).json()
    assert refunded["gross_amount"] == "9999.00" and sandbox.paid_out("t-4") == 1000


def test_tamper_and_fault_over_the_control_endpoints(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-5")
    made = client.post("/_sandbox/tamper/t-5", {"fields": {"transaction_status": "settlement"}, "times": 1})
    assert made.status_code == 200
    client.post("/_sandbox/fault/t-5", {"fault": "503", "endpoints": ["cancel"]})
    rules = client.get("/_sandbox/rules").json()["rules"]
    assert [(r["order_id"], r.get("fault"), r.get("times")) for r in rules] == [("t-5", None, 1), ("t-5", "503", None)]
    assert client.get("/v2/t-5/status").json()["transaction_status"] == "settlement"
    assert client.post("/v2/t-5/cancel").status_code == 503
    assert client.delete("/_sandbox/rules/t-5").json() == {"ok": True}
    assert client.get("/_sandbox/rules").json() == {"rules": []}
    for bad in ({"fault": "teapot"}, {"fault": "500", "times": 0}, {"fault": "500", "endpoints": ["qr-code"]}):
        assert client.post("/_sandbox/fault/t-5", bad).status_code == 400, bad
    assert client.post("/_sandbox/tamper/t-5", {"fields": [1]}).status_code == 400
    assert client.post("/_sandbox/tamper/t-5", {"http_status": 99}).status_code == 400


@pytest.mark.parametrize("fault", ["500", "503", "429", "401"])
def test_refusing_faults_strike_one_order_before_anything_happens(
    sandbox: SandboxServer, client: Client, fault: str
) -> None:
    client.charge("f-1")
    client.charge("f-2")
    sandbox.fault_order("f-1", fault, times=1)
    refused = client.post("/v2/f-1/cancel")
    assert refused.status_code == int(fault) and refused.json()["status_code"] == fault
    assert client.post("/v2/f-2/cancel").json()["status_code"] == "200"  # another order: no fault
    assert client.get("/v2/f-1/status").json()["transaction_status"] == "pending"  # the cancel never happened
    assert sandbox.stats()["order_faults"][fault] == 1


def test_connection_faults_of_one_order(sandbox: SandboxServer, client: Client) -> None:
    for order_id in ("h-1", "h-2", "h-3", "h-4"):
        client.charge(order_id)
    sandbox.fault_order("h-1", "hangup", times=1)
    with pytest.raises(requests.ConnectionError):
        client.post("/v2/h-1/cancel")
    assert client.get("/v2/h-1/status").json()["transaction_status"] == "pending"  # nothing happened
    sandbox.fault_order("h-2", "lost-answer", times=1)
    with pytest.raises(requests.ConnectionError):
        client.post("/v2/h-2/cancel")
    assert client.get("/v2/h-2/status").json()["transaction_status"] == "cancel"  # it happened; the answer was lost
    sandbox.fault_order("h-3", "malformed", times=1, endpoints=["status"])
    garbage = client.get("/v2/h-3/status")
    assert garbage.status_code == 200 and garbage.headers["Content-Type"] == "text/html"
    sandbox.fault_order("h-4", "stall", seconds=0.2, times=1)
    started = time.monotonic()
    assert client.post("/v2/h-4/expire").json()["status_code"] == "407"
    assert time.monotonic() - started >= 0.2
    assert sandbox.list_rules() == []  # every rule used up


# --- notification delivery, retried as Midtrans retries ----------------------------------------


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
                    time.sleep(0.5)
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


# --- bulk seeding --------------------------------------------------------------------------------


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


# --- the wire ------------------------------------------------------------------------------------


def _raw(sandbox: SandboxServer, payload: bytes) -> bytes:
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_http_keep_alive_pipelining_and_refusals(sandbox: SandboxServer) -> None:
    auth = base64.b64encode(f"{DEV_SERVER_KEY}:".encode())
    one = b"GET /v2/nobody/status HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n\r\n"
    two = _raw(sandbox, one + one)  # pipelined: two answers, in order, on one connection
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2 and two.count(b"Transaction doesn't exist.") == 2
    assert b"Content-Length: " in two and b"Date: " in two
    closing = _raw(sandbox, one.replace(b"HTTP/1.1", b"HTTP/1.0") + one)  # 1.0 without keep-alive: one answer
    assert closing.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in closing
    assert _raw(sandbox, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    chunked = b"POST /v2/charge HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert _raw(sandbox, chunked).startswith(b"HTTP/1.1 411 ")
    huge = b"POST /v2/charge HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
    assert _raw(sandbox, huge).startswith(b"HTTP/1.1 413 ")
    many = b"GET /_sandbox/health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
    assert _raw(sandbox, many).startswith(b"HTTP/1.1 431 ")


def test_sandbox_pay_command(sandbox: SandboxServer, client: Client, tmp_path: Path) -> None:
    client.charge("cli-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"PYTHONPATH": str(ROOT), "MIDTRANS_API_URL": sandbox.url})

    def midpay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "midpay", "sandbox", "pay", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )

    paid = midpay("cli-1", "--payment-type", "qris")
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["payment_type"] == "qris"
    wrong = midpay("cli-1", "--status", "paid")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        "Error: --status must be one of settlement, capture, deny, cancel, expire, pending, not 'paid'"
    )
    final = midpay("cli-1", "--status", "cancel")
    assert final.returncode == 1 and "cannot move it to cancel" in final.stderr
