"""midpay.sandbox.tamper: per-order tampered answers and HTTP-level faults, for tests of answer checking."""

from __future__ import annotations

import time

import pytest
import requests

from midpay.sandbox import DEV_SERVER_KEY, SandboxServer
from tests.sandbox.conftest import Client, expected_signature


def test_tampered_status_answers(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-1", 1000)
    client.charge("t-2", 2000)
    sandbox.tamper("t-1", {"order_id": "t-2", "gross_amount": "2000.00"}, times=2, endpoints=["status"])
    for _ in range(2):
        lie = client.get("/v2/t-1/status").json()
        assert (lie["order_id"], lie["gross_amount"]) == ("t-2", "2000.00")
        assert lie["signature_key"] == expected_signature("t-2", "201", "2000.00", DEV_SERVER_KEY)  # re-signed
    truth = client.get("/v2/t-1/status").json()  # two uses, then the truth again
    assert (truth["order_id"], truth["gross_amount"]) == ("t-1", "1000.00")
    assert client.get("/v2/t-2/status").json()["order_id"] == "t-2"  # other orders untouched

    weird = {"transaction_id": "x" * 300, "status_message": "found\x00 it", "transaction_status": "teleported"}
    sandbox.tamper("t-1", weird, remove=["fraud_status"], resign=False)
    by_txn = client.get(f"/v2/{truth['transaction_id']}/status")  # asked by transaction id: still about t-1
    assert b"\\u0000" in by_txn.content
    body = by_txn.json()
    assert body["transaction_id"] == "x" * 300 and body["status_message"] == "found\x00 it"
    assert body["transaction_status"] == "teleported" and "fraud_status" not in body
    assert body["signature_key"] == truth["signature_key"]  # resign=False keeps the original
    assert client.get("/v2/t-1/status").json()["transaction_status"] == "teleported"  # times=None: until cleared
    sandbox.clear_rules("t-1")
    assert client.get("/v2/t-1/status").json()["transaction_status"] == "pending"
    assert sandbox.stats()["tampered"] == 4


def test_an_error_answer_that_echoes_the_authorization_header(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-3")
    rule = sandbox.tamper(
        "t-3",
        {"status_code": "500", "status_message": "Internal error"},
        replace=True,
        echo_authorization=True,
        http_status=500,
        endpoints=["cancel"],
    )
    assert rule["endpoints"] == ["cancel"] and rule["http_status"] == 500
    leaked = client.post("/v2/t-3/cancel")
    assert leaked.status_code == 500
    assert leaked.json() == {
        "status_code": "500",
        "status_message": "Internal error",
        "headers": {"Authorization": client.session.headers["Authorization"]},
    }
    assert client.get("/v2/t-3/status").json()["transaction_status"] == "cancel"  # the cancel itself happened


def test_tampered_charge_and_refund_answers(sandbox: SandboxServer, client: Client) -> None:
    sandbox.tamper("t-4", {"transaction_id": "not-the-real-one"}, times=1, endpoints=["charge"])
    charged = client.charge("t-4", 5000)
    assert charged["transaction_id"] == "not-the-real-one"
    sandbox.pay("t-4")
    sandbox.tamper("t-4", {"gross_amount": "9999.00"}, endpoints="refund")
    refunded = client.post("/v2/t-4/refund", {"refund_key": "r", "amount": 1000}).json()
    assert refunded["gross_amount"] == "9999.00" and sandbox.paid_out("t-4") == 1000


@pytest.mark.parametrize("fault", ["500", "503", "429", "401"])
def test_refusing_faults_strike_one_order_before_anything_happens(
    sandbox: SandboxServer, client: Client, fault: str
) -> None:
    client.charge("f-1")
    client.charge("f-2")
    sandbox.fault_order("f-1", fault, times=1)
    refused = client.post("/v2/f-1/cancel")
    assert refused.status_code == int(fault) and refused.json()["status_code"] == fault
    assert client.post("/v2/f-2/cancel").json()["status_code"] == "200"  # another order: no fault
    assert client.get("/v2/f-1/status").json()["transaction_status"] == "pending"  # the cancel never happened
    assert sandbox.stats()["order_faults"][fault] == 1


def test_connection_faults_of_one_order(sandbox: SandboxServer, client: Client) -> None:
    for order_id in ("h-1", "h-2", "h-3", "h-4"):
        client.charge(order_id)
    sandbox.fault_order("h-1", "hangup", times=1)
    with pytest.raises(requests.ConnectionError):
        client.post("/v2/h-1/cancel")
    assert client.get("/v2/h-1/status").json()["transaction_status"] == "pending"  # nothing happened
    sandbox.fault_order("h-2", "lost-answer", times=1)
    with pytest.raises(requests.ConnectionError):
        client.post("/v2/h-2/cancel")
    assert client.get("/v2/h-2/status").json()["transaction_status"] == "cancel"  # it happened; the answer was lost
    sandbox.fault_order("h-3", "malformed", times=1, endpoints=["status"])
    garbage = client.get("/v2/h-3/status")
    assert garbage.status_code == 200 and garbage.headers["Content-Type"] == "text/html"
    sandbox.fault_order("h-4", "stall", seconds=0.2, times=1)
    started = time.monotonic()
    assert client.post("/v2/h-4/expire").json()["status_code"] == "407"
    assert time.monotonic() - started >= 0.2
    assert sandbox.list_rules() == []  # every rule used up
