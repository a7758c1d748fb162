"""A charge that never reached Midtrans is resumable, and an order is never charged twice; charge --wait ends.

Through the CLI, the sandbox over HTTP, and a misbehaving proxy where the sandbox has
no such fault. ``sandbox.stats()["charges"]`` counts the charges Midtrans accepted per
order: it must never exceed 1.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import psycopg
import pytest

from tests.helpers import payment_status, wait_until
from tests.midtrans_proxy import MidtransProxy, Rule


def _lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_charge_refused_for_a_wrong_key_stays_created_and_resumes(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", "SB-Mid-server-a-typo-in-the-key")
    refused = cli("charge", "--amount", "15000", "--order-id", "rk-1", "--json")
    assert refused.exit_code == 2, refused
    assert _lines(refused.stderr) == [
        "Error: charge of order 'rk-1': Midtrans refused the server key (401); check MIDTRANS_SERVER_KEY and "
        "MIDTRANS_IS_PRODUCTION/MIDTRANS_API_URL; order rk-1 stays `created`: once the key is right, "
        "run `midpay charge --order-id rk-1 --amount 15000` again"
    ]
    assert json.loads(refused.stdout) == {"error": _lines(refused.stderr)[0].removeprefix("Error: "), "exit_code": 2}
    assert payment_status(db_url, "rk-1") == "created"
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", env["MIDTRANS_SERVER_KEY"])
    resumed = cli("charge", "--amount", "15000", "--order-id", "rk-1")
    assert resumed.exit_code == 0, resumed
    assert "Charge resumed" in resumed.stdout
    assert payment_status(db_url, "rk-1") == "pending"
    assert sandbox.stats()["charges"] == {"rk-1": 1}
    again = cli("charge", "--amount", "15000", "--order-id", "rk-1")
    assert again.exit_code == 2
    assert _lines(again.stderr) == ["Error: order rk-1 already exists (pending); see `midpay status rk-1`"]


def test_a_charge_to_a_closed_port_stays_created_and_resumes(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MIDTRANS_API_URL", f"http://127.0.0.1:{port}")
    down = cli("charge", "--amount", "16000", "--order-id", "cp-1", "--qris", "--json")
    assert down.exit_code == 3, down
    assert _lines(down.stderr) == [
        f"Error: charge of order 'cp-1': could not connect to Midtrans at http://127.0.0.1:{port}: the connection "
        "was refused or the host is unreachable; order cp-1 stays `created`: "
        "run `midpay charge --order-id cp-1 --amount 16000 --qris` again once Midtrans answers"
    ]
    assert payment_status(db_url, "cp-1") == "created"
    monkeypatch.setenv("MIDTRANS_API_URL", env["MIDTRANS_API_URL"])
    wrong = cli("charge", "--amount", "16000", "--order-id", "cp-1")  # forgot --qris
    assert wrong.exit_code == 2
    assert _lines(wrong.stderr) == [
        "Error: order cp-1 was started with payment type qris, not gopay: resume it with the same values, "
        "or use another --order-id"
    ]
    resumed = cli("charge", "--amount", "16000", "--order-id", "cp-1", "--qris", "--json")
    assert resumed.exit_code == 0, resumed
    doc = resumed.json()
    assert doc["status"] == "pending" and doc["qr_string"] and doc["payment_type"] == "qris"
    assert sandbox.stats()["charges"] == {"cp-1": 1}


def test_a_lost_answer_is_resumed_without_charging_again(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MidtransProxy(sandbox.url) as proxy:
        proxy.rules["lost-1"] = Rule(endpoint="charge", stall=2.0, times=1)  # Midtrans acts, the answer is late
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        monkeypatch.setenv("MIDPAY_TIMEOUT", "1")
        lost = cli("charge", "--amount", "17000", "--order-id", "lost-1")
        assert lost.exit_code == 3, lost
        assert "It stays `created` and is never charged twice" in lost.stderr
        wait_until(lambda: sandbox.get_order("lost-1") is not None, 10, what="Midtrans to have acted on the charge")
        resumed = cli("charge", "--amount", "17000", "--order-id", "lost-1", "--json")
    assert resumed.exit_code == 0, resumed
    assert _lines(resumed.stderr) == [
        "midpay: Midtrans already had order lost-1 (pending): nothing was charged again"
    ]
    assert resumed.json()["status"] == "pending"
    assert sandbox.stats()["charges"] == {"lost-1": 1}


def test_a_charge_landing_between_status_and_resume_is_not_sent_twice(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES ('race-1', 18000, 'gopay', 'created')"
        )
    gateway.charge(order_id="race-1", gross_amount=18000, idempotency_key="the-first-attempt")
    with MidtransProxy(sandbox.url) as proxy:
        # Get Status says "unknown" once (the first charge was still being processed), so the
        # resume sends the charge: Midtrans refuses the order id with 406, and then reports it.
        proxy.rules["race-1"] = Rule(
            endpoint="status", times=1, raw=b'{"status_code": "404", "status_message": "Transaction doesn\'t exist."}'
        )
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        resumed = cli("charge", "--amount", "18000", "--order-id", "race-1", "--json")
        assert proxy.count("charge", "race-1") == 1 and proxy.count("status", "race-1") == 2
    assert resumed.exit_code == 0, resumed
    assert _lines(resumed.stderr) == [
        "midpay: an earlier charge of order race-1 reached Midtrans (pending): not charged again"
    ]
    assert sandbox.stats()["charges"] == {"race-1": 1}
    assert payment_status(db_url, "race-1") == "pending"


def test_a_404_to_the_charge_itself_names_midtrans_api_url(
    cli: Any, db_url: str, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MidtransProxy(sandbox.url) as proxy:
        proxy.rules["url-1"] = Rule(
            endpoint="charge", raw=b'{"status_code": "404", "status_message": "The requested resource is not found"}'
        )
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        result = cli("charge", "--amount", "19000", "--order-id", "url-1")
    assert result.exit_code == 2, result
    assert _lines(result.stderr) == [
        f"Error: Midtrans answered 404 to the charge of order url-1: is MIDTRANS_API_URL right ({proxy.url})? "
        "The order stays `created`: run `midpay charge --order-id url-1 --amount 19000` again once it is"
    ]
    assert payment_status(db_url, "url-1") == "created"


def test_resuming_with_another_amount_is_refused(cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", "SB-Mid-server-wrong")
    assert cli("charge", "--amount", "20000", "--order-id", "amt-1").exit_code == 2
    result = cli("charge", "--amount", "21000", "--order-id", "amt-1")
    assert result.exit_code == 2
    assert _lines(result.stderr) == [
        "Error: order amt-1 was started with amount 20000, not 21000: resume it with the same values, "
        "or use another --order-id"
    ]


def test_charge_wait_reports_each_refused_answer_and_ends_at_its_deadline(
    cli: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MidtransProxy(sandbox.url) as proxy:
        proxy.rules["wait-x"] = Rule(endpoint="status", patch={"gross_amount": "1.00"})
        monkeypatch.setenv("MIDTRANS_API_URL", proxy.url)
        result = cli("charge", "--amount", "12000", "--order-id", "wait-x", "--wait", "--timeout", "3", "--json")
        polls = proxy.count("status", "wait-x")
    assert result.exit_code == 1, result
    refusal = "amount mismatch for wait-x: Midtrans says 1.00, stored 12000; nothing applied"
    lines = _lines(result.stderr)
    assert lines == [
        *(f"midpay: status check {n} of wait-x failed, still waiting: {refusal}" for n in range(1, polls + 1)),
        f"Error: {refusal}",
    ]
    assert 2 <= polls <= 3
    assert json.loads(result.stdout)["status"] == "pending"  # one complete document all the same


def test_charge_wait_without_refusals_still_ends_at_its_deadline(cli: Any, sandbox: Any) -> None:
    result = cli("charge", "--amount", "13000", "--order-id", "wait-y", "--wait", "--timeout", "1", "--json")
    assert result.exit_code == 1, result
    assert _lines(result.stderr) == [
        "Error: order wait-y is still pending after waiting: `midpay status wait-y` shows it later"
    ]
    assert result.json()["status"] == "pending"
