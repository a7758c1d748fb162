"""midpay.sandbox.state: how a transaction moves (status codes per state, expiry, QRIS scans, fraud review)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from midpay.errors import MidtransRejected, NotFoundError, UsageError
from midpay.midtrans.notifications import parse_view, verify_signature
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer
from tests.sandbox.conftest import Client, expected_signature, sample


@pytest.mark.parametrize(
    ("status", "note_code", "answer_code"),
    [("settlement", "200", "200"), ("expire", "202", "407"), ("cancel", "202", "200"), ("deny", "202", "202")],
)
def test_status_codes_per_status(
    sandbox: SandboxServer, client: Client, status: str, note_code: str, answer_code: str
) -> None:
    client.charge("o-1", 275000)
    note = sandbox.pay("o-1", status)
    assert (note["transaction_status"], note["status_code"]) == (status, note_code)
    assert note["signature_key"] == expected_signature("o-1", note_code, "275000.00", DEV_SERVER_KEY)
    answer = client.get("/v2/o-1/status").json()
    assert (answer["transaction_status"], answer["status_code"]) == (status, answer_code)
    assert answer["signature_key"] == expected_signature("o-1", answer_code, "275000.00", DEV_SERVER_KEY)
    assert parse_view(answer).transaction_status == status


def test_pending_answer_code_and_repeat_notifications(sandbox: SandboxServer, client: Client) -> None:
    client.charge("o-2")
    assert client.get("/v2/o-2/status").json()["status_code"] == "201"
    assert sandbox.pay("o-2", "pending")["status_code"] == "201"
    first = sandbox.pay("o-2", "settlement")
    assert sandbox.pay("o-2", "settlement") == first  # a duplicate delivery, as Midtrans may send
    for status in ("expire", "pending", "cancel"):
        with pytest.raises(MidtransRejected, match="cannot move it") as caught:
            sandbox.pay("o-2", status)
        assert caught.value.status_code == "412"
    with pytest.raises(NotFoundError):
        sandbox.pay("nobody")
    with pytest.raises(UsageError):
        sandbox.pay("o-2", "refund")


def test_pending_orders_expire_when_looked_at(tmp_path: Path) -> None:
    with SandboxServer(expiry_seconds=1, notify_dir=tmp_path) as server:
        http = Client(server)
        charged = http.charge("late")
        view = parse_view(charged)
        assert view.expiry_time is not None and view.transaction_time is not None
        assert view.expiry_time - view.transaction_time == timedelta(seconds=1)
        time.sleep(1.05)  # the clock is the case under test: the order has expired, nobody looked yet
        answer = http.get("/v2/late/status").json()
        assert (answer["status_code"], answer["transaction_status"]) == ("407", "expire")
        assert http.charge("late")["status_code"] == "201"  # an expired order id may be used again
        http.close()
        assert server.stats()["charges"] == {"late": 2}
        assert [p.name for p in tmp_path.iterdir()] == ["late-expire-1.json"]


def test_a_gopay_charge_paid_by_qris_scan_reports_qris(sandbox: SandboxServer, client: Client) -> None:
    charged = client.charge("scan-1", 5539)
    assert charged["payment_type"] == "gopay"
    note = sandbox.pay("scan-1", "settlement", payment_type="qris")
    assert list(note) == list(sample("notification_qris_settlement.json"))  # Midtrans' QRIS sample, field for field
    assert (note["payment_type"], note["transaction_type"], note["issuer"], note["acquirer"]) == (
        "qris", "on-us", "gopay", "gopay"
    )
    assert note["transaction_id"] == charged["transaction_id"] and verify_signature(note, DEV_SERVER_KEY)
    answer = client.get("/v2/scan-1/status").json()
    assert (answer["payment_type"], answer["transaction_status"], answer["acquirer"]) == ("qris", "settlement", "gopay")
    assert answer["merchant_cross_reference_id"] == note["merchant_cross_reference_id"]
    assert sandbox.pay("scan-1") == note  # the same notification again, still qris
    with pytest.raises(UsageError, match="only a gopay charge being paid"):
        client.charge("scan-2")
        sandbox.pay("scan-2", "cancel", payment_type="qris")
    with pytest.raises(UsageError, match="payment_type"):
        sandbox.pay("scan-2", "settlement", payment_type="ovo")


def test_capture_with_fraud_review(sandbox: SandboxServer, client: Client) -> None:
    client.charge("fr-1", 30000)
    challenged = sandbox.pay("fr-1", "capture", fraud_status="challenge")
    assert (challenged["transaction_status"], challenged["fraud_status"], challenged["status_code"]) == (
        "capture", "challenge", "200"
    )
    assert "settlement_time" not in challenged
    answer = client.get("/v2/fr-1/status").json()
    assert (answer["transaction_status"], answer["fraud_status"], answer["status_code"]) == (
        "capture", "challenge", "200"
    )
    accepted = sandbox.pay("fr-1", "capture", fraud_status="accept")  # the review accepts it
    assert (accepted["transaction_status"], accepted["fraud_status"]) == ("capture", "accept")
    settled = sandbox.pay("fr-1", "settlement")
    assert (settled["transaction_status"], settled["fraud_status"]) == ("settlement", "accept")
    with pytest.raises(MidtransRejected):
        sandbox.pay("fr-1", "capture")
    client.charge("fr-2", 30000)
    denied = sandbox.pay("fr-2", "settlement", fraud_status="deny")  # never paid, whatever the status says
    assert (denied["transaction_status"], denied["fraud_status"]) == ("settlement", "deny")
    assert client.get("/v2/fr-2/status").json()["fraud_status"] == "deny"
    with pytest.raises(UsageError, match="fraud_status"):
        sandbox.pay("fr-2", "settlement", fraud_status="maybe")
