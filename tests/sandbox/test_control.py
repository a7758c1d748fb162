"""midpay.sandbox.control: the /_sandbox/ endpoints other processes drive a running sandbox with."""

from __future__ import annotations

from midpay.sandbox import SandboxServer, pay_remote
from tests.sandbox.conftest import Client


def test_fault_counters_and_control_endpoints(sandbox: SandboxServer, client: Client) -> None:
    set_to = client.post("/_sandbox/faults", {"fail_rate": 1.0}).json()
    assert set_to["fail_rate"] == 1.0
    assert client.get("/v2/x/status").status_code in (500, 503)
    assert client.post("/_sandbox/faults", {"fail_rate": 2}).status_code == 400
    assert client.post("/_sandbox/faults", {"bogus": 1}).status_code == 400
    client.post("/_sandbox/faults", {"fail_rate": 0, "rate_limit_rate": 1})
    assert client.get("/v2/x/status").status_code == 429
    stats = client.get("/_sandbox/stats").json()
    assert stats["requests"] == 2 and stats["faults"] == {"5xx": 1, "429": 1, "stall": 0, "malformed": 0}
    assert stats["by_endpoint"]["status"] == 2 and stats["status_checks"] == {"x": 2}
    assert client.post("/_sandbox/reset").json() == {"ok": True}
    assert sandbox.stats()["requests"] == 0
    assert client.get("/_sandbox/orders").json() == {"orders": []}


def test_pay_remote_and_the_pay_endpoint_take_payment_type_and_fraud_status(
    sandbox: SandboxServer, client: Client
) -> None:
    client.charge("rp-1")
    note = pay_remote(api_url=sandbox.url, order_id="rp-1", status="capture", fraud_status="challenge")
    assert (note["transaction_status"], note["fraud_status"]) == ("capture", "challenge")
    client.charge("rp-2")
    body = client.post("/_sandbox/pay/rp-2", {"status": "settlement", "payment_type": "qris"}).json()
    assert body["payment_type"] == "qris"
    assert client.post("/_sandbox/pay/rp-2", {"status": "settlement", "colour": "red"}).status_code == 400


def test_tamper_and_fault_over_the_control_endpoints(sandbox: SandboxServer, client: Client) -> None:
    client.charge("t-5")
    made = client.post("/_sandbox/tamper/t-5", {"fields": {"transaction_status": "settlement"}, "times": 1})
    assert made.status_code == 200
    client.post("/_sandbox/fault/t-5", {"fault": "503", "endpoints": ["cancel"]})
    rules = client.get("/_sandbox/rules").json()["rules"]
    assert [(r["order_id"], r.get("fault"), r.get("times")) for r in rules] == [("t-5", None, 1), ("t-5", "503", None)]
    assert client.get("/v2/t-5/status").json()["transaction_status"] == "settlement"
    assert client.post("/v2/t-5/cancel").status_code == 503
    assert client.delete("/_sandbox/rules/t-5").json() == {"ok": True}
    assert client.get("/_sandbox/rules").json() == {"rules": []}
    for bad in ({"fault": "teapot"}, {"fault": "500", "times": 0}, {"fault": "500", "endpoints": ["qr-code"]}):
        assert client.post("/_sandbox/fault/t-5", bad).status_code == 400, bad
    assert client.post("/_sandbox/tamper/t-5", {"fields": [1]}).status_code == 400
    assert client.post("/_sandbox/tamper/t-5", {"http_status": 99}).status_code == 400
