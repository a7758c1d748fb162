"""midpay.sandbox.refunds: refunds as Midtrans makes and reports them, and the record of every payout."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from midpay.errors import MidtransRejected, NotFoundError
from midpay.midtrans.notifications import parse_view, verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer
from tests.sandbox.conftest import Client, sample


def _settled(sandbox: SandboxServer, client: Client, order_id: str, amount: int = 10000) -> None:
    client.charge(order_id, amount)
    sandbox.pay(order_id)


def test_partial_refunds_to_full_and_their_shapes(sandbox: SandboxServer, client: Client, tmp_path: Path) -> None:
    _settled(sandbox, client, "rf-1")
    first = client.post("/v2/rf-1/refund", sample("refund_request.json")).json()  # Midtrans' sample request
    assert set(first) == set(sample("refund_partial.json"))  # the keys of Midtrans' partial refund answer
    assert (first["transaction_status"], first["refund_amount"], first["refund_key"]) == (
        "partial_refund", "5000.00", "reference1"
    )
    second = client.post("/v2/rf-1/refund", {"refund_key": "reference2", "amount": 5000}).json()
    assert (second["transaction_status"], second["refund_amount"]) == ("refund", "5000.00")  # this refund only
    ids = [first["refund_chargeback_id"], second["refund_chargeback_id"]]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and ids[0] < ids[1]

    status = client.get("/v2/rf-1/status").json()
    assert (status["transaction_status"], status["status_code"], status["refund_amount"]) == (
        "refund", "200", "10000.00"
    )
    assert [r["refund_key"] for r in status["refunds"]] == ["reference1", "reference2"]
    item = status["refunds"][0]
    assert (item["refund_chargeback_id"], item["refund_amount"], item["reason"]) == (
        ids[0], "5000.00", "for some reason"
    )
    assert set(item) == {
        "refund_chargeback_id", "refund_amount", "created_at", "reason", "refund_key",
        "refund_method", "bank_confirmed_at",
    }
    assert parse_view(status).transaction_status == "refund"

    # Two notifications per refund: made, then confirmed by the bank (refund_method, bank_confirmed_at).
    notes = sorted((tmp_path / "notes").glob("rf-1-*refund-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    bodies = [json.loads(p.read_text()) for p in notes]
    assert [b["transaction_status"] for b in bodies] == ["partial_refund"] * 2 + ["refund"] * 2
    assert ["bank_confirmed_at" in b["refunds"][-1] for b in bodies] == [False, True, False, True]
    assert [b["refund_amount"] for b in bodies] == ["5000.00", "5000.00", "10000.00", "10000.00"]
    assert all(b["status_code"] == "200" and verify_signature(b, DEV_SERVER_KEY) for b in bodies)
    assert sandbox.paid_out("rf-1") == 10000


def test_the_same_refund_key_never_pays_twice(sandbox: SandboxServer, client: Client) -> None:
    _settled(sandbox, client, "rf-2", 30000)
    first = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 10000}).json()
    again = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 10000}).json()
    other_amount = client.post("/v2/rf-2/refund", {"refund_key": "k1", "amount": 999}).json()
    assert again == first == other_amount  # the safe retry: the same refund, answered again
    assert client.post("/v2/rf-2/refund", {"refund_key": "k2", "amount": 20001}).json() == sample("refund_414.json")
    assert sandbox.paid_out("rf-2") == 10000
    requests_seen = sandbox.refund_requests("rf-2")
    assert [(r["refund_key"], r["amount"], r["replay"], r["paid"], r["status_code"]) for r in requests_seen] == [
        ("k1", 10000, False, 10000, "200"),
        ("k1", 10000, True, 0, "200"),
        ("k1", 999, True, 0, "200"),
        ("k2", 20001, False, 0, "414"),
    ]
    assert sandbox.stats()["refunds"] == {"rf-2": 1}
    over_http = client.get("/_sandbox/refunds/rf-2").json()
    assert over_http["paid_out"] == 10000 and over_http["requests"] == requests_seen
    assert len(over_http["refunds"]) == 1 and over_http["refunds"][0]["source"] == "api"


def test_refund_before_settlement_and_without_a_key(sandbox: SandboxServer, client: Client) -> None:
    client.charge("rf-3", 8000)
    assert client.post("/v2/rf-3/refund", {"refund_key": "x", "amount": 1}).json() == sample("refund_412.json")
    sandbox.pay("rf-3")
    keyless = client.post("/v2/rf-3/refund", {}).json()  # no key, no amount: a new refund of it all
    assert keyless["refund_amount"] == "8000.00" and keyless["transaction_status"] == "refund"
    assert uuid.UUID(keyless["refund_key"])  # Midtrans makes one up
    assert sandbox.refund_requests("rf-3")[-1]["refund_key"] is None
    assert client.post("/v2/rf-3/refund", {}).json()["status_code"] == "412"  # refund is final


def test_direct_refund_endpoint(sandbox: SandboxServer, client: Client) -> None:
    _settled(sandbox, client, "rf-4")
    direct = client.post("/v2/rf-4/refund/online/direct", {"refund_key": "d-1"}).json()
    assert set(direct) == set(sample("refund_direct_success.json"))
    assert direct["status_message"] == "Success, refund request is approved by the bank"
    assert sandbox.refund_requests("rf-4")[0]["endpoint"] == "direct" and sandbox.stats()["by_endpoint"]["refund"] == 1


def test_refunds_wait_for_the_bank_when_asked(tmp_path: Path) -> None:
    with SandboxServer(notify_dir=tmp_path, auto_confirm_refunds=False) as server:
        http = Client(server)
        _settled(server, http, "rf-5")
        http.post("/v2/rf-5/refund", {"refund_key": "m-1", "amount": 4000})
        status = http.get("/v2/rf-5/status").json()
        assert "bank_confirmed_at" not in status["refunds"][0] and "refund_method" not in status["refunds"][0]
        assert len(list(tmp_path.glob("rf-5-partial_refund-*.json"))) == 1
        confirmed = server.confirm_refunds("rf-5")
        assert len(confirmed) == 1 and confirmed[0]["refunds"][0]["refund_method"] == "online"
        assert "bank_confirmed_at" in http.get("/v2/rf-5/status").json()["refunds"][0]
        assert server.confirm_refunds("rf-5") == []  # nothing left to confirm
        assert http.post("/_sandbox/settings", {"auto_confirm_refunds": True}).json() == {"auto_confirm_refunds": True}
        http.close()


def test_a_refund_made_outside_midpay(sandbox: SandboxServer, client: Client, tmp_path: Path) -> None:
    _settled(sandbox, client, "out-1", 20000)
    item = sandbox.refund_outside("out-1", 5000, reason="dashboard")
    assert item["source"] == "outside" and item["refund_amount"] == "5000.00" and uuid.UUID(item["refund_key"])
    status = client.get("/v2/out-1/status").json()
    assert (status["transaction_status"], status["refund_amount"]) == ("partial_refund", "5000.00")
    assert status["refunds"][0]["refund_key"] == item["refund_key"] and status["refunds"][0]["reason"] == "dashboard"
    assert len(list((tmp_path / "notes").glob("out-1-partial_refund-*.json"))) == 2
    assert sandbox.refund_requests("out-1") == [] and sandbox.paid_out("out-1") == 5000
    rest = client.post("/_sandbox/refund-outside/out-1", {}).json()["refund"]  # all that remains
    assert rest["refund_amount"] == "15000.00" and sandbox.paid_out("out-1") == 20000
    with pytest.raises(MidtransRejected) as caught:
        sandbox.refund_outside("out-1", 1)
    assert caught.value.status_code == "412"
    _settled(sandbox, client, "out-2", 1000)
    with pytest.raises(MidtransRejected) as too_much:
        sandbox.refund_outside("out-2", 1001)
    assert too_much.value.status_code == "414"
    assert client.post("/_sandbox/refund-outside/out-2", {"amount": 1001}).status_code == 409
    with pytest.raises(NotFoundError):
        sandbox.paid_out("nobody")
