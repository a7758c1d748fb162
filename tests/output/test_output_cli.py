"""What the commands print: data never acts on the terminal, money stays whole at 80 columns, WIB times.

Hostile values reach every printing command the ways they do in life: rows written
by another backend, notification bodies and file names from outside, and a Midtrans
(a local HTTP server here) whose messages carry markup and escape sequences.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.errors import UsageError
from midpay.midtrans.notifications import JAKARTA
from midpay.payments import operations

HOSTILE_IDS = [
    "[/red]",
    "shop[/]42",
    "[link=http://evil.example/login]Session expired[/link]",
    "clear\x1b[2J\x1b[Hscreen",
    "osc\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "title\x1b]0;pwned\x07",
    "c1\x9b31mred",
    "bidi\u202eTXT.exe",
    "multi\nline\rover",
]
MARKUP_SHOWN = ["[/red]", "shop[/]42", "[link=http://evil.example/login]"]
EVIL_MESSAGE = "[link=http://evil.example/login]Session expired, log in again[/link] \x1b[2J\x1b]8;;http://evil.example\x07x"


def acted_on(out: str) -> list[str]:
    """Characters a terminal would act on, apart from Rich's own colour (SGR) sequences."""
    without_sgr = re.sub(r"\x1b\[[0-9;]*m", "", out)
    return [
        repr(ch) for ch in without_sgr
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")
    ]


def plain(out: str) -> str:
    """``out`` without Rich's colour codes (in terminal mode an escape is styled apart from its neighbours)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


def assert_inert(result: Any) -> None:
    assert "MarkupError" not in result.stderr and "unexpected" not in result.stderr, result
    for stream in (result.stdout, result.stderr):
        assert acted_on(stream) == [], result
        assert "\x1b]" not in stream, result  # no OSC: no hyperlink, no window title


def _insert(db_url: str, order_id: str, *, status: str = "pending", amount: int = 154600,
            response: dict[str, Any] | None = None, age_seconds: int = 120) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, midtrans_response_json,"
            " created_at, updated_at, paid_at) VALUES (%s, %s, 'qris', %s, %s, now() - make_interval(secs => %s),"
            " now(), CASE WHEN %s IN ('settlement', 'partial_refund') THEN now() END)",
            (order_id, amount, status, json.dumps(response or {}), age_seconds, status),
        )


@pytest.fixture(params=["plain", "terminal"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    """Plain output (a pipe), or Rich believing it drives a colour terminal (links and all)."""
    if request.param == "terminal":
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("TERM", "xterm-256color")
    return str(request.param)


def test_hostile_rows_print_as_text(cli: Any, db_url: str, mode: str) -> None:
    for i, order_id in enumerate(HOSTILE_IDS):
        actions = [{"name": "deeplink-redirect", "method": "GET", "url": f"https://x.example/{i}?{order_id}"}]
        _insert(db_url, order_id, status="settlement", response={"actions": actions, "qr_string": order_id})
    listing = cli("payments")
    assert listing.exit_code == 0
    assert_inert(listing)
    shown = plain(listing.stdout)
    for markup in MARKUP_SHOWN:
        assert markup in shown
    assert "\\x1b[2J" in shown and "\\u202e" in shown and "\\x9b" in shown
    for order_id in HOSTILE_IDS:
        for args in (("status", order_id, "--no-refresh"), ("status", order_id, "--json"), ("payments", "--json")):
            result = cli(*args)
            assert result.exit_code == 0, (args, result)
            assert_inert(result)
    assert json.loads(cli("status", "shop[/]42", "--json").stdout)["order_id"] == "shop[/]42"


def test_hostile_bodies_and_file_names_print_as_text(cli: Any, tmp_path: Path, mode: str) -> None:
    folder = tmp_path / "bodies"
    folder.mkdir()
    names = ["notif[bold]x.json", "esc\x1b[2Jname.json", "rtl\u202enosj.json"]
    for name, order_id in zip(names, HOSTILE_IDS, strict=False):
        body = {"order_id": order_id, "status_code": "200", "gross_amount": "1000.00",
                "transaction_status": EVIL_MESSAGE, "signature_key": "0" * 128}
        (folder / name).write_text(json.dumps(body))
    replay = cli("replay-webhook", "bodies")  # the environment runs in tmp_path
    assert replay.exit_code == 1, replay  # rejected (bad signature), but printed, not crashed
    assert_inert(replay)
    one = cli("replay-webhook", "bodies/notif[bold]x.json")
    assert "bodies/notif[bold]x.json" in plain(one.stdout)  # whole when there is room; literal always
    for args in (("events",), ("events", "--json"), ("events", "--rejected"), ("replay-webhook", "bodies", "--json")):
        result = cli(*args)
        assert result.exit_code in (0, 1), (args, result)
        assert_inert(result)
    assert "[/red]" in plain(cli("events").stdout)


class HostileMidtrans(BaseHTTPRequestHandler):
    """Every answer a refusal whose message carries markup, a clear-screen and a hyperlink."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _refuse(self) -> None:
        data = json.dumps({"status_code": "412", "status_message": EVIL_MESSAGE}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._refuse()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._refuse()


@pytest.fixture
def hostile_midtrans(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileMidtrans)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MIDTRANS_API_URL", url)
    yield url
    server.shutdown()
    server.server_close()


def test_hostile_midtrans_messages_print_as_text(cli: Any, db_url: str, hostile_midtrans: str, mode: str) -> None:
    _insert(db_url, "shop[/]42")
    _insert(db_url, "paid-1", status="settlement")
    runs = {
        "status": cli("status", "shop[/]42"),
        "cancel": cli("cancel", "shop[/]42", "--yes"),
        "refund": cli("refund", "paid-1", "--yes"),
        "charge": cli("charge", "--amount", "1000", "--order-id", "evil-1"),
        "reconcile": cli("reconcile", "--min-age", "0"),
        "reconcile json": cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json"),
    }
    for name, result in runs.items():
        assert result.exit_code in (1, 3), (name, result)
        assert_inert(result)
    assert "[link=http://evil.example/login]" in runs["cancel"].stderr
    assert "shop[/]42" in plain(runs["reconcile"].stdout)


def test_hostile_migration_rows_print_as_text(cli: Any, db_url: str, mode: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO midpay_schema_migrations (version, name, checksum, applied_at, execution_ms)"
            " VALUES (999, %s, %s, now(), 1)",
            ("999_[/red]\x1b[2J.sql", "[bold]" + "0" * 58),
        )
    result = cli("migrate", "--status")
    assert_inert(result)
    assert "999_[/red]\\x1b[2J.sql" in plain(result.stdout)


# --- money whole at 80 columns ------------------------------------------------------------

LONG_IDS = ["mp-20261126023853-4e96a13aae", "order-" + "9" * 44, "ops-1"]
AMOUNTS = [154_600, 1_234_567_890, 25_000]


def _rows(db_url: str) -> None:
    for order_id, amount in zip(LONG_IDS, AMOUNTS, strict=True):
        _insert(db_url, order_id, status="partial_refund", amount=amount)


@pytest.mark.parametrize("columns", [80, 60, 100])
def test_payments_keep_amounts_ids_and_times_whole(cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch,
                                                   columns: int) -> None:
    _rows(db_url)
    monkeypatch.setenv("COLUMNS", str(columns))
    out = cli("payments").stdout
    for order_id in LONG_IDS:
        assert order_id in out
    for amount in ("Rp 154.600", "Rp 1.234.567.890", "Rp 25.000"):
        assert amount in out
    assert "…" not in out
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out)) == 6  # created and paid at, to the second
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", out)  # no microseconds
    assert max(len(line) for line in out.splitlines()) <= columns


def test_payments_are_a_table_when_it_fits_and_with_wide(
    cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rows(db_url)
    monkeypatch.setenv("COLUMNS", "160")
    assert "┃ order id" in cli("payments").stdout
    monkeypatch.setenv("COLUMNS", "80")
    assert "┃ order id" not in cli("payments").stdout
    wide = cli("payments", "--wide").stdout
    assert "┃ order id" in wide and "Rp 1.234.567.890" in wide and LONG_IDS[1] in wide


def test_links_are_alone_on_their_lines(cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://api.sandbox.midtrans.com/v2/gopay/ec34c7d2-b268-412d-a131-9af5430c3e01/qr-code?size=large&x=1"
    _insert(db_url, "link-1", response={"actions": [{"name": "generate-qr-code", "method": "GET", "url": url}]})
    monkeypatch.setenv("COLUMNS", "80")
    out = cli("status", "link-1", "--no-refresh").stdout
    assert url in out.splitlines()
    assert "+07:00" not in out and " WIB" in out  # people see "… WIB", not ISO offsets


# --- times --------------------------------------------------------------------------------


def test_since_without_offset_is_wib_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert operations.parse_since("2026-12-02") == datetime(2026, 12, 2, tzinfo=JAKARTA)
        assert operations.parse_since("2026-12-02T10:00:00") == datetime(2026, 12, 2, 10, tzinfo=JAKARTA)
        assert operations.parse_since("2026-12-02T10:00:00+00:00").utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- small things -------------------------------------------------------------------------


def test_dry_run_says_would_apply(cli: Any, tmp_path: Path, sandbox: Any) -> None:
    from midpay.midtrans.notifications import compute_signature
    from tests.conftest import SERVER_KEY

    charged = cli("charge", "--amount", "25000", "--order-id", "dry-1", "--json")
    assert charged.exit_code == 0, charged
    sandbox.pay("dry-1", "settlement")  # what the confirmation will find
    body = {"order_id": "dry-1", "status_code": "200", "gross_amount": "25000.00", "transaction_status": "settlement",
            "transaction_id": charged.json()["midtrans_transaction_id"], "payment_type": "gopay"}
    body["signature_key"] = compute_signature("dry-1", "200", "25000.00", SERVER_KEY)
    path = tmp_path / "paid.json"
    path.write_text(json.dumps(body))
    result = cli("replay-webhook", str(path), "--dry-run")
    assert "would apply" in result.stdout
    assert "1 would apply" in result.stdout


@pytest.mark.parametrize(
    ("typed", "hint"),
    [("25.000", "write --amount 25000 for Rp 25.000"), ("25,000", "write --amount 25000 for Rp 25.000"),
     ("1.500.000", "write --amount 1500000 for Rp 1.500.000")],
)
def test_grouped_amounts_get_a_hint(cli: Any, typed: str, hint: str) -> None:
    result = cli("charge", "--amount", typed)
    assert result.exit_code == 2
    assert result.stderr == f"Error: --amount takes whole rupiah without separators: {hint}\n"


def test_other_amounts_are_refused_plainly() -> None:
    assert operations.parse_amount("25000") == 25000
    for typed in ("25000.50", "2,50", "abc", "25.00"):
        with pytest.raises(UsageError, match="whole number of rupiah"):
            operations.parse_amount(typed)
