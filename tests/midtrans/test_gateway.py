"""The Midtrans gateway over real HTTP against the in-process sandbox, plus its error mapping."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
import requests
import segno
from requests.adapters import BaseAdapter

import midpay
from midpay.errors import (
    DuplicateOrder,
    GatewayAuthError,
    GatewayError,
    GatewayProtocolError,
    GatewayUnavailable,
    MidpayError,
    MidtransRejected,
    OutcomeUnknown,
    TransactionNotFound,
)
from midpay.midtrans.gateway import AUTH_HINT, RETRY_AFTER_CAP, Gateway, basic_auth_header, build_retry
from midpay.midtrans.notifications import parse_view, verify_signature
from midpay.sandbox import SandboxServer

KEY = "SB-Mid-server-gateway-test-Zq81xK"


@pytest.fixture
def sandbox_key() -> str:
    """The sandbox of conftest.py, started with this module's key."""
    return KEY


@pytest.fixture
def gateway(sandbox: SandboxServer) -> Iterator[Gateway]:
    with Gateway(base_url=sandbox.url, server_key=KEY, timeout=3, retries=3, backoff=0.01) as gw:
        yield gw


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def charge(gw: Gateway, order_id: str, amount: int = 44000, **kwargs: Any) -> dict[str, Any]:
    return gw.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"key-{order_id}"[:46], **kwargs)


# --- shapes --------------------------------------------------------------------------------


def test_basic_auth_vector_from_the_docs() -> None:
    assert basic_auth_header("SB-Mid-server-abc123cde456") == "Basic U0ItTWlkLXNlcnZlci1hYmMxMjNjZGU0NTY6"


def test_charge_gopay_shape(gateway: Gateway, sandbox: SandboxServer) -> None:
    body = charge(gateway, "order-101")
    assert body["status_code"] == "201"
    assert body["status_message"] == "GO-PAY transaction is created"
    assert body["gross_amount"] == "44000.00" and body["currency"] == "IDR"
    assert (body["payment_type"], body["transaction_status"], body["fraud_status"]) == ("gopay", "pending", "accept")
    assert [a["name"] for a in body["actions"]] == ["generate-qr-code", "deeplink-redirect", "get-status", "cancel"]
    assert all(a["url"].startswith(sandbox.url) for a in body["actions"])
    view = parse_view(body)
    assert view.transaction_time is not None and view.expiry_time is not None
    assert view.expiry_time - view.transaction_time == timedelta(minutes=15)
    with requests.get(view.action_url("generate-qr-code") or "", timeout=5) as png:
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_charge_qris_shape_and_custom_expiry(gateway: Gateway) -> None:
    body = charge(gateway, "order03", 275000, payment_type="qris", expiry_minutes=60)
    assert body["status_message"] == "QRIS transaction is created"
    assert (body["payment_type"], body["acquirer"], body["gross_amount"]) == ("qris", "gopay", "275000.00")
    assert "expire_time" in body and "expiry_time" not in body
    assert [a["name"] for a in body["actions"]] == ["generate-qr-code"]
    view = parse_view(body)
    assert view.expiry_time is not None and view.transaction_time is not None
    assert view.expiry_time - view.transaction_time == timedelta(minutes=60)
    assert view.qr_string is not None and "275000.00" in view.qr_string
    assert view.qr_string.isprintable() and view.qr_string.isascii()


def test_qr_string_decodes_back(gateway: Gateway) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    qr_string = charge(gateway, "qr-1", 789000, payment_type="qris")["qr_string"]
    # No PIL or numpy here: draw segno's matrix into a grey-scale buffer zxing-cpp reads.
    matrix = [list(row) for row in segno.make(qr_string, error="m", micro=False).matrix]
    scale, border = 4, 4
    size = (len(matrix) + 2 * border) * scale
    pixels = bytearray(b"\xff" * size * size)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    start = ((y + border) * scale + dy) * size + (x + border) * scale
                    pixels[start : start + scale] = b"\x00" * scale
    found = zxingcpp.read_barcodes(memoryview(bytes(pixels)).cast("B", (size, size)))
    assert [barcode.text for barcode in found] == [qr_string]


# --- status ----------------------------------------------------------------------------------


def test_status_follows_the_payment(gateway: Gateway, sandbox: SandboxServer) -> None:
    charge(gateway, "s-1")
    pending = gateway.status("s-1")
    assert (pending["status_code"], pending["transaction_status"]) == ("201", "pending")
    assert verify_signature(pending, KEY)
    sandbox.pay("s-1", "settlement")
    settled = gateway.status("s-1")
    assert (settled["status_code"], settled["transaction_status"]) == ("200", "settlement")
    assert parse_view(settled).settlement_time is not None
    assert verify_signature(settled, KEY)


def test_expired_status_407_is_an_answer_not_an_error(gateway: Gateway) -> None:
    charge(gateway, "e-1")
    expired = gateway.expire("e-1")
    assert (expired["status_code"], expired["transaction_status"]) == ("407", "expire")
    status = gateway.status("e-1")
    assert (status["status_code"], status["transaction_status"]) == ("407", "expire")


def test_unknown_order_is_transaction_not_found(gateway: Gateway) -> None:
    with pytest.raises(TransactionNotFound, match="Transaction doesn't exist") as caught:
        gateway.status("never-charged")
    assert caught.value.exit_code == 1
    assert "'never-charged'" in str(caught.value)


def test_status_by_transaction_id(gateway: Gateway) -> None:
    body = charge(gateway, "by-tid")
    assert gateway.status(body["transaction_id"])["order_id"] == "by-tid"


# --- business errors ------------------------------------------------------------------------


def test_duplicate_order_is_406_until_cancelled(gateway: Gateway, sandbox: SandboxServer) -> None:
    charge(gateway, "dup-1")
    with pytest.raises(DuplicateOrder) as caught:
        gateway.charge(order_id="dup-1", gross_amount=44000, idempotency_key="another-key")
    assert caught.value.status_code == "406" and caught.value.body["status_code"] == "406"
    assert isinstance(caught.value, MidtransRejected)
    cancelled = gateway.cancel("dup-1")
    assert (cancelled["status_code"], cancelled["transaction_status"]) == ("200", "cancel")
    again = gateway.charge(order_id="dup-1", gross_amount=44000, idempotency_key="third-key")
    assert again["status_code"] == "201"
    assert sandbox.stats()["charges"] == {"dup-1": 2}


def test_bad_key_is_an_auth_error_with_a_hint(sandbox: SandboxServer) -> None:
    wrong = "SB-Mid-server-WRONG-k3y-77"
    with Gateway(base_url=sandbox.url, server_key=wrong, retries=0) as gw:
        with pytest.raises(GatewayAuthError) as caught:
            gw.status("anything")
        with pytest.raises(GatewayAuthError):
            gw.charge(order_id="x", gross_amount=1000, idempotency_key="k")
    assert caught.value.exit_code == 2
    assert AUTH_HINT in str(caught.value)
    assert wrong not in str(caught.value)
    assert sandbox.stats()["unauthorized"] == 2


def test_cancel_and_expire_only_pending(gateway: Gateway) -> None:
    charge(gateway, "c-1")
    gateway.cancel("c-1")
    for action in (gateway.cancel, gateway.expire):
        with pytest.raises(MidtransRejected, match="412 Merchant cannot modify the status") as caught:
            action("c-1")
        assert caught.value.status_code == "412"
    with pytest.raises(TransactionNotFound):
        gateway.cancel("no-such-order")


def test_refund_rules_and_refund_key_idempotency(gateway: Gateway, sandbox: SandboxServer) -> None:
    charge(gateway, "r-1", 50000)
    with pytest.raises(MidtransRejected, match="412"):
        gateway.refund("r-1", refund_key="too-early")
    sandbox.pay("r-1")
    first = gateway.refund("r-1", refund_key="r-1-refund-1", amount=10000, reason="size too small")
    assert (first["transaction_status"], first["refund_amount"]) == ("partial_refund", "10000.00")
    again = gateway.refund("r-1", refund_key="r-1-refund-1", amount=10000)
    assert again == first
    with pytest.raises(MidtransRejected, match="414") as caught:
        gateway.refund("r-1", refund_key="r-1-refund-2", amount=40001)
    assert caught.value.status_code == "414" and not isinstance(caught.value, DuplicateOrder)
    rest = gateway.refund("r-1", refund_key="r-1-refund-3")
    assert (rest["transaction_status"], rest["refund_amount"]) == ("refund", "40000.00")
    status = gateway.status("r-1")
    assert (status["transaction_status"], status["refund_amount"]) == ("refund", "50000.00")
    assert sandbox.stats()["refunds"] == {"r-1": 2}


# --- the transport -----------------------------------------------------------------------


def test_5xx_is_retried_then_unavailable(sandbox: SandboxServer) -> None:
    sandbox.set_faults(fail_rate=1.0)
    with Gateway(base_url=sandbox.url, server_key=KEY, retries=3, backoff=0.01) as gw:
        with pytest.raises(GatewayUnavailable, match=r"HTTP 50[03]") as caught:
            gw.status("o-1")
        with pytest.raises(GatewayUnavailable):
            gw.charge(order_id="o-2", gross_amount=1000, idempotency_key="k-o-2")
    assert caught.value.exit_code == 3
    stats = sandbox.stats()
    assert stats["requests"] == 8 and stats["faults"]["5xx"] == 8
    assert stats["by_endpoint"]["status"] == 4 and stats["by_endpoint"]["charge"] == 4
    assert stats["charges"] == {}  # a 5xx answers before anything happens


def test_429_is_retried_then_unavailable(sandbox: SandboxServer) -> None:
    sandbox.set_faults(rate_limit_rate=1.0)
    with Gateway(base_url=sandbox.url, server_key=KEY, retries=2, backoff=0.01) as gw:
        with pytest.raises(GatewayUnavailable, match="HTTP 429"):
            gw.status("o-1")
    assert sandbox.stats()["requests"] == 3


def seeded_attempts(seed: int) -> tuple[int, int]:
    with SandboxServer(server_key=KEY, fail_rate=0.5, seed=seed) as server:
        with Gateway(base_url=server.url, server_key=KEY, retries=8, backoff=0.001) as gw:
            server.set_faults(fail_rate=0.0)
            charge(gw, "flaky")
            server.set_faults(fail_rate=0.5)
            server.reset_stats()
            assert gw.status("flaky")["order_id"] == "flaky"
        stats = server.stats()
    return stats["requests"], stats["faults"]["5xx"]


def test_flaky_server_eventually_answers_reproducibly() -> None:
    requests_made, failures = seeded_attempts(seed=4)
    assert requests_made == failures + 1
    assert failures >= 2
    assert seeded_attempts(seed=4) == (requests_made, failures)


def test_stalled_server_gives_up_within_the_timeout(sandbox: SandboxServer) -> None:
    sandbox.set_faults(stall_rate=1.0, stall_seconds=30)
    with Gateway(base_url=sandbox.url, server_key=KEY, timeout=0.5, retries=3, backoff=0.01) as gw:
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown, match=r"timed out") as got:
            gw.status("slow")
        with pytest.raises(OutcomeUnknown, match="may or may not") as posted:
            gw.charge(order_id="slow", gross_amount=1000, idempotency_key="k-slow")
        elapsed = time.monotonic() - started
    assert elapsed < 3.0  # two calls, each cut at the 0.5 s read timeout
    assert "0.5 s" in str(got.value) and posted.value.exit_code == 3
    assert sandbox.stats()["requests"] == 2  # read timeouts are never retried


def test_malformed_answers_are_protocol_errors(sandbox: SandboxServer) -> None:
    sandbox.set_faults(malformed_rate=1.0, seed=11)
    with Gateway(base_url=sandbox.url, server_key=KEY, retries=3, backoff=0.01) as gw:
        messages = []
        for n in range(6):  # both kinds: an HTML page and truncated JSON
            with pytest.raises(GatewayProtocolError) as caught:
                gw.status(f"m-{n}")
            messages.append(str(caught.value))
    assert any("text/html" in m for m in messages) and any("application/json" in m for m in messages)
    assert all("HTTP 200" in m and "\n" not in m and KEY not in m for m in messages)
    assert sandbox.stats()["requests"] == 6


def test_closed_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Gateway(base_url=url, server_key=KEY, retries=1, backoff=0.01, timeout=2) as gw:
        with pytest.raises(GatewayUnavailable, match="could not connect") as caught:
            gw.status("o-1")
        with pytest.raises(GatewayUnavailable):
            gw.charge(order_id="o-1", gross_amount=1000, idempotency_key="k")
    assert caught.value.exit_code == 3
    assert isinstance(caught.value.__cause__, requests.ConnectionError)


def test_dropped_connection_is_outcome_unknown() -> None:
    # A server that reads the request and hangs up: it was sent, so nobody knows what happened.
    hangups = 0
    done = threading.Event()

    def hang_up(listener: socket.socket) -> None:
        nonlocal hangups
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                hangups += 1

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.05)
        thread = threading.Thread(target=hang_up, args=(listener,), daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Gateway(base_url=url, server_key=KEY, retries=3, backoff=0.01) as gw:
            with pytest.raises(OutcomeUnknown, match="dropped"):
                gw.status("o-1")
            with pytest.raises(OutcomeUnknown, match="may or may not"):
                gw.charge(order_id="o-1", gross_amount=1000, idempotency_key="k")
        done.set()
        thread.join(timeout=5)
    assert hangups == 2  # never retried


def test_bad_base_url_and_key() -> None:
    with pytest.raises(ValueError, match="base_url"):
        Gateway(base_url="api.midtrans.com", server_key=KEY)
    with pytest.raises(ValueError, match="server_key"):
        Gateway(base_url="https://api.midtrans.com", server_key="")


@pytest.mark.parametrize("order_id", ["a/b", "order #7", "with space", "50%off?x=1&y", "../../status", "pesanan-ü"])
def test_awkward_order_ids_round_trip(gateway: Gateway, sandbox: SandboxServer, order_id: str) -> None:
    created = charge(gateway, order_id, 1000)
    assert created["order_id"] == order_id
    assert gateway.status(order_id)["order_id"] == order_id
    assert gateway.cancel(order_id)["transaction_status"] == "cancel"
    assert sandbox.stats()["status_checks"] == {order_id: 1}


def test_same_idempotency_key_charges_once(gateway: Gateway, sandbox: SandboxServer) -> None:
    first = gateway.charge(order_id="idem-1", gross_amount=44000, idempotency_key="idem-key-1")
    second = gateway.charge(order_id="idem-1", gross_amount=44000, idempotency_key="idem-key-1")
    assert second == first
    assert sandbox.stats()["charges"] == {"idem-1": 1}
    assert sandbox.stats()["by_endpoint"]["charge"] == 2


def test_idempotency_key_limit_is_checked_before_sending(gateway: Gateway, sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="46"):
        gateway.charge(order_id="o", gross_amount=1000, idempotency_key="k" * 47)
    gateway.charge(order_id="o", gross_amount=1000, idempotency_key="k" * 46)
    assert sandbox.stats()["requests"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gross_amount": 0},
        {"gross_amount": -5},
        {"gross_amount": 10.5},
        {"gross_amount": True},
        {"payment_type": "credit_card"},
        {"expiry_minutes": 0},
        {"order_id": ""},
    ],
)
def test_bad_charge_arguments_are_value_errors(gateway: Gateway, kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"order_id": "o", "gross_amount": 1000, "idempotency_key": "k", **kwargs}
    with pytest.raises(ValueError):
        gateway.charge(**arguments)


def test_bad_refund_key_is_a_value_error(gateway: Gateway) -> None:
    with pytest.raises(ValueError, match="refund_key"):
        gateway.refund("o", refund_key="not allowed!")


def test_concurrent_calls_share_the_pool(sandbox: SandboxServer) -> None:
    with Gateway(base_url=sandbox.url, server_key=KEY, pool_size=32) as gw:
        charge(gw, "busy")
        failures: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(10):
                    assert gw.status("busy")["order_id"] == "busy"
            except (AssertionError, MidpayError) as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert sandbox.stats()["status_checks"] == {"busy": 320}


def test_retry_policy() -> None:
    retry = build_retry(3, 0.2)
    assert (retry.total, retry.connect, retry.status, retry.read) == (3, 3, 3, False)
    assert retry.status_forcelist is not None and set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert retry.allowed_methods is not None and {"GET", "POST"} <= set(retry.allowed_methods)
    assert retry.raise_on_status is False and retry.respect_retry_after_header
    assert retry.backoff_max <= 5
    # A server's Retry-After is obeyed but capped, also on the copies urllib3 makes per attempt.
    assert retry.parse_retry_after("3600") == RETRY_AFTER_CAP
    assert retry.increment("GET", "/v2/x/status").parse_retry_after("3600") == RETRY_AFTER_CAP
    assert retry.parse_retry_after("1") == 1


# --- error mapping, with a narrow fake adapter -----------------------------------------------


class FakeAdapter(BaseAdapter):
    """Answers every request with one canned response and remembers what was sent."""

    def __init__(self, status: int, body: bytes | str | object, content_type: str = "application/json") -> None:
        super().__init__()
        self.status = status
        if isinstance(body, bytes):
            self.body = body
        elif isinstance(body, str):
            self.body = body.encode()
        else:
            self.body = json.dumps(body).encode()
        self.content_type = content_type
        self.sent: list[tuple[requests.PreparedRequest, Mapping[str, Any]]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append((request, kwargs))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = self.content_type
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def fake_gateway(adapter: FakeAdapter) -> Gateway:
    session = requests.Session()
    session.mount("https://", adapter)
    return Gateway(base_url="https://api.sandbox.midtrans.com", server_key=KEY, session=session, timeout=7)


def call(adapter: FakeAdapter, operation: str = "status") -> dict[str, Any]:
    gw = fake_gateway(adapter)
    try:
        if operation == "charge":
            return gw.charge(order_id="o-1", gross_amount=1000, idempotency_key="k-1")
        if operation == "refund":
            return gw.refund("o-1", refund_key="rk")
        return gw.status("o-1")
    finally:
        gw.session.close()


def test_requests_carry_auth_json_headers_and_timeouts() -> None:
    adapter = FakeAdapter(200, {"status_code": "201", "order_id": "a/b #1"})
    gw = fake_gateway(adapter)
    with gw.session:
        gw.status("a/b #1")
        gw.charge(order_id="a/b #1", gross_amount=1000, idempotency_key="k-1", payment_type="qris", expiry_minutes=20)
        gw.cancel("a/b #1")
    (get, get_kwargs), (post, post_kwargs), (cancel, _) = adapter.sent
    assert get.url == "https://api.sandbox.midtrans.com/v2/a%2Fb%20%231/status"
    assert get.headers["Authorization"] == basic_auth_header(KEY)
    assert get.headers["Accept"] == "application/json"
    assert get.headers["User-Agent"] == f"midpay/{midpay.__version__}"
    assert "Idempotency-Key" not in get.headers
    assert get_kwargs["timeout"] == (7.0, 7.0)
    assert post.headers["Content-Type"] == "application/json" and post.headers["Idempotency-Key"] == "k-1"
    assert json.loads(post.body or b"") == {
        "payment_type": "qris",
        "transaction_details": {"order_id": "a/b #1", "gross_amount": 1000},
        "qris": {"acquirer": "gopay"},
        "custom_expiry": {"expiry_duration": 20, "unit": "minute"},
    }
    assert post_kwargs["timeout"] == (7.0, 7.0)
    assert len(cancel.headers["Idempotency-Key"]) == 36  # a fresh uuid4 for every POST


SPRING_404 = {
    "timestamp": "2024-05-17T06:24:01.223+0000",
    "status": 404,
    "error": "Not Found",
    "message": "Not Found",
    "path": "/v2/00561/05/ADI-IL/24JKT/status",
}


@pytest.mark.parametrize(
    ("status", "body", "content_type", "operation", "error", "text"),
    [
        (200, {"status_code": "401", "status_message": "no"}, "application/json", "status", GatewayAuthError,
         AUTH_HINT),
        (401, "<html>401</html>", "text/html", "status", GatewayAuthError, "401"),
        (404, SPRING_404, "application/json", "status", GatewayProtocolError, "HTTP 404"),
        (200, "<html>502 Bad Gateway</html>", "text/html", "status", GatewayProtocolError, "502 Bad Gateway"),
        (200, [1, 2], "application/json", "status", GatewayProtocolError, "JSON list"),
        (200, {"status_code": 201}, "application/json", "status", GatewayProtocolError, "without a status_code"),
        (200, "", "application/json", "status", GatewayProtocolError, "not JSON"),
        (302, "", "text/html", "status", GatewayProtocolError, "HTTP 302"),
        (400, {"status_code": "200"}, "application/json", "status", GatewayProtocolError, "HTTP 400"),
        (502, "<html>bad gateway</html>", "text/html", "status", GatewayUnavailable, "HTTP 502"),
        (200, {"status_code": "500", "status_message": "unexpected"}, "application/json", "charge",
         GatewayUnavailable, "500 unexpected"),
        (200, {"status_code": "404", "status_message": "Transaction doesn't exist."}, "application/json", "status",
         TransactionNotFound, "404"),
        (200, {"status_code": "406", "status_message": "conflict"}, "application/json", "charge", DuplicateOrder,
         "406 conflict"),
        (200, {"status_code": "406", "status_message": "Duplicate refund ID"}, "application/json", "refund",
         MidtransRejected, "Duplicate refund ID"),
        (200, {"status_code": "400", "status_message": "Validation Error"}, "application/json", "charge",
         MidtransRejected, "400 Validation Error"),
        (400, {"status_code": "400", "status_message": "bad"}, "application/json", "charge", MidtransRejected, "bad"),
        (200, {"status_code": "402", "status_message": "no access"}, "application/json", "charge",
         MidtransRejected, "402"),
        (202, "", "application/json", "charge", OutcomeUnknown, "still processing"),
    ],
)
def test_error_mapping(
    status: int, body: object, content_type: str, operation: str, error: type[MidpayError], text: str
) -> None:
    with pytest.raises(error) as caught:
        call(FakeAdapter(status, body, content_type), operation)
    assert type(caught.value) is error
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rejection_keeps_the_body_and_code() -> None:
    body = {"status_code": "412", "status_message": "Merchant cannot modify the status of the transaction"}
    with pytest.raises(MidtransRejected) as caught:
        call(FakeAdapter(200, body), "refund")
    assert caught.value.status_code == "412" and caught.value.body == body


def test_expired_407_is_returned() -> None:
    body = {"status_code": "407", "transaction_status": "expire", "order_id": "o-1", "gross_amount": "1.00"}
    assert call(FakeAdapter(200, body)) == body


def test_the_key_never_shows_in_errors_or_reprs(sandbox: SandboxServer) -> None:
    token = basic_auth_header(KEY).removeprefix("Basic ")
    echoed = {"status_code": "412", "status_message": f"bad key {KEY} / {token}"}
    raised: list[BaseException] = []
    for status, body in [(200, echoed), (502, echoed), (200, f"<html>{KEY} {token}</html>")]:
        try:
            call(FakeAdapter(status, body), "refund")
        except MidpayError as exc:
            raised.append(exc)
    sandbox.set_faults(fail_rate=1.0)
    with Gateway(base_url=sandbox.url, server_key=KEY, retries=0) as gw:
        with pytest.raises(GatewayError) as status_error:
            gw.status("o")
        with pytest.raises(GatewayError) as charge_error:
            gw.charge(order_id="o", gross_amount=1, idempotency_key="k")
        raised += [status_error.value, charge_error.value]
        assert KEY not in repr(gw) and token not in repr(gw)
        assert KEY not in repr(gw.__dict__.get("_auth"))
    assert len(raised) == 5
    for error in raised:
        assert KEY not in str(error) and KEY not in repr(error) and token not in str(error)
