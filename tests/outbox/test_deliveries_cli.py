"""`midpay deliveries` and `deliveries resend`, through the real CLI and PostgreSQL.

The outbox trigger makes the events and their deliveries from real status changes
(plain SQL as any backend sharing the table, and midpay's own `charge` and `status`);
what `midpay deliver` would record (outcomes, attempts, leases) is written here with SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.outbox.test_endpoints import _payment


def _add(cli: Any, url: str, *args: str) -> str:
    result = cli("endpoints", "add", url, *args, "--json")
    assert result.exit_code == 0, result
    return str(result.json()["id"])


def _sql(db_url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _event(db_url: str, order_id: str, sequence: int) -> str:
    rows = _sql(db_url, "SELECT id FROM payment_events WHERE order_id = %s AND sequence = %s", (order_id, sequence))
    return str(rows[0][0])


def _fail(db_url: str, event_id: str, endpoint_id: str, errors: list[tuple[int | None, str | None]]) -> None:
    """What `deliver` leaves after these attempts ended a delivery as failed."""
    for code, error in errors:
        _sql(db_url, "INSERT INTO webhook_attempts (event_id, endpoint_id, status_code, duration_ms, error) "
             "VALUES (%s, %s, %s, 12, %s)", (event_id, endpoint_id, code, error))
    code, error = errors[-1]
    _sql(db_url, "UPDATE webhook_deliveries SET status = 'failed', attempts = %s, last_status_code = %s, "
         "last_error = %s, next_attempt_at = now() + interval '1 day' WHERE event_id = %s AND endpoint_id = %s",
         (len(errors), code, error, event_id, endpoint_id))


@pytest.fixture
def shop(cli: Any, db_url: str) -> dict[str, str]:
    """Two endpoints (every event; payment.paid only) and two orders' events."""
    every = _add(cli, "https://shop.example/all")
    paid = _add(cli, "https://shop.example/paid", "--events", "payment.paid")
    _payment(db_url, "D-1", "pending", "settlement")  # pending (1), settlement (2), paid (3)
    _payment(db_url, "D-2", "pending", "expire")  # pending (1), expire (2)
    return {"every": every, "paid": paid}


KEYS = {"event_id", "endpoint_id", "order_id", "type", "sequence", "status", "attempts", "last_status_code",
        "last_error", "next_attempt_at", "delivered_at"}


def test_the_list_is_newest_first_and_filtered(cli: Any, db_url: str, shop: dict[str, str]) -> None:
    result = cli("deliveries", "--json")
    assert result.exit_code == 0, result
    found = result.json()["deliveries"]
    assert all(set(d) == KEYS for d in found)
    assert [(d["order_id"], d["sequence"], d["type"]) for d in found] == [
        ("D-2", 2, "payment.expire"), ("D-2", 1, "payment.pending"), ("D-1", 3, "payment.paid"),
        ("D-1", 3, "payment.paid"), ("D-1", 2, "payment.settlement"), ("D-1", 1, "payment.pending"),
    ]
    assert {d["endpoint_id"] for d in found[2:4]} == set(shop.values())
    assert {d["endpoint_id"] for d in found[:2] + found[4:]} == {shop["every"]}
    first = found[0]
    assert first["status"] == "pending" and first["attempts"] == 0 and first["delivered_at"] is None
    assert first["next_attempt_at"].endswith("+07:00") and first["event_id"].startswith("evt_")

    only = cli("deliveries", "--endpoint", shop["paid"], "--json").json()["deliveries"]
    assert [(d["order_id"], d["type"]) for d in only] == [("D-1", "payment.paid")]
    order = cli("deliveries", "--order-id", "D-1", "--limit", "2", "--json").json()["deliveries"]
    assert [d["sequence"] for d in order] == [3, 3]
    assert cli("deliveries", "--failed", "--json").json() == {"deliveries": []}
    unknown = cli("deliveries", "--endpoint", "we_nothere", "--json")
    assert unknown.exit_code == 1 and "no such endpoint" in unknown.json()["error"]


def test_every_attempt_is_kept_and_shown_as_text(cli: Any, db_url: str, shop: dict[str, str]) -> None:
    event = _event(db_url, "D-2", 2)
    long = "\x1b[31mconnection refused " + "x" * 600
    _fail(db_url, event, shop["every"], [(None, long), (500, "HTTP 500 [b]no[/b]"), (None, "timed out after 10 s")])

    failed = cli("deliveries", "--failed", "--attempts", "--json")
    assert failed.exit_code == 0, failed
    (only,) = failed.json()["deliveries"]
    assert set(only) == KEYS | {"attempt_log"}
    assert (only["event_id"], only["status"], only["attempts"]) == (event, "failed", 3)
    assert only["last_error"] == "timed out after 10 s" and only["next_attempt_at"] is None
    log = only["attempt_log"]
    assert [(a["status_code"], a["duration_ms"]) for a in log] == [(None, 12), (500, 12), (None, 12)]
    assert len(log[0]["error"]) == 500 and log[0]["error"].startswith("\x1b[31mconnection")
    assert "\\u001b[31m" in failed.stdout and "\x1b" not in failed.stdout
    assert all(a["attempted_at"].endswith("+07:00") for a in log)

    text = cli("deliveries", "--order-id", "D-2", "--attempts")
    assert text.exit_code == 0, text
    assert "Attempts" in text.stdout and "\\x1b[31m" in text.stdout and "\x1b" not in text.stdout
    assert "[b]no[/b]" in text.stdout and event in text.stdout  # ids whole, markup literal
    assert "x" * 501 not in text.stdout.replace("\n", "")


def test_a_secret_quoted_in_an_error_is_masked(cli: Any, db_url: str, shop: dict[str, str]) -> None:
    secret = str(_sql(db_url, "SELECT secret FROM webhook_endpoints WHERE id = %s", (shop["every"],))[0][0])
    event = _event(db_url, "D-1", 1)
    _fail(db_url, event, shop["every"], [(400, f"the receiver echoed {secret}")])
    for args in (("--json",), ("--attempts",), ("--attempts", "--json")):
        result = cli("deliveries", "--failed", *args)
        assert result.exit_code == 0, result
        assert secret not in result.stdout and secret[6:] not in result.stdout and "***" in result.stdout


def test_resend_queues_the_failed_ones_again_now_and_keeps_their_attempts(
    cli: Any, db_url: str, shop: dict[str, str]
) -> None:
    one, two = _event(db_url, "D-1", 3), _event(db_url, "D-2", 2)
    _fail(db_url, one, shop["paid"], [(500, "HTTP 500")])
    _fail(db_url, two, shop["every"], [(503, "HTTP 503"), (410, "HTTP 410")])
    _sql(db_url, "UPDATE webhook_deliveries SET leased_until = now() + interval '1 minute' WHERE event_id = %s",
         (two,))

    only = cli("deliveries", "resend", "--failed", "--endpoint", shop["paid"], "--json")
    assert only.exit_code == 0, only
    assert [(d["event_id"], d["endpoint_id"]) for d in only.json()["queued"]] == [(one, shop["paid"])]
    assert only.json()["in_flight"] == []

    every = cli("deliveries", "resend", "--failed")
    assert every.exit_code == 0, every
    assert "Queued again: 1 delivery" in every.stdout and two in every.stdout
    rows = _sql(db_url, "SELECT status, attempts, leased_until, next_attempt_at <= now(), last_status_code, "
                "(SELECT count(*) FROM webhook_attempts a WHERE a.event_id = d.event_id "
                "AND a.endpoint_id = d.endpoint_id) FROM webhook_deliveries d WHERE status = 'failed' "
                "OR event_id IN (%s, %s) AND endpoint_id IN (%s, %s) AND attempts > 0 ORDER BY attempts",
                (one, two, shop["every"], shop["paid"]))
    assert rows == [("pending", 1, None, True, 500, 1), ("pending", 2, None, True, 410, 2)]
    assert cli("deliveries", "resend", "--failed", "--json").json() == {"queued": [], "in_flight": []}


def test_resend_by_event_id_takes_every_endpoint_and_leaves_one_being_sent(
    cli: Any, db_url: str, shop: dict[str, str]
) -> None:
    paid = _event(db_url, "D-1", 3)
    _sql(db_url, "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), attempts = 1 "
         "WHERE event_id = %s AND endpoint_id = %s", (paid, shop["every"]))
    _sql(db_url, "UPDATE webhook_deliveries SET leased_until = now() + interval '1 minute' "
         "WHERE event_id = %s AND endpoint_id = %s", (paid, shop["paid"]))
    result = cli("deliveries", "resend", paid, "--json")
    assert result.exit_code == 0, result
    doc = result.json()
    assert [(d["endpoint_id"], d["status"], d["delivered_at"]) for d in doc["queued"]] == [
        (shop["every"], "pending", None)
    ]
    assert [d["endpoint_id"] for d in doc["in_flight"]] == [shop["paid"]]
    assert _sql(db_url, "SELECT leased_until IS NOT NULL FROM webhook_deliveries WHERE event_id = %s "
                "AND endpoint_id = %s", (paid, shop["paid"])) == [(True,)]
    text = cli("deliveries", "resend", paid, "--endpoint", shop["paid"])
    assert text.exit_code == 0 and "being sent right now" in text.stdout


def test_resend_refuses_unknown_events_and_queues_nothing(cli: Any, db_url: str, shop: dict[str, str]) -> None:
    known = _event(db_url, "D-1", 1)
    _fail(db_url, known, shop["every"], [(500, "HTTP 500")])
    result = cli("deliveries", "resend", known, "evt_nothere\x1b[2J", "--json")
    assert result.exit_code == 1, result
    assert result.json()["error"].startswith("no delivery of event 'evt_nothere\\x1b[2J'; nothing was queued")
    assert "\x1b" not in result.stderr
    assert _sql(db_url, "SELECT status FROM webhook_deliveries WHERE event_id = %s", (known,)) == [("failed",)]
    with_endpoint = cli("deliveries", "resend", known, "evt_nothere", "--endpoint", shop["paid"], "--json")
    assert with_endpoint.exit_code == 1
    assert with_endpoint.json()["error"] == "no such event: 'evt_nothere'; nothing was queued"
    assert _sql(db_url, "SELECT count(*) FROM webhook_deliveries WHERE event_id = %s", (known,)) == [(1,)]


def test_resend_to_an_endpoint_sends_an_event_it_never_had(cli: Any, db_url: str, shop: dict[str, str]) -> None:
    """An endpoint added (or disabled) after the event gets it when named: the backfill of a new app."""
    pending = _event(db_url, "D-1", 1)  # made before the endpoint existed, and not of its patterns
    later = _add(cli, "https://shop.example/later", "--events", "payment.paid")
    result = cli("deliveries", "resend", pending, "--endpoint", later, "--json")
    assert result.exit_code == 0, result
    assert [(d["event_id"], d["endpoint_id"], d["status"], d["attempts"]) for d in result.json()["queued"]] == [
        (pending, later, "pending", 0)
    ]
    again = cli("deliveries", "resend", pending, "--endpoint", later, "--json")  # no second delivery
    assert [d["endpoint_id"] for d in again.json()["queued"]] == [later]
    assert _sql(db_url, "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s", (later,)) == [(1,)]


@pytest.mark.parametrize("args", [(), ("evt_1", "--failed"), ("--endpoint", "we_x")])
def test_resend_wants_event_ids_or_failed(cli: Any, args: tuple[str, ...]) -> None:
    result = cli("deliveries", "resend", *args, "--json")
    assert result.exit_code == 2, result
    assert "give the EVENT_IDs to send again, or --failed" in result.json()["error"]


def test_options_before_the_subcommand_are_refused(cli: Any) -> None:
    result = cli("deliveries", "--failed", "resend", "--failed")
    assert result.exit_code == 2 and "after the subcommand" in result.stderr


def test_midpay_s_own_status_changes_make_deliveries(cli: Any, sandbox: Any, db_url: str) -> None:
    endpoint = _add(cli, "https://shop.example/all")
    charged = cli("charge", "--amount", "25000", "--json")
    assert charged.exit_code == 0, charged
    order_id = charged.json()["order_id"]
    sandbox.pay(order_id, "settlement")
    assert cli("status", order_id, "--json").json()["status"] == "settlement"
    result = cli("deliveries", "--order-id", order_id, "--json")
    assert result.exit_code == 0, result
    assert [(d["sequence"], d["type"], d["endpoint_id"]) for d in result.json()["deliveries"]] == [
        (3, "payment.paid", endpoint), (2, "payment.settlement", endpoint), (1, "payment.pending", endpoint),
    ]
    table = cli("deliveries", "--order-id", order_id)
    assert table.exit_code == 0 and order_id in table.stdout and "payment.settlement" in table.stdout
    assert datetime.fromisoformat(result.json()["deliveries"][0]["next_attempt_at"]).utcoffset() == timedelta(hours=7)


def test_help(cli: Any) -> None:
    for args in (("deliveries",), ("deliveries", "resend")):
        result = cli(*args, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout
