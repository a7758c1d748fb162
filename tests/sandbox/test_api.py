"""midpay.sandbox.api: the Core API endpoints over raw HTTP.

Charge validation and answers, cancel, expire, refund, idempotency keys.
"""

from __future__ import annotations

from datetime import timedelta

from midpay.midtrans.notifications import parse_view
from midpay.sandbox import SandboxServer
from tests.sandbox.conftest import Client


def test_charge_validation(client: Client) -> None:
    for amount in (0, -1, 100.5, "abc", None, True):
        answer = client.charge("v-1", amount)
        assert answer["status_code"] == "400", amount
        assert any("gross_amount" in m for m in answer["validation_messages"])
    assert client.charge("v-1", 44000, "credit_card")["status_code"] == "402"
    assert client.charge("v-1", 44000, "qris", qris={"acquirer": "airpay shopee"})["status_code"] == "402"
    assert client.charge("x" * 51)["status_code"] == "400"
    bad_json = client.post("/v2/charge", data="{not json")
    assert (bad_json.status_code, bad_json.json()["status_code"]) == (200, "413")
    week = client.charge("v-1", custom_expiry={"expiry_duration": 1, "unit": "week"})
    assert week["status_code"] == "400"
    hours = client.charge("v-1", custom_expiry={"expiry_duration": 2, "unit": "hour"})
    view = parse_view(hours)
    assert view.expiry_time is not None and view.transaction_time is not None
    assert view.expiry_time - view.transaction_time == timedelta(hours=2)


def test_charge_is_http_200_with_body_201_and_duplicates_406(client: Client) -> None:
    body = {"payment_type": "gopay", "transaction_details": {"order_id": "d", "gross_amount": 1}}
    first = client.post("/v2/charge", body)
    assert (first.status_code, first.json()["status_code"]) == (200, "201")
    assert first.headers["Content-Length"] == str(len(first.content))
    again = client.charge("d")
    assert again["status_code"] == "406" and "id" in again


def test_cancel_expire_refund_answers(sandbox: SandboxServer, client: Client) -> None:
    client.charge("k-1", 30000)
    cancelled = client.post("/v2/k-1/cancel").json()
    assert (cancelled["status_code"], cancelled["status_message"]) == ("200", "Success, transaction is canceled")
    assert client.post("/v2/k-1/expire").json() == {
        "status_code": "412",
        "status_message": "Merchant cannot modify the status of the transaction",
    }
    client.charge("k-2", 30000)
    expired = client.post("/v2/k-2/expire").json()
    assert (expired["status_code"], expired["transaction_status"]) == ("407", "expire")
    client.charge("k-3", 30000)
    assert client.post("/v2/k-3/refund", {"refund_key": "a"}).json()["status_code"] == "412"
    sandbox.pay("k-3")
    assert client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 30001}).json()["status_code"] == "414"
    assert client.post("/v2/k-3/refund", {"refund_key": "bad key"}).json()["status_code"] == "400"
    partial = client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 5000, "reason": "why"}).json()
    assert (partial["transaction_status"], partial["refund_amount"], partial["refund_key"]) == (
        "partial_refund", "5000.00", "a"
    )
    assert client.post("/v2/k-3/refund", {"refund_key": "a", "amount": 25000}).json() == partial
    full = client.post("/v2/k-3/refund", {}).json()  # no key: a new refund of what remains
    assert (full["transaction_status"], full["refund_amount"]) == ("refund", "25000.00")
    assert sandbox.stats()["refunds"] == {"k-3": 2}
    assert sandbox.get_order("k-3") is not None
    order = sandbox.get_order("k-3") or {}
    assert (order["transaction_status"], order["refunded_amount"], len(order["refunds"])) == ("refund", 30000, 2)


def test_idempotency_key_replays_the_first_answer(sandbox: SandboxServer, client: Client) -> None:
    body = {"payment_type": "gopay", "transaction_details": {"order_id": "i-1", "gross_amount": 1000}}
    headers = {"Idempotency-Key": "d63ae3e0-a7c5-4733-8d81-b451168d8a2c-charge"}
    first = client.post("/v2/charge", body, headers=headers).json()
    other_body = {**body, "transaction_details": {"order_id": "i-2", "gross_amount": 5}}
    assert client.post("/v2/charge", other_body, headers=headers).json() == first  # regardless of the body
    long_key = {"Idempotency-Key": "k" * 47}  # ignored: too long
    assert client.post("/v2/charge", body, headers=long_key).json()["status_code"] == "406"
    assert sandbox.stats()["charges"] == {"i-1": 1}
