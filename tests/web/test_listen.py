"""`midpay listen` over real HTTP: a real process on a free port, a real PostgreSQL.

Each answer code of the receiver, what it stores (or not) for each, its log lines,
/healthz, and the refusals at start-up. Concurrency, outages and SIGTERM are in
test_listen_load.py and test_listen_outage.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from midpay.midtrans.notifications import compute_signature
from tests.conftest import REPO, SERVER_KEY
from tests.helpers import payment_row, wait_until
from tests.listen_process import Listener, free_port, start_process

FIXTURES = REPO / "tests" / "fixtures" / "midtrans"
JSON = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "Veritrans"}


def listen_env(env: dict[str, str], **overrides: str) -> dict[str, str]:
    return {**os.environ, **env, "PYTHONPATH": str(REPO), **overrides}


@pytest.fixture
def listener(env: dict[str, str], tmp_path: Path) -> Iterator[Listener]:
    server = start_process(listen_env(env), tmp_path / "listen.log", cwd=tmp_path)
    yield server
    assert server.stop() == 0, server.log_path.read_text()[-3000:]


def fixture_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return body


def signed(body: dict[str, Any], key: str = SERVER_KEY) -> dict[str, Any]:
    signature = compute_signature(body["order_id"], body["status_code"], body["gross_amount"], key)
    return {**body, "signature_key": signature}


def charged(cli: Any, amount: int = 154600) -> str:
    result = cli("charge", "--amount", str(amount), "--json")
    assert result.exit_code == 0, result
    order_id: str = result.json()["order_id"]
    return order_id


def post(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers=JSON if headers is None else headers, timeout=30)


def events(db_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM payment_webhook_events ORDER BY received_at, id")
        return cur.fetchall()


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=5)
    except requests.ConnectionError:
        return False
    return True


def request_lines(server: Listener) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if "method" in line]


# --- notifications -----------------------------------------------------------------------


def test_a_paid_order_is_applied_once_and_a_duplicate_changes_nothing(
    listener: Listener, cli: Any, sandbox: Any, db_url: str
) -> None:
    order_id = charged(cli)
    body = sandbox.pay(order_id, "settlement")

    first = post(listener.url, body)
    assert first.status_code == 200
    assert first.json() == {"outcome": "applied", "order_id": order_id, "error": None}
    row = payment_row(db_url, order_id)
    assert row["status"] == "settlement"
    paid_at = row["paid_at"]
    assert paid_at is not None

    again = post(listener.url, body)
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert payment_row(db_url, order_id)["paid_at"] == paid_at

    stored = events(db_url)
    assert [(e["order_id"], e["outcome"], e["processed"], e["is_verified"]) for e in stored] == [
        (order_id, "applied", True, True),
        (order_id, "unchanged", True, True),
    ]
    assert all(e["source"] == "http:127.0.0.1" for e in stored)
    assert stored[0]["raw_body"] == body


def test_rejected_bodies_are_stored_and_answered_4xx(listener: Listener, cli: Any, db_url: str) -> None:
    order_id = charged(cli, 154600)
    base = {
        "transaction_status": "settlement",
        "status_code": "200",
        "order_id": order_id,
        "gross_amount": "154600.00",
        "transaction_id": "t-1",
    }
    forged = {**base, "signature_key": "0" * 128}
    wrong_amount = signed({**base, "gross_amount": "1.00"})
    # Midtrans' own GoPay sample (order Order-5100), signed with this key: an order this database does not have.
    unknown = signed(fixture_body("notification_gopay_settlement.json"))

    answers = {
        "forged": post(listener.url, forged),
        "wrong amount": post(listener.url, wrong_amount),
        "unknown": post(listener.url, unknown),
        "not json": post(listener.url, b"{not json"),
        "not an object": post(listener.url, b"[1, 2]"),
        "empty": post(listener.url, b""),
    }
    codes = {name: r.status_code for name, r in answers.items()}
    assert codes == {
        "forged": 400,
        "wrong amount": 400,
        "unknown": 404,
        "not json": 400,
        "not an object": 400,
        "empty": 400,
    }
    assert answers["forged"].json()["error"].startswith("signature mismatch")
    assert answers["wrong amount"].json()["error"].startswith("amount mismatch")
    assert answers["unknown"].json() == {
        "outcome": "rejected",
        "order_id": "Order-5100",
        "error": "unknown order: Order-5100",
    }
    assert all(r.json()["outcome"] == "rejected" for r in answers.values())

    stored = events(db_url)
    assert len(stored) == len(answers)  # every one kept, none applied
    assert all(e["outcome"] == "rejected" and not e["processed"] for e in stored)
    assert [e["order_id"] for e in stored[:3]] == [order_id, order_id, "Order-5100"]
    assert payment_row(db_url, order_id)["status"] == "pending"


def test_a_wrong_server_key_loses_no_notification(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    """Every body is stored while the key is wrong; `events reprocess --rejected` applies them after the fix."""
    server = start_process(
        listen_env(env, MIDTRANS_SERVER_KEY="SB-Mid-server-the-wrong-one"), tmp_path / "listen.log", cwd=tmp_path
    )
    try:
        orders = [charged(cli, 10000 + i) for i in range(3)]
        answers = [post(server.url, sandbox.pay(order_id, "settlement")) for order_id in orders]
    finally:
        assert server.stop() == 0
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert all(payment_row(db_url, o)["status"] == "pending" for o in orders)

    fixed = cli("events", "reprocess", "--rejected", "--json")
    assert fixed.exit_code == 0, fixed
    assert fixed.json()["summary"]["applied"] == 3
    assert all(payment_row(db_url, o)["status"] == "settlement" for o in orders)
    assert "the-wrong-one" not in server.log_path.read_text()


# --- refused before reading ---------------------------------------------------------------


def test_refusals_answer_before_anything_is_stored(listener: Listener, db_url: str) -> None:
    base = listener.url.removesuffix("/midtrans/notification")
    body = json.dumps({"order_id": "x"}).encode()

    get = requests.get(listener.url, timeout=30)
    assert (get.status_code, get.headers["Allow"]) == (405, "POST")
    put_health = requests.put(base + "/healthz", timeout=30)
    assert (put_health.status_code, put_health.headers["Allow"]) == (405, "GET, HEAD")
    assert post(base + "/elsewhere", body).status_code == 404
    assert post(listener.url + "/", body).status_code == 404
    assert post(listener.url, body, headers={"Content-Type": "text/plain"}).status_code == 415
    assert post(listener.url, body, headers={}).status_code == 415
    assert post(listener.url, body, headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415

    too_big = post(listener.url, b"{" + b" " * (256 * 1024) + b"}")
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "body larger than 262144 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(300):
            yield b" " * 1024

    chunked = requests.post(listener.url, data=chunks(), headers=JSON, timeout=30)
    assert chunked.status_code == 413

    assert events(db_url) == []
    # The query string is not part of the path: a URL with one still reaches the receiver.
    assert post(listener.url + "?shop=1", body).status_code == 400
    assert len(events(db_url)) == 1


def test_json_content_types_with_parameters_are_accepted(listener: Listener, db_url: str) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.midtrans+json"):
        answer = post(listener.url, b"{}", headers={"Content-Type": content_type})
        assert answer.status_code == 400, content_type  # stored, then rejected: {} is no notification
    assert len(events(db_url)) == 3


# --- the log ------------------------------------------------------------------------------


def test_one_json_line_per_request_with_the_order_as_text_and_never_the_key(
    listener: Listener, cli: Any, sandbox: Any
) -> None:
    order_id = charged(cli)
    assert post(listener.url, sandbox.pay(order_id, "settlement")).status_code == 200
    hostile = signed(
        {
            "order_id": "\x1b[31mred\x1b]0;title\x07",
            "status_code": "200",
            "gross_amount": "1.00",
            "transaction_status": "settlement",
        }
    )
    assert post(listener.url, hostile).status_code == 404
    assert requests.get(listener.url, timeout=30).status_code == 405
    assert requests.get(listener.health_url, timeout=30).status_code == 200

    lines = request_lines(listener)
    assert [(line["method"], line["status"], line["outcome"]) for line in lines] == [
        ("POST", 200, "applied"),
        ("POST", 404, "rejected"),
        ("GET", 405, "refused"),
        ("GET", 200, "healthy"),
    ]
    for line in lines:
        assert {"time", "method", "path", "status", "outcome", "order_id", "error", "latency_ms", "remote"} <= set(line)
        assert line["time"].endswith("Z")
        assert isinstance(line["latency_ms"], float)
    assert lines[0]["order_id"] == order_id
    assert (lines[0]["status_before"], lines[0]["status_after"]) == ("pending", "settlement")
    assert lines[1]["order_id"] == hostile["order_id"]
    assert lines[1]["error"] == f"unknown order: {hostile['order_id']}"

    raw = listener.log_path.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw  # control characters only as JSON escapes
    assert SERVER_KEY.encode() not in raw
    # Every line on stderr is JSON, gunicorn's own lines included.
    assert all("unparsed" not in line for line in listener.log_lines())


# --- /healthz -----------------------------------------------------------------------------


def test_healthz_says_whether_the_migrations_are_in_order(listener: Listener, db_url: str) -> None:
    ok = requests.get(listener.health_url, timeout=30)
    assert (ok.status_code, ok.json()) == (200, {"status": "ok", "database": "ok", "migrations": "ok"})
    head = requests.head(listener.health_url, timeout=30)
    assert (head.status_code, head.content) == (200, b"")

    with psycopg.connect(db_url) as conn:
        name = conn.execute(
            "DELETE FROM midpay_schema_migrations WHERE version = (SELECT max(version) FROM midpay_schema_migrations) "
            "RETURNING name"
        ).fetchone()
    assert name is not None
    pending = requests.get(listener.health_url, timeout=30)
    assert pending.status_code == 503
    assert pending.json() == {"status": "unavailable", "database": "ok", "migrations": f"pending {name[0]}"}


def test_healthz_accepts_a_superseded_checksum_and_refuses_an_edited_file(listener: Listener, db_url: str) -> None:
    from midpay.db.migrate import SUPERSEDED

    version, older = next((v, sorted(c)[0]) for v, c in sorted(SUPERSEDED.items()) if c)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE midpay_schema_migrations SET checksum = %s WHERE version = %s", (older, version))
    assert requests.get(listener.health_url, timeout=30).status_code == 200  # an adopted database stays valid
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE midpay_schema_migrations SET checksum = %s WHERE version = %s", ("0" * 64, version))
    edited = requests.get(listener.health_url, timeout=30)
    assert edited.status_code == 503
    assert "was edited after it was applied" in edited.json()["migrations"]


# --- start-up -----------------------------------------------------------------------------


def test_listen_refuses_an_unmigrated_database(cli_process: Any, empty_db_url: str, env: dict[str, str]) -> None:
    os.environ["DATABASE_URL"] = empty_db_url  # the env fixture's monkeypatch restores it
    result = cli_process("listen", "--port", "0")
    assert result.exit_code == 2, result
    assert result.stderr.startswith("Error: the database has none of midpay's tables yet: run `midpay migrate`")


def test_listen_refuses_an_unreachable_database(cli_process: Any, env: dict[str, str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    os.environ["DATABASE_URL"] = f"postgresql://midpay:secret-pw@127.0.0.1:{port}/midpay"
    result = cli_process("listen", "--port", "0")
    assert result.exit_code == 3, result
    assert result.stderr.startswith("Error: cannot connect to PostgreSQL")
    assert "secret-pw" not in result.stderr


def test_listen_refuses_a_port_in_use_and_a_bad_path(cli_process: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli_process("listen", "--port", str(port))
    assert result.exit_code == 2, result
    assert result.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"

    bad = cli_process("listen", "--path", "healthz")
    assert bad.exit_code == 2
    assert bad.stderr.strip() == ("Error: --path must start with / and not be /healthz or hold a query, not 'healthz'")


def test_listen_help_is_fast_to_load(cli_process: Any) -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.argv = ['midpay', 'listen', '--help']\n"
            "try:\n    runpy.run_module('midpay', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('gunicorn', 'psycopg', 'requests') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]"
    assert "--workers" in probe.stdout


# --- wired into the rest --------------------------------------------------------------------


@contextmanager
def sandbox_process(env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[str]:
    """`midpay sandbox serve --port 0 ARGS` as its own process; yields its URL."""
    with (tmp_path / "sandbox.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "midpay", "sandbox", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=listen_env(env),
            cwd=tmp_path,
        )
    assert proc.stdout is not None
    try:
        url = ""
        for _ in range(50):
            line = proc.stdout.readline()
            if "listening on" in line:
                url = line.split("listening on", 1)[1].split()[0]
                break
            if not line:
                break
        assert url, "the sandbox did not start: " + (tmp_path / "sandbox.log").read_text()[-2000:]
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def test_sandbox_serve_notify_url_delivers_each_payment_to_listen(
    env: dict[str, str], tmp_path: Path, cli_process: Any, db_url: str
) -> None:
    # Each needs the other's URL: listen's port is chosen first, the sandbox started with it.
    port = free_port()
    notify_url = f"http://127.0.0.1:{port}/midtrans/notification"
    with sandbox_process(env, tmp_path, "--notify-url", notify_url) as api_url:
        os.environ["MIDTRANS_API_URL"] = api_url  # the env fixture's monkeypatch restores it
        server = start_process(
            listen_env(env, MIDTRANS_API_URL=api_url), tmp_path / "listen.log", port=port, cwd=tmp_path
        )
        try:
            assert server.url == notify_url
            charge = cli_process("charge", "--amount", "25000", "--json")
            assert charge.exit_code == 0, charge
            order_id = charge.json()["order_id"]
            paid = cli_process("sandbox", "pay", order_id)
            assert paid.exit_code == 0, paid
            assert server.wait_for(order_id, timeout=60) is not None  # a bound on the wait, not a timing assertion
        finally:
            assert server.stop() == 0
    assert payment_row(db_url, order_id)["status"] == "settlement"
    from_http = [e for e in events(db_url) if e["order_id"] == order_id]
    assert [(e["source"], e["outcome"]) for e in from_http][:1] == [("http:127.0.0.1", "applied")]
    assert all(e["outcome"] in ("applied", "unchanged") for e in from_http)
    assert [line["outcome"] for line in request_lines(server) if line["order_id"] == order_id][:1] == ["applied"]


def test_the_importable_app_serves_under_a_shops_own_gunicorn(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "gunicorn.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--no-control-socket",
            "midpay.web.app:app",
        ],
        stderr=log,
        stdout=subprocess.DEVNULL,
        env=listen_env(env),
        cwd=tmp_path,
    )
    log.close()
    try:
        url = f"http://127.0.0.1:{port}/midtrans/notification"
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, what="listen to answer /healthz")
        order_id = charged(cli)
        answer = post(url, sandbox.pay(order_id, "settlement"))
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    assert answer.status_code == 200, (tmp_path / "gunicorn.log").read_text()[-2000:]
    assert payment_row(db_url, order_id)["status"] == "settlement"


def test_a_body_cut_short_is_not_stored(listener: Listener, db_url: str) -> None:
    parts = requests.utils.urlparse(listener.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(
            f"POST {parts.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"order_id": "cut'
        )
        conn.shutdown(socket.SHUT_WR)  # the sender goes away mid-body
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"could not be read to its end" in answer
    assert events(db_url) == []


def test_a_body_midtrans_cannot_confirm_now_is_stored_awaiting_and_answered_503(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    """Get Status unreachable: the body is kept awaiting confirmation; 503 makes Midtrans send it again."""
    order_id = charged(cli)
    body = sandbox.pay(order_id, "settlement")
    closed = free_port()
    server = start_process(
        listen_env(env, MIDTRANS_API_URL=f"http://127.0.0.1:{closed}"), tmp_path / "listen.log", cwd=tmp_path
    )
    try:
        answer = post(server.url, body)
    finally:
        assert server.stop() == 0
    assert answer.status_code == 503
    assert answer.json()["outcome"] == "awaiting"
    assert [(e["outcome"], e["processed"]) for e in events(db_url)] == [("awaiting", False)]
    assert payment_row(db_url, order_id)["status"] == "pending"

    # Midtrans' resend, once Get Status answers again, applies it.
    again = start_process(listen_env(env), tmp_path / "listen-again.log", cwd=tmp_path)
    try:
        assert post(again.url, body).status_code == 200
    finally:
        assert again.stop() == 0
    assert payment_row(db_url, order_id)["status"] == "settlement"


def test_the_exact_bytes_received_are_stored(listener: Listener, cli: Any, sandbox: Any, db_url: str) -> None:
    order_id = charged(cli)
    body = sandbox.pay(order_id, "settlement")
    exact = (
        "{\n  " + json.dumps(body, indent=4, ensure_ascii=False)[1:-1].strip() + ',\n  "note": "Rp 154.600 ✓"}'
    ).encode()
    assert post(listener.url, exact).status_code == 200
    [stored] = events(db_url)
    assert bytes(stored["raw_bytes"]) == exact
    assert stored["raw_body"]["note"] == "Rp 154.600 ✓"
