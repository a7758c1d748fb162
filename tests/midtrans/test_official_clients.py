"""Midtrans' official Python client (`midtransclient`, PyPI) against the sandbox, beside midpay.

Our sandbox and our gateway were written from the same reading of Midtrans' documents,
so they could share a misunderstanding. The official client was written by Midtrans:
what it accepts, raises and returns here is an outside check that the sandbox speaks
Midtrans, and that midpay and a backend using the official client agree about the same
payments (the situation of a shop that moves to midpay one route at a time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import SERVER_KEY
from tests.helpers import payment_row

midtransclient = pytest.importorskip("midtransclient", reason="the official client is in the dev extra")


@pytest.fixture
def core(sandbox: Any) -> Any:
    """The official Core API client, pointed at the sandbox instead of api.sandbox.midtrans.com."""
    client = midtransclient.CoreApi(is_production=False, server_key=SERVER_KEY)
    client.api_config.CORE_SANDBOX_BASE_URL = sandbox.url  # the instance's own base URL
    return client


def test_the_official_client_sees_a_midpay_charge_as_midpay_stored_it(cli: Any, db_url: str, core: Any) -> None:
    charged = cli("charge", "--amount", "44000", "--json")
    assert charged.exit_code == 0, charged
    order_id = charged.json()["order_id"]

    seen = core.transactions.status(order_id)
    assert seen["status_code"] == "201" and seen["transaction_status"] == "pending"
    assert seen["gross_amount"] == "44000.00"  # a string with two decimals, as Midtrans sends it
    assert seen["transaction_id"] == payment_row(db_url, order_id)["midtrans_transaction_id"]


def test_a_charge_made_by_the_official_client_is_reconciled_by_midpay(
    cli: Any, db_url: str, core: Any, sandbox: Any
) -> None:
    # The older backend's way: the official client charges, the backend inserts the row.
    answer = core.charge(
        {"payment_type": "gopay", "transaction_details": {"order_id": "node-7", "gross_amount": 52000}}
    )
    assert answer["status_code"] == "201"
    actions = {a["name"] for a in answer["actions"]}
    assert {"generate-qr-code", "deeplink-redirect"} <= actions
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, "
            "midtrans_transaction_id, created_at) VALUES ('node-7', 52000, 'gopay', 'pending', %s, "
            "now() - interval '5 minutes')",
            (answer["transaction_id"],),
        )
    sandbox.pay("node-7", "settlement")

    done = cli("reconcile", "--json")
    assert done.exit_code == 0, done
    assert done.json()["summary"]["changed"] == 1
    row = payment_row(db_url, "node-7")
    assert row["status"] == "settlement" and row["paid_at"] is not None


def test_the_official_clients_notification_helper_and_midpay_agree(
    cli: Any, db_url: str, core: Any, sandbox: Any, tmp_path: Path
) -> None:
    order_id = cli("charge", "--amount", "61000", "--json").json()["order_id"]
    body = sandbox.pay(order_id, "settlement")

    # transactions.notification() is the official "verify directly with Midtrans": a Get
    # Status by the body's transaction_id. It must find what midpay will apply.
    confirmed = core.transactions.notification(json.dumps(body))
    assert confirmed["order_id"] == order_id and confirmed["transaction_status"] == "settlement"

    path = tmp_path / "n.json"
    path.write_text(json.dumps(body))
    replayed = cli("replay-webhook", str(path), "--json")
    assert replayed.exit_code == 0, replayed
    assert replayed.json()["results"][0]["status_after"] == confirmed["transaction_status"]


def test_the_sandboxs_errors_are_the_ones_the_official_client_knows(cli: Any, core: Any, sandbox: Any) -> None:
    with pytest.raises(midtransclient.error_midtrans.MidtransAPIError) as unknown:
        core.transactions.status("never-charged")
    assert "404" in unknown.value.message

    order_id = cli("charge", "--amount", "30000", "--json").json()["order_id"]
    expired = core.transactions.expire(order_id)  # 407 is a success code for expire: no exception
    assert (expired["status_code"], expired["transaction_status"]) == ("407", "expire")

    with pytest.raises(midtransclient.error_midtrans.MidtransAPIError) as cannot:
        core.transactions.cancel(order_id)  # out of a final state
    assert "412" in cannot.value.message

    wrong = midtransclient.CoreApi(is_production=False, server_key="SB-Mid-server-wrong")
    wrong.api_config.CORE_SANDBOX_BASE_URL = sandbox.url
    with pytest.raises(midtransclient.error_midtrans.MidtransAPIError) as refused:
        wrong.transactions.status(order_id)
    assert refused.value.http_status_code == 401


def test_a_refund_made_with_the_official_client_counts_in_midpays_ledger(
    cli: Any, db_url: str, core: Any, sandbox: Any
) -> None:
    order_id = cli("charge", "--amount", "90000", "--json").json()["order_id"]
    sandbox.pay(order_id, "settlement")
    assert cli("status", order_id, "--json").json()["status"] == "settlement"

    answer = core.transactions.refund(order_id, {"refund_key": "backoffice-1", "amount": 40000, "reason": "late"})
    assert answer["transaction_status"] == "partial_refund"
    with pytest.raises(midtransclient.error_midtrans.MidtransAPIError) as too_much:
        core.transactions.refund(order_id, {"refund_key": "backoffice-2", "amount": 60000})
    assert "414" in too_much.value.message

    # No notification reaches midpay here; `refund` asks Midtrans first, so the remainder
    # it refunds is Midtrans' figure, and the refund made elsewhere enters the ledger.
    rest = cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0, rest
    assert rest.json()["refund"]["amount"] == 50000
    assert sandbox.paid_out(order_id) == 90000

    doc = cli("status", order_id, "--no-refresh", "--json").json()
    assert doc["status"] == "refund"
    assert (doc["refunded_amount"], doc["refundable_amount"]) == (90000, 0)
    keys = {r["refund_key"]: r["amount"] for r in doc["refunds"]}
    assert keys["backoffice-1"] == 40000 and sum(keys.values()) == 90000
