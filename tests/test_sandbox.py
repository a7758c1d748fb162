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
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from midpay.errors import GatewayProtocolError, GatewayUnavailable, MidtransRejected, NotFoundError, UsageError
from midpay.notifications import parse_notification, parse_view, verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer, pay_remote, qris_payload, safe_file_stem

ROOT = Path(__file__).resolve().parent.parent


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

    def charge(self, order_id: str, amount: object = 44000, payment_type: str = "gopay", **extra: Any) -> Any:
        body = {"payment_type": payment_type, "transaction_details": {"order_id": order_id, "gross_amount": amount}}
        return self.post("/v2/charge", {**body, **extra}).json()

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(notify_dir=tmp_path / "notes") as server:
        yield server


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
            stats = server.stats()["notifications"]
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert [(n["order_id"], n["transaction_status"]) for n in received] == [("a/b", "settlement"), ("c-1", "cancel")]
    names = sorted(p.name for p in notes.iterdir())
    assert names == sorted([f"{safe_file_stem('a/b')}-settlement-1.json", "c-1-cancel-1.json"])
    assert json.loads((notes / f"{safe_file_stem('a/b')}-settlement-1.json").read_text()) == received[0]
    assert stats == {"emitted": 2, "written": 2, "posted": 2, "failed": 0}


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
