"""`midpay deliver --once`: signed deliveries verified by both real receivers, retries, giving up, 410, order.

Endpoints are written with SQL (as `midpay endpoints add` would) and payments moved with
SQL, so the outbox trigger writes the events; the receivers verify every request with
the real ``standardwebhooks`` packages (PyPI and npm). The running deliverer (LISTEN,
SIGTERM, several processes) is in test_deliver_running.py.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from ..helpers import wait_until
from .receivers.support import add_endpoint, attempts, deliveries, in_order, move, new_secret, pay, receiver

QUICK = ("--retry-base", "0.001")


@pytest.mark.parametrize("kind", ["python", "node"])
def test_every_event_arrives_signed_and_in_order(kind: str, db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver(kind, [secret]) as r:
        add_endpoint(db_url, r.url, secret)
        pay(db_url, ["ORD-1", "ORD-2"])
        result = cli("deliver", "--once", "--json")
        assert result.exit_code == 0, result
        assert result.json() == {"summary": {"delivered": 6, "retrying": 0, "failed": 0}}
        got = r.received()
    assert all(g["verified"] for g in got)
    assert in_order(got)
    assert sorted((g["order"], g["sequence"], g["type"]) for g in got) == [
        (o, n, t) for o in ("ORD-1", "ORD-2")
        for n, t in ((1, "payment.pending"), (2, "payment.settlement"), (3, "payment.paid"))
    ]
    rows = deliveries(db_url)
    assert {row["status"] for row in rows} == {"delivered"} and all(row["attempts"] == 1 for row in rows)
    assert [a["status_code"] for a in attempts(db_url)] == [204] * 6


@pytest.mark.parametrize("kind", ["python", "node"])
@pytest.mark.parametrize("holds", ["new", "old"])
def test_while_a_secret_rotates_a_receiver_with_either_one_verifies(kind: str, holds: str, db_url: str,
                                                                    cli: Any) -> None:
    new, old = new_secret(), new_secret()
    with receiver(kind, [new if holds == "new" else old]) as r:
        add_endpoint(db_url, r.url, new, previous_secret=old)
        pay(db_url, ["ORD-R"])
        assert cli("deliver", "--once").exit_code == 0
        got = r.received()
    assert [(g["verified"], g["signatures"]) for g in got] == [(True, 2)] * 3


def test_a_failing_endpoint_is_retried_with_the_same_id_and_body(db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        add_endpoint(db_url, r.url, secret, events=("payment.paid",))
        pay(db_url, ["ORD-F"])
        r.control(answer=500)
        first = cli("deliver", "--once", "--json", *QUICK)
        assert first.exit_code == 0 and first.json()["summary"] == {"delivered": 0, "retrying": 1, "failed": 0}
        r.control(answer=200)
        wait_until(lambda: cli("deliver", "--once", *QUICK).exit_code == 0 and deliveries(db_url)[0]["status"]
                   == "delivered", 10, what="the retry delivered")
        got = r.received()
    assert len(got) >= 2 and len({g["id"] for g in got}) == 1 and all(g["verified"] for g in got)
    tried = attempts(db_url)
    assert tried[0]["status_code"] == 500 and tried[0]["error"] == "HTTP 500" and tried[-1]["status_code"] == 200
    assert all(a["duration_ms"] is not None for a in tried)
    (row,) = deliveries(db_url)
    assert row["attempts"] == len(tried) and row["delivered_at"] is not None and row["last_status_code"] == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_down_for_good_fails_and_the_others_are_still_served(db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        down = add_endpoint(db_url, f"http://127.0.0.1:{_closed_port()}/hook", secret)
        up = add_endpoint(db_url, r.url, secret)
        pay(db_url, ["ORD-D"])
        result = cli("deliver", "--once", "--json", "--retry-base", "0.001", "--give-up-after", "0")
        got = r.received()
    assert result.exit_code == 1, result
    # Failed for good, the next event of the order is due at once: all three fail in this run.
    assert result.json()["summary"] == {"delivered": 3, "retrying": 0, "failed": 3}
    assert len(got) == 3 and all(g["verified"] for g in got)
    by_endpoint = {(row["endpoint_id"], row["status"]) for row in deliveries(db_url)}
    assert by_endpoint == {(down, "failed"), (up, "delivered")}
    assert {a["error"] for a in attempts(db_url) if a["endpoint_id"] == down} == {"connection refused"}
    assert "failed for good" in result.stderr
    assert secret not in result.stdout + result.stderr and secret[6:] not in result.stdout + result.stderr


def test_410_gone_disables_the_endpoint(db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        endpoint = add_endpoint(db_url, r.url, secret)
        pay(db_url, ["ORD-G"])
        r.control(answer=410)
        first = cli("deliver", "--once", "--json", *QUICK)
        move(db_url, "ORD-G", "refund")
        second = cli("deliver", "--once", "--json", *QUICK)
        got = r.received()
    assert first.json()["summary"] == {"delivered": 0, "retrying": 1, "failed": 0}
    assert second.json()["summary"] == {"delivered": 0, "retrying": 0, "failed": 0}
    assert len(got) == 1
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT enabled, disabled_reason FROM webhook_endpoints WHERE id = %s",
                           (endpoint,)).fetchone()
    assert row == (False, "410 Gone")
    assert {d["status"] for d in deliveries(db_url)} == {"pending"}  # kept for when it is enabled again


@pytest.mark.parametrize("mode", ["stall", "drop"])
def test_a_receiver_that_stalls_or_drops_the_connection_is_retried_later(mode: str, db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        add_endpoint(db_url, r.url, secret, events=("payment.paid",))
        pay(db_url, ["ORD-S"])
        r.control(mode=mode)
        result = cli("deliver", "--once", "--json", "--timeout", "0.2", "--retry-base", "60")
        r.control(mode="answer")
    assert result.exit_code == 0 and result.json()["summary"] == {"delivered": 0, "retrying": 1, "failed": 0}
    (tried,) = attempts(db_url)
    assert tried["status_code"] is None
    dropped = {"the receiver closed the connection without an answer", "connection reset by the receiver"}
    assert tried["error"] in ({"no answer within 0.2 s"} if mode == "stall" else dropped)


def test_an_order_s_next_event_waits_for_the_one_before(db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        add_endpoint(db_url, r.url, secret)
        pay(db_url, ["ORD-O"])
        r.control(answer=503)
        cli("deliver", "--once", "--retry-base", "60")
        assert [g["sequence"] for g in r.received()] == [1]  # 2 and 3 wait for 1
        r.control(answer=204)
        with_retry_due = "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'pending'"
        import psycopg

        with psycopg.connect(db_url) as conn:
            conn.execute(with_retry_due)
        assert cli("deliver", "--once").exit_code == 0
        got = r.received()
    assert [g["sequence"] for g in got] == [1, 1, 2, 3]


def test_an_event_that_cannot_be_rendered_is_a_failed_attempt_not_the_end_of_the_run(db_url: str, cli: Any) -> None:
    secret = new_secret()
    with receiver("python", [secret]) as r:
        add_endpoint(db_url, r.url, secret, events=("payment.paid",))
        pay(db_url, ["ORD-BAD", "ORD-OK"])
        import psycopg

        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE payment_events SET payment = payment || '{\"gross_amount\": \"lots\"}'"
                         " WHERE order_id = 'ORD-BAD'")
        result = cli("deliver", "--once", "--json", "--retry-base", "60")
        got = r.received()
    assert result.exit_code == 0 and result.json()["summary"] == {"delivered": 1, "retrying": 1, "failed": 0}
    assert [g["order"] for g in got] == ["ORD-OK"]
    (broken,) = [a for a in attempts(db_url) if a["status_code"] is None]
    assert broken["error"].startswith("the event could not be rendered: ")


def test_retries_double_from_the_base_with_jitter_and_at_most_two_hours_apart() -> None:
    from midpay.outbox.deliver import retry_delay

    assert [retry_delay(n, 5, rng=lambda lo, hi: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay(1, 5, rng=lambda lo, hi: lo) == pytest.approx(4.0)
    assert retry_delay(1, 5, rng=lambda lo, hi: hi) == pytest.approx(6.0)
    assert retry_delay(30, 5, rng=lambda lo, hi: hi) == 7200 and retry_delay(10_000, 5) <= 7200


def test_nothing_due_is_an_empty_summary_and_text_says_so(db_url: str, cli: Any) -> None:
    result = cli("deliver", "--once")
    assert result.exit_code == 0 and result.stdout.strip() == "deliver: 0 delivered, 0 retrying, 0 failed"


def test_postgresql_unreachable_is_exit_3_with_one_document(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://midpay@127.0.0.1:{_closed_port()}/midpay")
    result = cli("deliver", "--once", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["exit_code"] == 3


def test_bad_flags_are_usage_errors(cli: Any) -> None:
    for flags in (["--concurrency", "0"], ["--retry-base", "nan"], ["--timeout", "-1"]):
        result = cli("deliver", "--once", *flags)
        assert result.exit_code == 2 and result.stderr.startswith("Error: "), result
