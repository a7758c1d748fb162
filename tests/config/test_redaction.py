"""Secrets never leave: answers scrubbed before they are stored, every stream redacted, odd passwords read.

A local HTTP server stands in for a Midtrans that echoes the Authorization header
back (in the answer's fields, its actions, its QR string, a debug object, an error
message); PostgreSQL is real, with a role whose password holds ``@ : / # ?``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from midpay.config import dburl, load_settings
from midpay.config.redaction import RedactingStream, key_forms, redact, scrub
from midpay.errors import ConfigError
from tests.conftest import SERVER_KEY

TOKEN = base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
ODD_PASSWORD = "p@ss:w/rd#1?x"
ODD_ROLE = "midpay_odd_pw"


def forbidden_in(out: str, *secrets: str) -> list[str]:
    """Which secret (or a long enough piece of the key's token) shows in ``out``."""
    found = [s for s in (SERVER_KEY, TOKEN, TOKEN.rstrip("="), *secrets) if s in out]
    return found + [f"token piece {TOKEN[:24]}"] * (TOKEN[:24] in out)


# --- redaction units --------------------------------------------------------------------


def test_key_forms_cover_the_documented_basic_token() -> None:
    # REFERENCE.md §1: SB-Mid-server-abc123cde456 -> U0ItTWlkLXNlcnZlci1hYmMxMjNjZGU0NTY6
    forms = key_forms("SB-Mid-server-abc123cde456")
    assert "SB-Mid-server-abc123cde456" in forms
    assert "U0ItTWlkLXNlcnZlci1hYmMxMjNjZGU0NTY6" in forms
    echoed = "Authorization: Basic U0ItTWlkLXNlcnZlci1hYmMxMjNjZGU0NTY6 was refused"
    assert redact(echoed, forms) == "Authorization: Basic *** was refused"


def test_a_cut_or_repadded_token_is_still_masked() -> None:
    forms = key_forms(SERVER_KEY)
    for token in (TOKEN, TOKEN.rstrip("="), TOKEN[:-2], base64.urlsafe_b64encode(f"{SERVER_KEY}:".encode()).decode()):
        assert TOKEN[:24] not in redact(f"x{token}y", forms)


def test_scrub_masks_at_any_depth_and_header_keys_whole() -> None:
    answer = {
        "status_code": "400",
        "status_message": f"bad auth Basic {TOKEN}",
        "debug": {"request": {"headers": {"Authorization": "Basic something-else", "Accept": "application/json"}}},
        "echo": [{"k": SERVER_KEY}, [f"{SERVER_KEY}!"]],
        TOKEN: "as a key",
        "amount": 154600,
    }
    cleaned = scrub(answer, key_forms(SERVER_KEY))
    assert forbidden_in(json.dumps(cleaned)) == []
    assert cleaned["debug"]["request"]["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert cleaned["status_message"] == "bad auth Basic ***"
    assert cleaned["amount"] == 154600


def test_redacting_stream_finds_a_secret_split_across_writes() -> None:
    buf = io.StringIO()
    stream = RedactingStream(buf, lambda: [SERVER_KEY])
    stream.write("key is " + SERVER_KEY[:10])
    stream.write(SERVER_KEY[10:] + " ok\nnext ")
    stream.flush()
    assert buf.getvalue() == "key is *** ok\nnext "


# --- DATABASE_URL with a password nobody encoded ----------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://shop:p@ss@db.internal:5432/shop", "postgresql://shop:p%40ss@db.internal:5432/shop"),
        ("postgresql://shop:a/b#c?d@db:5432/shop?sslmode=require", "postgresql://shop:a%2Fb%23c%3Fd@db:5432/shop?sslmode=require"),
        ("postgresql://shop:x:y@db/shop", "postgresql://shop:x%3Ay@db/shop"),
        ("postgresql://shop:100%@db/shop", "postgresql://shop:100%25@db/shop"),
        ("postgresql://shop:p%40ss@db/shop", "postgresql://shop:p%40ss@db/shop"),
        ("postgresql://db/shop?application_name=midpay", "postgresql://db/shop?application_name=midpay"),
        ("postgresql://u:pw@[::1]:5432/shop", "postgresql://u:pw@[::1]:5432/shop"),
        ("host=db user=shop password=secret dbname=shop", "host=db user=shop password=secret dbname=shop"),
    ],
)
def test_unencoded_passwords_are_read_as_written(url: str, expected: str) -> None:
    assert dburl.normalize(url) == expected
    assert conninfo_to_dict(expected)  # and libpq reads the result


@pytest.mark.parametrize("url", ["postgresql://u:s3cret-tail@db:port/x", "postgresql://u:s3cret-tail@[db/x"])
def test_an_unreadable_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"DATABASE_URL": url}).require_database_url()
    assert "s3cret" not in str(caught.value)
    assert "percent-encoded" in str(caught.value)


def test_every_form_of_the_password_is_a_secret() -> None:
    settings = load_settings(environ={"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@db/shop"})
    secrets = settings.secrets()
    assert ODD_PASSWORD in secrets and quote(ODD_PASSWORD, safe="") in secrets


@pytest.fixture
def odd_password_url(pg_admin_url: str, db_url: str) -> Iterator[str]:
    """This test's database, reached as a role whose password holds @ : / # ?, written unencoded."""
    params = conninfo_to_dict(db_url)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ODD_ROLE}")
        conn.execute(f"CREATE ROLE {ODD_ROLE} LOGIN SUPERUSER PASSWORD '{ODD_PASSWORD}'")
    host = quote(str(params.get("host", "")), safe="")
    port = f"&port={params['port']}" if params.get("port") else ""
    yield f"postgresql://{ODD_ROLE}:{ODD_PASSWORD}@/{params['dbname']}?host={host}{port}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ODD_ROLE}")


def test_an_unencoded_password_connects(cli: Any, odd_password_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", odd_password_url)
    result = cli("payments", "--json")
    assert result.exit_code == 0, result
    assert result.json() == {"payments": []}


def test_an_unreachable_server_behind_an_odd_password_leaks_nothing(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://shop:{ODD_PASSWORD}@127.0.0.1:1/shop")
    result = cli("payments")
    assert result.exit_code == 3, result
    assert result.stderr.startswith("Error: cannot connect to PostgreSQL")
    out = result.stdout + result.stderr
    for piece in (ODD_PASSWORD, "ss:w", "rd#1", "w/rd", quote(ODD_PASSWORD, safe="")):
        assert piece not in out


# --- a Midtrans that echoes the Authorization header ------------------------------------


class EchoingMidtrans(BaseHTTPRequestHandler):
    """Answers as Midtrans would, but with the request's Authorization header copied everywhere."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _echoed(self, status_code: str, extra: dict[str, Any]) -> dict[str, Any]:
        auth = self.headers.get("Authorization", "")
        return {
            "status_code": status_code,
            "status_message": f"Echo: {auth}",
            "debug": {"headers": {"Authorization": auth}, "key": auth.removeprefix("Basic ")},
            **extra,
        }

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        details = request.get("transaction_details", {})
        auth = self.headers.get("Authorization", "")
        if str(details.get("order_id", "")).startswith("reject-"):
            self._answer(self._echoed("400", {}))
            return
        self._answer(self._echoed("201", {
            "transaction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(details.get("order_id")))),
            "order_id": details.get("order_id"),
            "gross_amount": f"{details.get('gross_amount')}.00",
            "payment_type": "qris",
            "transaction_status": "pending",
            "actions": [{"name": "generate-qr-code", "method": "GET", "url": f"https://qr.example/x?auth={auth}"}],
            "qr_string": f"00020101{auth}",
        }))

    def do_GET(self) -> None:
        order_id = self.path.split("/")[2]
        self._answer(self._echoed("201", {
            "transaction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, order_id)),
            "order_id": order_id,
            "gross_amount": "25000.00",
            "payment_type": "qris",
            "transaction_status": "pending",
        }))


@pytest.fixture
def echoing_midtrans(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingMidtrans)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MIDTRANS_API_URL", url)
    yield url
    server.shutdown()
    server.server_close()


def test_echoed_keys_are_never_stored_nor_printed(cli: Any, echoing_midtrans: str, db_url: str) -> None:
    runs = [
        cli("charge", "--amount", "25000", "--order-id", "echo-1", "--qris"),
        cli("charge", "--amount", "25000", "--order-id", "echo-2", "--qris", "--json"),
        cli("charge", "--amount", "25000", "--order-id", "reject-1"),
        cli("status", "echo-1"),
        cli("status", "echo-1", "--json"),
        cli("status", "reject-1", "--json"),
        cli("payments"),
        cli("payments", "--json"),
    ]
    assert [r.exit_code for r in runs] == [0, 0, 1, 0, 0, 0, 0, 0], runs
    for result in runs:
        assert forbidden_in(result.stdout + result.stderr) == [], result
    assert "***" in runs[4].stdout  # the echo is there, masked
    with psycopg.connect(db_url) as conn:
        stored = [json.dumps(r[0]) for r in conn.execute("SELECT midtrans_response_json FROM payment_transactions")]
    assert len(stored) == 3
    for raw in stored:
        assert forbidden_in(raw) == []


# --- every command, failing in each way the tests can make it fail ----------------------

NOWHERE = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("case", "args", "overrides"),
    [
        ("wrong key", ("status", "order-x"), {"MIDTRANS_SERVER_KEY": "SB-Mid-server-wrong-key-0000"}),
        ("midtrans unreachable", ("charge", "--amount", "1000"), {"MIDTRANS_API_URL": NOWHERE}),
        ("midtrans unreachable", ("reconcile", "--min-age", "0", "--json"), {"MIDTRANS_API_URL": NOWHERE}),
        ("database unreachable", ("payments",), {"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@127.0.0.1:1/x"}),
        ("database unreachable", ("migrate", "--status"), {"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@127.0.0.1:1/x"}),
        ("database url unreadable", ("events",), {"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@db:port/x"}),
        ("database url unreadable", ("status", "x"), {"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@[x/x"}),
        ("bad input", ("replay-webhook", "/nonexistent/notif.json"), {}),
        ("doctor", ("doctor",), {"MIDTRANS_API_URL": NOWHERE}),
        ("doctor", ("doctor", "--json"), {"DATABASE_URL": f"postgresql://shop:{ODD_PASSWORD}@127.0.0.1:1/x"}),
    ],
)
def test_no_secret_in_any_failure(
    cli: Any, monkeypatch: pytest.MonkeyPatch, case: str, args: tuple[str, ...], overrides: dict[str, str]
) -> None:
    if case in ("wrong key", "midtrans unreachable"):  # an open payment to ask Midtrans about
        assert cli("charge", "--amount", "1000", "--order-id", "order-x").exit_code == 0
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    result = cli(*args)
    assert result.exit_code in (1, 2, 3), result
    also = [ODD_PASSWORD, "ss:w/rd", "rd#1?x", *key_forms(overrides.get("MIDTRANS_SERVER_KEY", SERVER_KEY))]
    assert forbidden_in(result.stdout + result.stderr, *also) == [], result


def test_a_key_stored_before_the_scrubbing_is_masked_on_the_way_out(cli: Any, db_url: str) -> None:
    # A row written by an older version (or the Node backend) that kept an echoed header.
    answer = {"actions": [{"name": "deeplink-redirect", "method": "GET", "url": f"https://x.example/?a={TOKEN}"}],
              "qr_string": SERVER_KEY}
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, midtrans_response_json)"
            " VALUES ('old-1', 1000, 'qris', 'settlement', %s)",
            (json.dumps(answer),),
        )
    for args in (("status", "old-1", "--json"), ("status", "old-1"), ("payments", "--json")):
        result = cli(*args)
        assert result.exit_code == 0, result
        assert forbidden_in(result.stdout + result.stderr) == [], result
        assert "***" in result.stdout or args == ("status", "old-1")
