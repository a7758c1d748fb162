"""midpay.sandbox.commands: pay_remote, and `midpay sandbox serve` and `midpay sandbox pay` as real processes."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from midpay.errors import GatewayProtocolError, GatewayUnavailable, MidtransRejected, NotFoundError, UsageError
from midpay.midtrans.notifications import verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer, pay_remote
from tests.conftest import REPO as ROOT
from tests.helpers import wait_until
from tests.sandbox.conftest import Client


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
    def found() -> list[str] | None:
        lines = re.findall(pattern, log.read_text(), re.MULTILINE)
        if len(lines) >= count:
            return lines
        assert process.poll() is None, log.read_text()
        return None

    return wait_until(found, 20, what=f"{pattern!r} x{count} in the log")


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
