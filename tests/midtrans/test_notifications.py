"""Signature check and parsing of Midtrans bodies, against the published samples."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midpay.errors import InvalidPayload
from midpay.midtrans.notifications import (
    JAKARTA,
    TransactionView,
    compute_signature,
    format_time,
    parse_amount,
    parse_notification,
    parse_time,
    parse_view,
    verify_signature,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "midtrans"
DOC_KEY = "SB-Mid-server-abc123cde456"  # the server key of Midtrans' docs examples


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return body


def signed(body: dict[str, Any], key: str = DOC_KEY) -> dict[str, Any]:
    """``body`` re-signed with ``key`` (the docs' samples carry placeholder signatures)."""
    signature = compute_signature(body["order_id"], body["status_code"], body["gross_amount"], key)
    return {**body, "signature_key": signature}


# --- signature ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_id", "status_code", "gross_amount", "expected"),
    [
        (
            "Order-5100",
            "200",
            "154600.00",
            "7290179af47a54b6545daa8513a369df22b3807f8c856ea1b4efc4baef9b987d"
            "4011e8077e94a1697e7a411182a35a3b4f5a976c5fe5cb78dbe8844ff87696ab",
        ),
        (
            "order03",
            "201",
            "275000.00",
            "67a0ef40d081d9ee1d15ee6f18c8bd08effd97cd56428be9aafe82241f24e6bc"
            "27b91654594644d6840bb0f7cda2c9b792a39f74603cf7549481a815cc7e735b",
        ),
        (
            "order03",
            "202",
            "275000.00",
            "83d11b408242ae8a5dc21f2f2f249339c4198c1e640973bca374e5998f7ac2fb"
            "618512d0c8476641c3d2fcf3e4b5b592be192e6a9389b1ea2e827830b71be496",
        ),
    ],
)
def test_signature_vectors(order_id: str, status_code: str, gross_amount: str, expected: str) -> None:
    assert compute_signature(order_id, status_code, gross_amount, DOC_KEY) == expected


def test_signature_mock_vector_uses_the_strings_as_given() -> None:
    # TokoBapak's mock signs an integer amount; the same formula over "50000" reproduces it,
    # and the real body's "50000.00" gives another value.
    assert compute_signature("AABBCC", "200", "50000", "SERVER KEY").startswith("019dabd4")
    assert compute_signature("AABBCC", "200", "50000.00", "SERVER KEY").startswith("c2866bd7ba096f21")


def test_verify_accepts_a_body_signed_over_its_raw_strings() -> None:
    body = signed(load("notification_gopay_settlement.json"))
    assert body["signature_key"].startswith("7290179a")
    assert verify_signature(body, DOC_KEY)
    assert verify_signature({**body, "signature_key": body["signature_key"].upper()}, DOC_KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"gross_amount": "154600"},  # reformatted amount: the most common signature bug
        {"gross_amount": 154600},
        {"gross_amount": "154601.00"},
        {"status_code": "201"},
        {"order_id": "Order-5101"},
        {"status_code": 200},
        {"signature_key": None},
        {"signature_key": ""},
        {"signature_key": "é" * 128},
        {"signature_key": 7290179},
    ],
)
def test_verify_refuses_tampered_or_odd_bodies(change: dict[str, Any]) -> None:
    body = {**signed(load("notification_gopay_settlement.json")), **change}
    assert verify_signature(body, DOC_KEY) is False


def test_verify_refuses_missing_fields_wrong_key_and_empty_key() -> None:
    body = signed(load("notification_gopay_settlement.json"))
    for name in ("order_id", "status_code", "gross_amount", "signature_key"):
        assert verify_signature({k: v for k, v in body.items() if k != name}, DOC_KEY) is False
    assert verify_signature(body, "SB-Mid-server-other") is False
    assert verify_signature(body, "") is False
    # The docs' own samples carry placeholder signatures that match nothing.
    assert verify_signature(load("notification_gopay_settlement.json"), DOC_KEY) is False


def test_verify_matches_an_independent_sha512() -> None:
    body = signed(load("notification_qris_pending.json"), "any key")
    expected = hashlib.sha512(("order03" + "201" + "275000.00" + "any key").encode()).hexdigest()
    assert body["signature_key"] == expected
    assert verify_signature(body, "any key")


# --- amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("44000.00", 44000), ("44000", 44000), (44000, 44000), ("0.00", 0), ("275000.000", 275000), ("1.0", 1)],
)
def test_parse_amount_accepts_whole_rupiah(raw: object, expected: int) -> None:
    assert parse_amount(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "44000.50", "44000.01", 44000.0, 44000.5, True, False, "-1", "-1.00", -5, "", " 44000", "44000 ",
        "1e3", "NaN", "Infinity", "4,000", "1_000", "\u0661\u0662\u0663", "44000.", ".5", "0x10", None, [], {},
        "99999999999999999999",
    ],
)
def test_parse_amount_refuses_everything_else_naming_the_field(raw: object) -> None:
    with pytest.raises(InvalidPayload, match="'gross_amount'"):
        parse_amount(raw)


def test_parse_amount_names_another_field() -> None:
    with pytest.raises(InvalidPayload, match="'refund_amount'") as caught:
        parse_amount("10.50", "refund_amount")
    assert "\n" not in str(caught.value)


@given(st.integers(min_value=0, max_value=10**15))
def test_parse_amount_round_trips_midtrans_formatting(amount: int) -> None:
    assert parse_amount(f"{amount}.00") == amount
    assert parse_amount(amount) == amount


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=99))
def test_parse_amount_never_rounds_away_a_fraction(amount: int, cents: int) -> None:
    with pytest.raises(InvalidPayload):
        parse_amount(f"{amount}.{cents:02d}")


# --- times -------------------------------------------------------------------------------


def test_parse_time_is_jakarta_time() -> None:
    moment = parse_time("2021-06-15 18:45:13", "transaction_time")
    assert moment is not None
    assert moment.utcoffset() == timedelta(hours=7)
    assert moment == datetime(2021, 6, 15, 11, 45, 13, tzinfo=UTC)
    assert moment.isoformat() == "2021-06-15T18:45:13+07:00"
    assert format_time(moment) == "2021-06-15 18:45:13"
    assert format_time(datetime(2021, 6, 15, 11, 45, 13, tzinfo=UTC)) == "2021-06-15 18:45:13"


def test_parse_time_absent_is_none() -> None:
    assert parse_time(None, "settlement_time") is None
    assert parse_time("", "settlement_time") is None


@pytest.mark.parametrize(
    "raw", ["2021-13-01 00:00:00", "2021-02-30 10:00:00", "2021-06-15T18:45:13Z", "yesterday", "2021-06-15", 1623757513]
)
def test_parse_time_refuses_other_forms_naming_the_field(raw: object) -> None:
    with pytest.raises(InvalidPayload, match="'settlement_time'"):
        parse_time(raw, "settlement_time")


# --- bodies ------------------------------------------------------------------------------


NOTIFICATIONS = {
    # file: (order_id, status, status_code, amount, payment_type)
    "notification_gopay_settlement.json": ("Order-5100", "settlement", "200", 154600, "gopay"),
    "notification_qris_settlement.json": ("qris-01", "settlement", "200", 5539, "qris"),
    "notification_qris_pending.json": ("order03", "pending", "201", 275000, "qris"),
    "notification_qris_settlement_order03.json": ("order03", "settlement", "200", 275000, "qris"),
    "notification_qris_expire.json": ("order03", "expire", "202", 275000, "qris"),
    "notification_qris_settlement_pos.json": ("order102", "settlement", "200", 789000, "qris"),
    "notification_cancel_card.json": ("160288131764", "cancel", "202", 244108, "credit_card"),
    "notification_expire_bank_transfer.json": ("1000176721005355", "expire", "202", 698879, "bank_transfer"),
}


@pytest.mark.parametrize("name", sorted(NOTIFICATIONS))
def test_published_notifications_parse(name: str) -> None:
    body = load(name)
    order_id, status, code, amount, payment_type = NOTIFICATIONS[name]
    view = parse_notification(body)
    assert (view.order_id, view.transaction_status, view.status_code) == (order_id, status, code)
    assert (view.gross_amount, view.gross_amount_raw, view.payment_type) == (amount, body["gross_amount"], payment_type)
    assert view.signature_key == body["signature_key"]
    assert view.status_message == "midtrans payment notification"
    assert view.transaction_time is not None and view.transaction_time.utcoffset() == timedelta(hours=7)
    assert (view.settlement_time is not None) == ("settlement_time" in body)
    assert view.raw is body
    # Re-signed with a known key, each verifies over its own raw strings.
    assert verify_signature(signed(body), DOC_KEY)


def test_gopay_settlement_fields() -> None:
    view = parse_notification(load("notification_gopay_settlement.json"))
    assert view.transaction_id == "513f1f01-c9da-474c-9fc9-d5c64364b709"
    assert view.fraud_status == "accept"
    assert view.settlement_time == datetime(2021, 6, 15, 18, 45, 28, tzinfo=JAKARTA)
    assert view.expiry_time is None and view.qr_string is None and view.actions == ()


def test_notification_extra_fields_are_ignored_but_kept() -> None:
    body = load("notification_qris_settlement_order03.json")
    view = parse_notification(body)
    assert view.raw["shopeepay_reference_number"] == "144854469038383602"
    assert "shopeepay_reference_number" not in repr(view)


STATUS_ANSWERS = {
    # file: (order_id, status, status_code, amount)
    "charge_response_gopay.json": ("order-101h-1570513296", "pending", "201", 44000),
    "charge_response_qris.json": ("order03", "pending", "201", 275000),
    "charge_response_qris_qr_string.json": ("order-id-12312", "pending", "201", 100000),
    "charge_response_qris_gist.json": ("order102", "pending", "201", 789000),
    "charge_response_qris_pos.json": ("order102", "pending", "201", 789000),
    "status_settlement_card.json": ("Postman-1578568851", "settlement", "200", 10000),
    "status_expire_gopay_407.json": ("1", "expire", "407", 23233),
    "status_pending_bank_transfer.json": ("0007398788", "pending", "201", 250000),
    "cancel_success.json": ("example-1424936368", "cancel", "200", 30000),
    "expire_success_407.json": ("vtmbill05", "expire", "407", 10000),
    "refund_partial.json": ("vtcc05", "partial_refund", "200", 10000),
    "refund_direct_success.json": ("MID-1620622357", "refund", "200", 10000),
    "refund_direct_denied.json": ("MID-1620622357", "settlement", "202", 10000),
}


@pytest.mark.parametrize("name", sorted(STATUS_ANSWERS))
def test_published_answers_parse(name: str) -> None:
    order_id, status, code, amount = STATUS_ANSWERS[name]
    view = parse_view(load(name))
    assert (view.order_id, view.transaction_status, view.status_code, view.gross_amount) == (
        order_id,
        status,
        code,
        amount,
    )


def test_gopay_charge_actions() -> None:
    view = parse_view(load("charge_response_gopay.json"))
    assert [a["name"] for a in view.actions] == ["generate-qr-code", "deeplink-redirect", "get-status", "cancel"]
    assert view.actions[3] == {
        "name": "cancel",
        "method": "POST",
        "url": "https://api.sandbox.veritrans.co.id/v2/231c79c5-e39e-4993-86da-cadcaee56c1d/cancel",
    }
    assert view.action_url("generate-qr-code") is not None
    assert view.action_url("generate-qr-code-v2") is None
    assert view.transaction_time == datetime(2019, 10, 8, 12, 41, 36, tzinfo=JAKARTA)


def test_qris_charge_expire_time_is_read_as_expiry_time() -> None:
    view = parse_view(load("charge_response_qris_qr_string.json"))
    assert view.expiry_time == datetime(2023, 1, 5, 11, 1, 39, tzinfo=JAKARTA)
    assert view.qr_string is not None and view.qr_string.startswith("000201")
    assert view.payment_type == "qris"
    assert view.action_url("generate-qr-code") == (
        "https://api.sandbox.midtrans.com/v2/qris/30a689ba-7251-4052-b8a0-f677fd53e1be/qr-code"
    )


def test_expiry_time_wins_over_expire_time() -> None:
    body = {**load("charge_response_qris_qr_string.json"), "expiry_time": "2023-01-05 12:00:00"}
    assert parse_view(body).expiry_time == datetime(2023, 1, 5, 12, 0, tzinfo=JAKARTA)


# Verbatim from the Get Status docs (DANA): the `actions` array is never closed, and the
# status is upper case. Repaired only by closing the array.
DANA_PENDING_VERBATIM = (
    '{\n "status_code": "200",\n "transaction_id": "78068ef3-e797-4eef-945e-e8516a312916",\n'
    ' "gross_amount": "238429.00",\n "currency": "IDR",\n "order_id": "test-merchant-order-xyz",\n'
    ' "payment_type": "dana",\n "signature_key": "d60dc0a9c7c3cd5c20399d99d56968c241dbaacc26444c2eebc541d3b0fad594'
    'cefb50dd866a83089ecba785bd153ee95c03d81a35ccf82689b15d8f57bdbb80",\n "transaction_status": "PENDING",\n'
    ' "fraud_status": "accept",\n "status_message": "Success, transaction is found",\n "merchant_id": "G123456",\n'
    ' "transaction_time": "2025-11-03 12:45:47",\n "expiry_time": "2025-11-03 13:00:47",\n "actions": [\n \t{\n'
    ' \t\t"name": "deeplink-redirect",\n \t\t"method": "GET",\n \t\t"url": "https://m.dana.id/transaction_page"\n'
    " \t}\n}\n"
)


def test_upper_case_pending_is_lower_cased() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(DANA_PENDING_VERBATIM)
    repaired = DANA_PENDING_VERBATIM.replace(" \t}\n}", " \t}\n ]\n}")
    view = parse_view(json.loads(repaired))
    assert view.transaction_status == "pending"
    assert view.raw["transaction_status"] == "PENDING"
    assert view.expiry_time == datetime(2025, 11, 3, 13, 0, 47, tzinfo=JAKARTA)
    assert view.action_url("deeplink-redirect") == "https://m.dana.id/transaction_page"


@pytest.mark.parametrize("name", ["order_id", "transaction_status", "gross_amount"])
def test_missing_required_field_is_named(name: str) -> None:
    body = load("notification_gopay_settlement.json")
    del body[name]
    with pytest.raises(InvalidPayload) as caught:
        parse_notification(body)
    assert str(caught.value) == f"notification field '{name}' is missing"
    with pytest.raises(InvalidPayload, match=f"status answer field '{name}' is missing"):
        parse_view(body, what="status answer")


@pytest.mark.parametrize("name", ["status_code", "signature_key"])
def test_notification_needs_what_its_signature_needs(name: str) -> None:
    body = load("notification_gopay_settlement.json")
    del body[name]
    parse_view(body)  # an answer may go without
    with pytest.raises(InvalidPayload, match=f"notification field '{name}' is missing"):
        parse_notification(body)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("order_id", 5100, "field 'order_id' must be a string, not int"),
        ("order_id", "  ", "field 'order_id' is empty"),
        ("transaction_status", ["settlement"], "field 'transaction_status' must be a string, not list"),
        ("gross_amount", 154600.0, "field 'gross_amount' must be a string"),
        ("gross_amount", "154600.50", "field 'gross_amount' has a fraction"),
        ("transaction_id", 42, "field 'transaction_id' must be a string, not int"),
        ("settlement_time", "15/06/2021", "field 'settlement_time' is not a time"),
        ("actions", {"name": "x"}, "field 'actions' must be a list"),
        ("actions", ["x"], "field 'actions' holds a str"),
        ("status_code", 200, "field 'status_code' must be a string, not int"),
    ],
)
def test_wrong_types_are_named(name: str, value: object, message: str) -> None:
    body = {**load("notification_gopay_settlement.json"), name: value}
    with pytest.raises(InvalidPayload, match=message) as caught:
        parse_notification(body)
    assert str(caught.value).startswith("notification ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("body", [None, [], "{}", 42, b"{}"])
def test_non_object_bodies_are_refused(body: object) -> None:
    with pytest.raises(InvalidPayload, match="not a JSON object"):
        parse_view(body)
    with pytest.raises(InvalidPayload, match="not a JSON object"):
        parse_notification(body)


def test_optional_fields_may_be_null() -> None:
    body = {"order_id": "o-1", "transaction_status": "pending", "gross_amount": "1000.00", "settlement_time": None}
    view = parse_view(body)
    assert view.status_code == "" and view.transaction_id is None and view.settlement_time is None
    assert view.gross_amount == 1000


def test_view_is_frozen() -> None:
    view = parse_view(load("charge_response_gopay.json"))
    assert isinstance(view, TransactionView)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.transaction_status = "settlement"  # type: ignore[misc]
