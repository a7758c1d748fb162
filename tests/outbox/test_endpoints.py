"""`midpay endpoints`: add, list, remove, disable, enable, rotate-secret, through the real CLI and PostgreSQL.

The signing secret is printed by `add` and `rotate-secret` only, once; every other
output, and every error, leaves it out. Bad URLs and patterns are exit 2 with one line
that repeats no control character; an unknown endpoint is exit 1, like an unknown order.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from midpay.cli.boundary import describe
from midpay.cli.state import add_secrets, state
from midpay.errors import MidpayError
from midpay.outbox.endpoints import EVENT_TYPES, secret_forms

SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{32}")


def _only_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr
    return str(lines[0])


def _add(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("endpoints", "add", *args, "--json")
    assert result.exit_code == 0, result
    doc: dict[str, Any] = result.json()
    return doc


def _stored(db_url: str, endpoint_id: str) -> tuple[Any, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT url, events, description, enabled, disabled_reason, secret, previous_secret, "
            "previous_secret_until - now() FROM webhook_endpoints WHERE id = %s",
            (endpoint_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_add_prints_the_id_and_the_secret_once_and_stores_them(cli: Any, db_url: str) -> None:
    doc = _add(cli, "https://shop.example/hooks/midpay", "--events", "payment.paid, payment.refund,payment.paid",
               "--description", "fulfilment")
    assert set(doc) == {"id", "url", "events", "description", "enabled", "disabled_reason",
                        "previous_secret_until", "created_at", "secret"}
    assert re.fullmatch(r"we_[0-9a-f]{24}", doc["id"])
    assert doc["url"] == "https://shop.example/hooks/midpay" and doc["enabled"] is True
    assert doc["events"] == ["payment.paid", "payment.refund"] and doc["description"] == "fulfilment"
    assert doc["created_at"].endswith("+07:00") and doc["previous_secret_until"] is None
    assert SECRET.fullmatch(doc["secret"]) and len(base64.b64decode(doc["secret"][6:])) == 24
    url, events, description, enabled, _, secret, previous, _ = _stored(db_url, doc["id"])
    assert (url, events, description, enabled, secret, previous) == (
        "https://shop.example/hooks/midpay", ["payment.paid", "payment.refund"], "fulfilment", True,
        doc["secret"], None,
    )

    text = cli("endpoints", "add", "http://127.0.0.1:3000/events")
    assert text.exit_code == 0, text
    shown = SECRET.findall(text.stdout)
    assert len(shown) == 1 and "shown once" in text.stdout and "we_" in text.stdout
    assert shown[0] not in text.stderr


def test_the_default_is_every_event_and_patterns_are_checked(cli: Any) -> None:
    assert _add(cli, "http://localhost/a")["events"] == ["*"]
    assert _add(cli, "http://localhost/b", "--events", "payment.*")["events"] == ["payment.*"]
    for bad, words in [
        ("payment.bogus", "unknown event type 'payment.bogus'"),
        ("payment.paid,nothing.*", "'nothing.*' matches no event type"),
        ("pay*ment.*", "matches no event type"),
        (" , ", "--events needs at least one"),
        ("payment.paid\x1b[2J", "unknown event type 'payment.paid\\x1b[2J'"),
    ]:
        result = cli("endpoints", "add", "http://localhost/c", "--events", bad)
        assert result.exit_code == 2, result
        line = _only_line(result)
        assert words in line and "\x1b" not in result.stderr
    assert set(EVENT_TYPES) >= {"payment.pending", "payment.settlement", "payment.capture", "payment.deny",
                                "payment.cancel", "payment.expire", "payment.failure", "payment.partial_refund",
                                "payment.refund", "payment.paid"}


@pytest.mark.parametrize("url", [
    "ftp://shop.example/x", "shop.example/hooks", "https://", "http:///path", "https://shop.example:99999/",
    "http://shop example/", "http://shop.example/\x1b]8;;evil\x07", "http://shop.example/a\nb",
    "https://shop.example/hook#frag", "",
])
def test_a_url_that_is_not_http_with_a_host_is_exit_2_without_control_characters(cli: Any, url: str) -> None:
    result = cli("endpoints", "add", url, "--json")
    assert result.exit_code == 2, result
    line = _only_line(result)
    assert line.startswith("Error: the endpoint URL must")
    assert not any(ch in result.stderr for ch in "\x1b\x07")
    assert result.json()["exit_code"] == 2 and result.json()["error"] == line.removeprefix("Error: ")


def test_a_url_with_a_password_is_refused_without_repeating_it(cli: Any, db_url: str) -> None:
    for url in ("https://shop:hunter2secret@shop.example/hooks", "https://shop:hunter2secret@shop.example/a b",
                "ftp://shop:hunter2secret@a@shop.example:0/"):
        result = cli("endpoints", "add", url)
        assert result.exit_code == 2
        assert "hunter2secret" not in result.stderr + result.stdout
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM webhook_endpoints").fetchone() == (0,)


def test_list_shows_every_endpoint_and_no_secret(cli: Any) -> None:
    first = _add(cli, "https://shop.example/one", "--description", "[b]no markup[/b]")
    second = _add(cli, "https://shop.example/two", "--events", "payment.paid")
    listed = cli("endpoints", "list", "--json")
    assert listed.exit_code == 0, listed
    endpoints = listed.json()["endpoints"]
    assert [e["id"] for e in endpoints] == [first["id"], second["id"]]
    assert all("secret" not in e for e in endpoints)
    text = cli("endpoints", "list")
    assert text.exit_code == 0, text
    for doc in (first, second):
        assert doc["secret"] not in listed.stdout + text.stdout
        assert doc["id"] in text.stdout and doc["url"] in text.stdout
    assert "[b]no markup[/b]" in text.stdout


def test_an_empty_list(cli: Any) -> None:
    assert cli("endpoints", "list", "--json").json() == {"endpoints": []}
    assert "No endpoints" in cli("endpoints", "list").stdout


@pytest.mark.parametrize("command", ["remove", "disable", "enable", "rotate-secret"])
def test_an_unknown_endpoint_is_exit_1_like_an_unknown_order(cli: Any, command: str) -> None:
    result = cli("endpoints", command, "we_nothere\x1b[31m", "--json")
    assert result.exit_code == 1, result
    line = _only_line(result)
    assert line.startswith("Error: no such endpoint: 'we_nothere\\x1b[31m'") and "\x1b" not in result.stderr
    assert result.json() == {"error": line.removeprefix("Error: "), "exit_code": 1}


def _payment(db_url: str, order_id: str, *statuses: str) -> None:
    """A payment moved through ``statuses`` with plain SQL: the outbox trigger writes its events."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES (%s, 15000, 'gopay', 'created')",
            (order_id,),
        )
        for status in statuses:
            conn.execute(
                "UPDATE payment_transactions SET status = %s, paid_at = CASE WHEN %s IN ('settlement', 'capture') "
                "THEN COALESCE(paid_at, now()) ELSE paid_at END WHERE order_id = %s",
                (status, status, order_id),
            )


def _deliveries(db_url: str, endpoint_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT d.sequence, e.type FROM webhook_deliveries d JOIN payment_events e ON e.id = d.event_id "
            "WHERE d.endpoint_id = %s ORDER BY d.order_id, d.sequence",
            (endpoint_id,),
        ).fetchall()


def test_disable_and_enable_decide_which_events_make_deliveries(cli: Any, db_url: str) -> None:
    endpoint = _add(cli, "https://shop.example/hooks", "--events", "payment.paid")
    disabled = cli("endpoints", "disable", endpoint["id"], "--json")
    assert disabled.exit_code == 0, disabled
    assert disabled.json()["enabled"] is False and disabled.json()["disabled_reason"]
    assert "secret" not in disabled.json()
    _payment(db_url, "E-1", "pending", "settlement")
    assert _deliveries(db_url, endpoint["id"]) == []
    assert "disabled" in cli("endpoints", "list").stdout

    enabled = cli("endpoints", "enable", endpoint["id"], "--json")
    assert enabled.exit_code == 0, enabled
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
    _payment(db_url, "E-2", "pending", "settlement")
    assert _deliveries(db_url, endpoint["id"]) == [(3, "payment.paid")]


def test_rotate_secret_prints_the_new_one_once_and_keeps_the_old_signing_for_a_day(cli: Any, db_url: str) -> None:
    endpoint = _add(cli, "https://shop.example/hooks")
    rotated = cli("endpoints", "rotate-secret", endpoint["id"], "--json")
    assert rotated.exit_code == 0, rotated
    doc = rotated.json()
    new = doc["secret"]
    assert SECRET.fullmatch(new) and new != endpoint["secret"]
    assert endpoint["secret"] not in rotated.stdout + rotated.stderr
    _, _, _, _, _, secret, previous, left = _stored(db_url, endpoint["id"])
    assert (secret, previous) == (new, endpoint["secret"])
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)
    until = datetime.fromisoformat(doc["previous_secret_until"])
    assert until.utcoffset() == timedelta(hours=7)

    text = cli("endpoints", "rotate-secret", endpoint["id"])
    assert text.exit_code == 0, text
    assert len(SECRET.findall(text.stdout)) == 1 and new not in text.stdout  # the new-new one only
    _, _, _, _, _, newest, previous, _ = _stored(db_url, endpoint["id"])
    assert previous == new and newest in text.stdout  # the first secret is dropped: two sign at most
    assert cli("endpoints", "list", "--json").json()["endpoints"][0]["previous_secret_until"] is not None
    assert "previous" in cli("endpoints", "list").stdout  # the note (it may wrap in its cell)


def test_remove_deletes_the_endpoint_and_its_deliveries(cli: Any, db_url: str) -> None:
    endpoint = _add(cli, "https://shop.example/hooks")
    _payment(db_url, "R-1", "pending")
    assert _deliveries(db_url, endpoint["id"]) == [(1, "payment.pending")]
    removed = cli("endpoints", "remove", endpoint["id"], "--json")
    assert removed.exit_code == 0, removed
    assert removed.json()["id"] == endpoint["id"] and "secret" not in removed.json()
    assert cli("endpoints", "list", "--json").json() == {"endpoints": []}
    assert _deliveries(db_url, endpoint["id"]) == []
    assert cli("endpoints", "remove", endpoint["id"]).exit_code == 1


def test_an_unmigrated_database_is_exit_2(cli: Any, empty_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    for args in (("endpoints", "list"), ("endpoints", "add", "https://shop.example/x")):
        result = cli(*args, "--json")
        assert result.exit_code == 2, result
        assert "midpay migrate" in _only_line(result)


def test_a_secret_this_run_knows_is_redacted_from_every_error_line() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdefghijklmn").decode()
    saved = (state.signing_secrets, state.shown)
    try:
        add_secrets(secret_forms(secret))
        line, code = describe(MidpayError(f"the receiver said {secret} and {secret[6:]}"))
        assert (line, code) == ("the receiver said *** and ***", 1)
    finally:
        state.signing_secrets, state.shown = saved


@pytest.mark.parametrize("args", [
    ("endpoints",), ("endpoints", "add"), ("endpoints", "list"), ("endpoints", "remove"), ("endpoints", "disable"),
    ("endpoints", "enable"), ("endpoints", "rotate-secret"),
])
def test_every_help(cli: Any, args: tuple[str, ...]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0, result
    assert "Usage:" in result.stdout


def test_a_real_process_prints_the_secret_it_makes_and_masks_it_elsewhere(cli_process: Any, db_url: str) -> None:
    added = cli_process("endpoints", "add", "https://shop.example/hooks", "--json")
    assert added.exit_code == 0, added
    secret = added.json()["secret"]
    assert SECRET.fullmatch(secret) and secret not in added.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT secret FROM webhook_endpoints").fetchone() == (secret,)
        conn.execute("INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
                     "VALUES ('P-1', 15000, 'gopay', 'pending')")
        conn.execute("UPDATE webhook_deliveries SET status = 'failed', last_error = %s", (f"echoed {secret}",))
    listed = cli_process("deliveries", "--failed", "--json")
    assert listed.exit_code == 0, listed
    assert listed.json()["deliveries"][0]["last_error"] == "echoed ***"
