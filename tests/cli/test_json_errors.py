"""--json prints exactly one JSON document on stdout on every path, the early failures too.

A failure before the command has a document of its own is the whole document, on one
line: ``{"error": "…", "exit_code": N}``; a failure after it adds "error" and
"exit_code" to it. The ``Error: …`` line still goes to stderr, and "error" is that line
without its ``Error: `` prefix. The early failures: a database that cannot be reached
(a port nothing listens on), a missing variable, a database never migrated, Midtrans
out of reach.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import typer.main

from midpay.cli import app

from ..conftest import SERVER_KEY

# Every command with --json, and arguments that get it past parsing (an order that need not exist).
COMMANDS: dict[str, tuple[str, ...]] = {
    "charge": ("charge", "--amount", "10000", "--order-id", "json-1"),
    "status": ("status", "json-1"),
    "payments": ("payments",),
    "reconcile": ("reconcile", "--min-age", "0"),
    "replay-webhook": ("replay-webhook", "-"),
    "events": ("events",),
    "events reprocess": ("events", "reprocess"),
    "cancel": ("cancel", "json-1", "--yes"),
    "expire": ("expire", "json-1", "--yes"),
    "refund": ("refund", "json-1", "--yes"),
    "migrate": ("migrate",),
    "doctor": ("doctor",),
    "db status": ("db", "status"),
    "db start": ("db", "start"),
    "db stop": ("db", "stop"),
    "endpoints add": ("endpoints", "add", "https://shop.example/hooks"),
    "endpoints list": ("endpoints", "list"),
    **{f"endpoints {c}": ("endpoints", c, "we_json") for c in ("remove", "disable", "enable", "rotate-secret")},
    "deliveries": ("deliveries",),
    "deliveries resend": ("deliveries", "resend", "--failed"),
    "deliver": ("deliver", "--once"),
}
# The commands that need the database before anything else.
DATABASE = [name for name in COMMANDS if name != "doctor" and not name.startswith("db ")]
UNMIGRATED = [name for name in DATABASE if name != "migrate"]  # migrate brings an empty database up
NEEDS_KEY = ["charge", "reconcile", "replay-webhook", "events reprocess", "cancel", "expire", "refund"]
NOTIFICATION = "{}"  # what replay-webhook reads on stdin (never decided: every failure here comes first)


def _json_commands() -> set[str]:
    def walk(group: Any, path: tuple[str, ...]) -> Any:
        for name, command in group.commands.items():
            here = (*path, name)
            if any("--json" in getattr(p, "opts", ()) for p in command.params):
                yield " ".join(here)
            if hasattr(command, "commands"):
                yield from walk(command, here)

    return set(walk(typer.main.get_command(app), ()))


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_document(result: Any, exit_code: int) -> dict[str, Any]:
    """stdout is exactly one JSON document (json.loads refuses anything after it) and the exit code is right."""
    assert result.exit_code == exit_code, result
    assert "Traceback" not in result.stdout + result.stderr, result
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict), result
    return doc


def failure(result: Any, exit_code: int) -> dict[str, Any]:
    """One document carrying the failure, which is also the one ``Error: …`` line on stderr."""
    doc = one_document(result, exit_code)
    assert doc["exit_code"] == exit_code, doc
    lines = result.stderr.splitlines()
    assert lines[-1] == f"Error: {doc['error']}", result
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], result
    return doc


def test_the_table_names_every_command_with_json() -> None:
    assert _json_commands() == set(COMMANDS)


@pytest.mark.parametrize("name", DATABASE)
def test_a_database_nothing_listens_on(cli: Any, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://shop:pw-never-printed@127.0.0.1:{_free_port()}/shop")
    result = cli(*COMMANDS[name], "--json", input=NOTIFICATION)
    doc = failure(result, 3)
    assert doc["error"].startswith("cannot connect to PostgreSQL"), doc
    assert "pw-never-printed" not in result.stdout + result.stderr
    if name == "reconcile":  # reconcile's document has its shape on every path
        assert doc == {"results": [], "summary": {"checked": 0, "changed": 0, "unchanged": 0, "errors": 0},
                       "error": doc["error"], "exit_code": 3}
    else:
        assert set(doc) == {"error", "exit_code"}, doc


@pytest.mark.parametrize("name", DATABASE)
def test_database_url_missing(cli: Any, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv("DATABASE_URL")
    doc = failure(cli(*COMMANDS[name], "--json", input=NOTIFICATION), 2)
    assert doc["error"].startswith("DATABASE_URL is not set"), doc


@pytest.mark.parametrize("name", NEEDS_KEY)
def test_server_key_missing(cli: Any, monkeypatch: pytest.MonkeyPatch, db_url: str, name: str) -> None:
    monkeypatch.delenv("MIDTRANS_SERVER_KEY")
    doc = failure(cli(*COMMANDS[name], "--json", input=NOTIFICATION), 2)
    assert doc["error"].startswith("MIDTRANS_SERVER_KEY is not set"), doc


@pytest.mark.parametrize("name", UNMIGRATED)
def test_a_database_never_migrated(cli: Any, monkeypatch: pytest.MonkeyPatch, empty_db_url: str, name: str) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    doc = failure(cli(*COMMANDS[name], "--json", input=NOTIFICATION), 2)
    assert doc["error"] == "the database has none of midpay's tables yet: run `midpay migrate`"


@pytest.mark.parametrize("name", [name for name in COMMANDS if name.startswith("db ")])
def test_an_unusable_midpay_home(cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MIDPAY_HOME", str(tmp_path / "a-file" / "home"))
    doc = failure(cli(*COMMANDS[name], "--json"), 2)
    assert doc["error"].startswith("MIDPAY_HOME must be a directory"), doc


def test_doctor_reports_in_its_own_document(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://shop@127.0.0.1:{_free_port()}/shop")
    doc = one_document(cli("doctor", "--json"), 1)  # a failed check: the document says which, no Error: line
    assert doc["ok"] is False and "error" not in doc
    assert [c["status"] for c in doc["checks"] if c["name"] == "database"] == ["fail"]


@pytest.mark.parametrize("name", ["charge", "cancel"])
def test_midtrans_out_of_reach(cli: Any, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    order_id = "json-1"
    if name == "cancel":
        assert cli("charge", "--amount", "10000", "--order-id", order_id).exit_code == 0
    monkeypatch.setenv("MIDTRANS_API_URL", f"http://127.0.0.1:{_free_port()}")
    result = cli(*COMMANDS[name], "--json")
    doc = failure(result, 3)
    assert set(doc) == {"error", "exit_code"} and "Midtrans" in doc["error"], doc
    assert SERVER_KEY not in result.stdout + result.stderr


def test_a_document_that_fails_after_it_keeps_its_fields(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("charge", "--amount", "12000", "--order-id", "json-2").exit_code == 0
    monkeypatch.setenv("MIDTRANS_API_URL", f"http://127.0.0.1:{_free_port()}")
    doc = failure(cli("status", "json-2", "--json"), 3)  # the stored row, and why it could not be refreshed
    assert doc["order_id"] == "json-2" and doc["status"] == "pending" and doc["gross_amount"] == 12000
    assert "Midtrans" in doc["error"]


def test_a_usage_error(cli: Any) -> None:
    doc = failure(cli("payments", "--limit", "0", "--json"), 2)
    assert doc["error"].startswith("Invalid value for '--limit'"), doc
    doc = failure(cli("payments", "--status", "paid", "--json"), 2)
    assert doc["error"].startswith("--status must be one of"), doc


def test_a_declined_confirmation(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import midpay.cli.operator

    assert cli("charge", "--amount", "10000", "--order-id", "json-3").exit_code == 0
    monkeypatch.setattr(midpay.cli.operator, "_must_ask", lambda action, yes: True)  # as if on a terminal
    result = cli("cancel", "json-3", "--json", input="n\n")
    assert result.exit_code == 1 and "Aborted: nothing was changed." in result.stderr
    echoed, document = result.stdout.split("\n", 1)  # CliRunner echoes the typed answer to stdout; a terminal would not
    assert echoed.strip() == "n"
    assert json.loads(document) == {"error": "aborted: nothing was changed", "exit_code": 1}


def test_reconcile_in_a_real_process_against_a_closed_port(cli_process: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's own case: a cron job appending to a .jsonl file gets one line, exit 3."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://shop@127.0.0.1:{_free_port()}/shop")
    result = cli_process("reconcile", "--min-age", "0", "--json")
    doc = failure(result, 3)
    assert result.stdout.count("\n") == 1 and doc["summary"]["checked"] == 0
