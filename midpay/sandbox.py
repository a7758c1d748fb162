"""A local Midtrans-compatible Core API for development, tests, demos and benchmarks.

    POST /v2/charge                 gopay, or qris with acquirer gopay
    GET  /v2/{order|txn id}/status  status_code 201 pending, 200 settlement/cancel/refund,
                                    202 deny, 407 expire, 404 unknown
    POST /v2/{id}/cancel|expire|refund
    GET  /v2/gopay|qris/{txn id}/qr-code   a PNG of the QR (no auth, like Midtrans)

Shapes follow Midtrans' published samples: errors come back as HTTP 200 with the error
in the body's ``status_code`` (404, 406, 412, 414, ...), except 401 (HTTP 401) and the
injected faults; a charge is HTTP 200 with body ``"201"``. ``Idempotency-Key`` (up to 46
characters) replays the saved successful answer for 300 s. A pending order past its
expiry turns ``expire`` the next time anything looks at it.

Every state change (``pay()``, cancel, expire, refund, lazy expiry) emits a signed
notification: POSTed to ``notify_url`` and written to ``notify_dir``, as Midtrans would.

Faults, drawn per ``/v2`` request from ``random.Random(seed)`` (reproducible when the
requests come in the same order):

    fail_rate        HTTP 500/503 before anything happens (safe to retry)
    rate_limit_rate  HTTP 429 before anything happens
    stall_rate       wait ``stall_seconds`` (cut short by stop()), then process and answer
    malformed_rate   process, then answer HTTP 200 with an HTML page or truncated JSON
                     (the request took effect; only its answer is lost)

Control endpoints for other processes (no auth): ``POST /_sandbox/pay/{order_id}``
``{"status": "settlement"}``, ``GET /_sandbox/stats``, ``POST /_sandbox/reset``,
``POST /_sandbox/faults``, ``GET /_sandbox/orders[/{id}]``, ``GET /_sandbox/health``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import io
import json
import logging
import os
import random
import re
import signal
import socket
import socketserver
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from midpay.errors import (
    GatewayProtocolError,
    GatewayUnavailable,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    UsageError,
)
from midpay.notifications import JAKARTA, compute_signature, format_time

log = logging.getLogger(__name__)

DEV_SERVER_KEY = "SB-Mid-server-midpay-sandbox-dev"
MERCHANT_ID = "G000000001"
PAY_STATUSES: Final = ("settlement", "expire", "cancel", "deny", "pending")
IDEMPOTENCY_TTL = 300.0
IDEMPOTENCY_KEY_MAX = 46
ORDER_ID_MAX = 50
MAX_BODY = 1 << 20
MAX_EXPIRY = timedelta(days=7)

# Get Status (and API answers) vs notifications use different codes for the same state.
ANSWER_CODES: Final = {
    "pending": "201",
    "settlement": "200",
    "capture": "200",
    "cancel": "200",
    "refund": "200",
    "partial_refund": "200",
    "deny": "202",
    "expire": "407",
}
NOTIFICATION_CODES: Final = {
    "pending": "201",
    "settlement": "200",
    "capture": "200",
    "refund": "200",
    "partial_refund": "200",
    "cancel": "202",
    "deny": "202",
    "expire": "202",
}
_REUSABLE = frozenset({"expire", "cancel"})  # Midtrans frees the order id after these
_REFUNDABLE = frozenset({"settlement", "partial_refund"})
_ENDPOINTS = ("charge", "status", "cancel", "expire", "refund", "qr-code", "other")
_FAULT_KINDS = ("5xx", "429", "stall", "malformed")
_REFUND_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]", re.ASCII)
_EXPIRY_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}
_AUTH_FAILED = "Transaction cannot be authorized with the current client/server key."
_NOT_FOUND = "Transaction doesn't exist."
_CANNOT_MODIFY = "Merchant cannot modify the status of the transaction"
_INVALID = "One or more parameters in the payload is invalid."
_SYNTAX_ERROR = "The request cannot be processed due to syntax error in the request body"


# -- small pieces ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), "application/json", headers)


def _midtrans_error(code: str, message: str, **extra: object) -> dict[str, Any]:
    return {"status_code": code, "status_message": message, **extra, "id": str(uuid.uuid4())}


def _money(amount: int) -> str:
    return f"{amount}.00"


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _crc16_ccitt(text: str) -> str:
    """CRC-16/CCITT-FALSE, the checksum that ends every EMVCo (QRIS) payload."""
    crc = 0xFFFF
    for byte in text.encode("ascii"):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return f"{crc:04X}"


def qris_payload(transaction_id: str, amount: int) -> str:
    """An EMVCo-style dynamic QRIS string for this transaction (printable ASCII, QR-encodable)."""
    merchant = _tlv("00", "COM.GO-JEK.WWW") + _tlv("01", "936009140000000001") + _tlv("02", MERCHANT_ID)
    merchant += _tlv("03", "UKE")
    reference = _tlv("05", transaction_id.replace("-", "")[:25]) + _tlv("07", "A01")
    payload = (
        _tlv("00", "01")
        + _tlv("01", "12")
        + _tlv("26", merchant)
        + _tlv("52", "5814")
        + _tlv("53", "360")
        + _tlv("54", _money(amount))
        + _tlv("58", "ID")
        + _tlv("59", "MIDPAY SANDBOX")
        + _tlv("60", "JAKARTA")
        + _tlv("61", "12190")
        + _tlv("62", reference)
        + "6304"
    )
    return payload + _crc16_ccitt(payload)


def safe_file_stem(order_id: str) -> str:
    """``order_id`` usable in a file name; a hash suffix keeps 'a/b' and 'a_b' apart."""
    stem = _UNSAFE_NAME_RE.sub("_", order_id).lstrip(".")[:80] or "order"
    if stem != order_id:
        stem += "-" + format(binascii.crc32(order_id.encode()), "08x")
    return stem


@dataclass
class _Txn:
    """One Midtrans transaction of the sandbox (an order id may have several over time)."""

    transaction_id: str
    order_id: str
    payment_type: str
    gross_amount: int
    created: datetime
    expires: datetime
    status: str = "pending"
    settled: datetime | None = None
    refunded: int = 0
    refunds: list[dict[str, Any]] = field(default_factory=list)
    refund_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: int = 0
    qr_string: str | None = None

    @property
    def amount(self) -> str:
        return _money(self.gross_amount)


@dataclass
class _Faults:
    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    stall_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_ms: int = 0
    stall_seconds: float = 30.0

    def as_dict(self) -> dict[str, float]:
        return {
            "fail_rate": self.fail_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "stall_rate": self.stall_rate,
            "malformed_rate": self.malformed_rate,
            "latency_ms": self.latency_ms,
            "stall_seconds": self.stall_seconds,
        }


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1")
    return float(value)


def _fresh_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_endpoint": dict.fromkeys(_ENDPOINTS, 0),
        "status_checks": {},
        "charges": {},
        "refunds": {},
        "faults": dict.fromkeys(_FAULT_KINDS, 0),
        "unauthorized": 0,
        "notifications": {"emitted": 0, "written": 0, "posted": 0, "failed": 0},
    }


_Emit = tuple[str, str, int, dict[str, Any]]  # order id, status, per-order number, body


# -- the HTTP plumbing -------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() cuts open keep-alive connections itself
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: SandboxServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would do a reverse DNS lookup of the host; not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "midpay-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    wbufsize = -1  # headers and body leave in one write (flushed after each request)
    timeout = 120  # idle keep-alive connections are closed after this

    @property
    def app(self) -> SandboxServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.app

    def setup(self) -> None:
        super().setup()
        self.app._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.app._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(_json_reply(411, {"sandbox_error": "send a Content-Length, not chunks"}))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(_json_reply(413, {"sandbox_error": "bad or too large Content-Length"}))
            return
        data = self.rfile.read(length) if length else b""
        try:
            reply = self.app._dispatch(method, self.path, self.headers, data)
        except Exception:  # a sandbox bug must answer 500, not kill the connection thread
            log.exception("sandbox failed on %s %s", method, self.path)
            reply = _json_reply(500, _midtrans_error("500", "sandbox internal error"))
        if reply is None:  # stopped while stalling: hang up without an answer
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (read timeout) or stop() cut the socket
            self.close_connection = True


# -- the sandbox -----------------------------------------------------------------------


class SandboxServer:
    """A Midtrans-compatible Core API in a background thread of this process."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_key: str | None = None,
        latency_ms: int = 0,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        stall_seconds: float = 30.0,
        seed: int | None = None,
        expiry_seconds: int = 900,
        notify_url: str | None = None,
        notify_dir: Path | None = None,
    ) -> None:
        if expiry_seconds <= 0:
            raise ValueError("expiry_seconds must be positive")
        self.host = host
        self.port = port
        self.server_key = server_key or DEV_SERVER_KEY
        self.using_dev_key = self.server_key == DEV_SERVER_KEY
        self.expiry_seconds = expiry_seconds
        self.notify_url = notify_url
        self.notify_dir = Path(notify_dir) if notify_dir is not None else None
        self.url = ""
        self._lock = threading.Lock()  # orders, idempotency cache, stats
        self._fault_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = _Faults()
        self.set_faults(
            fail_rate=fail_rate,
            rate_limit_rate=rate_limit_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            latency_ms=latency_ms,
            stall_seconds=stall_seconds,
        )
        self._txns: dict[str, _Txn] = {}  # by transaction id
        self._by_order: dict[str, str] = {}  # order id -> its latest transaction id
        self._idempotent: OrderedDict[str, tuple[float, _Reply]] = OrderedDict()
        self._stats = _fresh_stats()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url!r}, dev_key={self.using_dev_key})"

    # -- lifecycle --

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; ``url`` is set once this returns."""
        if self._httpd is not None:
            return self
        try:
            httpd = _HTTPServer((self.host, self.port), self)
        except OSError as exc:
            raise UsageError(f"the sandbox cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self._stopping.clear()
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="midpay-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, waking stalled requests and closing keep-alive connections; never hangs."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- inspection and control --

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last ``reset_stats()`` (a deep copy)."""
        with self._lock:
            result: dict[str, Any] = json.loads(json.dumps(self._stats))
        return result

    def reset_stats(self) -> None:
        """Zero the counters; orders are kept."""
        with self._lock:
            self._stats = _fresh_stats()

    def set_faults(
        self,
        *,
        fail_rate: float | None = None,
        rate_limit_rate: float | None = None,
        stall_rate: float | None = None,
        malformed_rate: float | None = None,
        latency_ms: int | None = None,
        stall_seconds: float | None = None,
        seed: int | None = None,
    ) -> dict[str, float]:
        """Change fault rates (0..1), latency and stall length at run time; returns them all."""
        with self._fault_lock:
            faults = dataclasses.replace(self._faults)
            if fail_rate is not None:
                faults.fail_rate = _check_rate("fail_rate", fail_rate)
            if rate_limit_rate is not None:
                faults.rate_limit_rate = _check_rate("rate_limit_rate", rate_limit_rate)
            if stall_rate is not None:
                faults.stall_rate = _check_rate("stall_rate", stall_rate)
            if malformed_rate is not None:
                faults.malformed_rate = _check_rate("malformed_rate", malformed_rate)
            if latency_ms is not None:
                if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or latency_ms < 0:
                    raise ValueError("latency_ms must be a whole number >= 0")
                faults.latency_ms = latency_ms
            if stall_seconds is not None:
                if isinstance(stall_seconds, bool) or not isinstance(stall_seconds, int | float) or stall_seconds < 0:
                    raise ValueError("stall_seconds must be a number >= 0")
                faults.stall_seconds = float(stall_seconds)
            if seed is not None:
                self._rng.seed(seed)
            self._faults = faults
            return faults.as_dict()

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        """A snapshot of the latest transaction of ``order_id`` (or of a transaction id)."""
        emits: list[_Emit] = []
        with self._lock:
            txn = self._find(order_id)
            if txn is not None:
                self._expire_if_due(txn, emits)
            snapshot = self._snapshot(txn) if txn is not None else None
        self._emit_all(emits)
        return snapshot

    def orders(self) -> list[dict[str, Any]]:
        """Snapshots of the latest transaction of every order."""
        emits: list[_Emit] = []
        with self._lock:
            txns = [self._txns[tid] for tid in self._by_order.values()]
            for txn in txns:
                self._expire_if_due(txn, emits)
            snapshots = [self._snapshot(txn) for txn in txns]
        self._emit_all(emits)
        return snapshots

    def pay(self, order_id: str, status: str = "settlement") -> dict[str, Any]:
        """Move an order as its customer would and emit the signed notification, which is returned.

        ``status`` is settlement, expire, cancel or deny (from pending), or the order's
        current status to send its notification again. Raises UsageError for another
        status, NotFoundError for an unknown order, MidtransRejected (412) for a move out
        of a final state.
        """
        if status not in PAY_STATUSES:
            raise UsageError(f"status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
        emits: list[_Emit] = []
        error: MidtransRejected | None = None
        note: dict[str, Any] = {}
        with self._lock:
            txn = self._find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            self._expire_if_due(txn, emits)
            if txn.status == status:
                note = self._queue_notification(txn, emits)
            elif txn.status == "pending" and status != "pending":
                note = self._move(txn, status, emits)
            else:
                error = MidtransRejected(
                    f"order {txn.order_id!r} is {txn.status}; the sandbox cannot move it to {status}",
                    "412",
                    {"status_code": "412", "status_message": _CANNOT_MODIFY},
                )
        self._emit_all(emits)
        if error is not None:
            raise error
        return note

    # -- state (all called with self._lock held) --

    def _now(self) -> datetime:
        return datetime.now(JAKARTA)

    def _find(self, ident: str) -> _Txn | None:
        tid = self._by_order.get(ident)
        if tid is not None:
            return self._txns[tid]
        return self._txns.get(ident)

    def _expire_if_due(self, txn: _Txn, emits: list[_Emit]) -> None:
        if txn.status == "pending" and self._now() >= txn.expires:
            self._move(txn, "expire", emits)

    def _move(self, txn: _Txn, status: str, emits: list[_Emit]) -> dict[str, Any]:
        txn.status = status
        if status == "settlement" and txn.settled is None:
            txn.settled = self._now()
        return self._queue_notification(txn, emits)

    def _queue_notification(self, txn: _Txn, emits: list[_Emit]) -> dict[str, Any]:
        txn.notifications += 1
        body = self._notification(txn)
        emits.append((txn.order_id, txn.status, txn.notifications, body))
        self._stats["notifications"]["emitted"] += 1
        return body

    def _notification(self, txn: _Txn) -> dict[str, Any]:
        code = NOTIFICATION_CODES[txn.status]
        body: dict[str, Any] = {}
        if txn.payment_type == "qris" and txn.settled is not None:
            body["transaction_type"] = "on-us"
        body.update(
            {
                "transaction_time": format_time(txn.created),
                "transaction_status": txn.status,
                "transaction_id": txn.transaction_id,
                "status_message": "midtrans payment notification",
                "status_code": code,
                "signature_key": compute_signature(txn.order_id, code, txn.amount, self.server_key),
            }
        )
        if txn.settled is not None:
            body["settlement_time"] = format_time(txn.settled)
        body.update(
            {
                "payment_type": txn.payment_type,
                "order_id": txn.order_id,
                "merchant_id": MERCHANT_ID,
            }
        )
        if txn.payment_type == "qris" and txn.settled is not None:
            body["issuer"] = "gopay"
        body.update({"gross_amount": txn.amount, "fraud_status": "accept", "currency": "IDR"})
        if txn.payment_type == "qris":
            body["acquirer"] = "gopay"
        if txn.refunds:
            body["refund_amount"] = _money(txn.refunded)
            body["refunds"] = [dict(refund) for refund in txn.refunds]
        return body

    def _snapshot(self, txn: _Txn) -> dict[str, Any]:
        return {
            "order_id": txn.order_id,
            "transaction_id": txn.transaction_id,
            "payment_type": txn.payment_type,
            "gross_amount": txn.gross_amount,
            "transaction_status": txn.status,
            "transaction_time": format_time(txn.created),
            "expiry_time": format_time(txn.expires),
            "settlement_time": format_time(txn.settled) if txn.settled else None,
            "refunded_amount": txn.refunded,
            "refunds": [dict(refund) for refund in txn.refunds],
            "notifications": txn.notifications,
            "qr_string": txn.qr_string,
        }

    def _count(self, table: str, key: str) -> None:
        counts = self._stats[table]
        counts[key] = counts.get(key, 0) + 1

    # -- notifications (called without the lock) --

    def _emit_all(self, emits: list[_Emit]) -> None:
        for order_id, status, number, body in emits:
            if self.notify_dir is not None:
                self._write_notification(order_id, status, number, body)
            if self.notify_url is not None:
                self._post_notification(body)

    def _write_notification(self, order_id: str, status: str, number: int, body: dict[str, Any]) -> None:
        assert self.notify_dir is not None
        path = self.notify_dir / f"{safe_file_stem(order_id)}-{status}-{number}.json"
        partial = path.with_name(path.name + ".part")
        try:
            self.notify_dir.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, path)  # readers never see half a file
        except OSError as exc:
            log.warning("sandbox could not write %s: %s", path, exc.strerror)
            with self._lock:
                self._stats["notifications"]["failed"] += 1
            return
        with self._lock:
            self._stats["notifications"]["written"] += 1

    def _post_notification(self, body: dict[str, Any]) -> None:
        import requests

        assert self.notify_url is not None
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "Veritrans"}
        try:
            response = requests.post(self.notify_url, timeout=(5, 15), data=json.dumps(body), headers=headers)
            response.close()
            posted = response.ok
        except requests.RequestException as exc:
            log.warning("sandbox could not POST the notification of %r: %s", body.get("order_id"), type(exc).__name__)
            posted = False
        with self._lock:
            self._stats["notifications"]["posted" if posted else "failed"] += 1

    # -- request dispatch --

    def _dispatch(self, method: str, target: str, headers: Any, data: bytes) -> _Reply | None:
        raw_path = urlsplit(target).path
        segments = [unquote(part) for part in raw_path.split("/")[1:]]
        if segments and segments[0] == "_sandbox":
            return self._control(method, segments[1:], data)
        if segments and segments[0] == "v2":
            return self._api(method, segments[1:], raw_path, headers, data)
        return self._spring_404(raw_path)

    def _spring_404(self, raw_path: str) -> _Reply:
        # What Midtrans' own front answers for a path it has no route for.
        return _json_reply(
            404,
            {
                "timestamp": datetime.now(JAKARTA).isoformat(timespec="milliseconds"),
                "status": 404,
                "error": "Not Found",
                "message": "Not Found",
                "path": raw_path,
            },
        )

    @staticmethod
    def _classify(method: str, parts: list[str]) -> tuple[str, str]:
        """(endpoint, id) of a /v2 path (its segments after 'v2', already percent-decoded)."""
        if method == "POST" and parts == ["charge"]:
            return "charge", ""
        if len(parts) == 2 and parts[0]:
            if method == "GET" and parts[1] == "status":
                return "status", parts[0]
            if method == "POST" and parts[1] in ("cancel", "expire", "refund"):
                return parts[1], parts[0]
        if method == "GET" and len(parts) == 3 and parts[0] in ("gopay", "qris") and parts[2] == "qr-code":
            return "qr-code", parts[1]
        return "other", ""

    def _api(self, method: str, parts: list[str], raw_path: str, headers: Any, data: bytes) -> _Reply | None:
        endpoint, ident = self._classify(method, parts)
        with self._lock:
            self._stats["requests"] += 1
            self._stats["by_endpoint"][endpoint] += 1
            if endpoint == "status":
                txn = self._find(ident)
                self._count("status_checks", txn.order_id if txn is not None else ident)

        with self._fault_lock:
            faults = self._faults
            draw = self._rng.random()
            variant = self._rng.random()
        if faults.latency_ms and self._stopping.wait(faults.latency_ms / 1000):
            return None
        fault = None
        edge = 0.0
        for kind, rate in zip(
            _FAULT_KINDS,
            (faults.fail_rate, faults.rate_limit_rate, faults.stall_rate, faults.malformed_rate),
            strict=True,
        ):
            edge += rate
            if draw < edge:
                fault = kind
                break
        if fault is not None:
            with self._lock:
                self._stats["faults"][fault] += 1
        if fault == "5xx":
            if variant < 0.5:
                return _json_reply(
                    500, _midtrans_error("500", "Sorry. Our system is recovering from unexpected issues. Please retry.")
                )
            return _json_reply(
                503, _midtrans_error("503", "Bank/partner is experiencing connection issue. Please retry later.")
            )
        if fault == "429":
            return _json_reply(429, _midtrans_error("429", "API rate limit exceeded"))
        if fault == "stall" and self._stopping.wait(faults.stall_seconds):
            return None

        if endpoint == "qr-code":  # hotlinked from <img>: no auth, like Midtrans
            reply = self._qr_code(ident)
        elif not self._authorized(headers.get("Authorization")):
            with self._lock:
                self._stats["unauthorized"] += 1
            reply = _json_reply(401, _midtrans_error("401", _AUTH_FAILED))
        elif endpoint == "other":
            reply = self._spring_404(raw_path)
        else:
            reply = self._process(endpoint, ident, headers, data)

        if fault == "malformed":
            if variant < 0.5:
                return _Reply(200, b"<html>502 Bad Gateway</html>", "text/html")
            return _Reply(200, reply.body[: max(1, len(reply.body) // 2)], "application/json")
        return reply

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user = decoded.split(b":", 1)[0]
        return hmac.compare_digest(user, self.server_key.encode())

    def _process(self, endpoint: str, ident: str, headers: Any, data: bytes) -> _Reply:
        key = headers.get("Idempotency-Key") if endpoint != "status" else None  # POSTs only
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            key = None  # Midtrans ignores over-long keys
        emits: list[_Emit] = []
        with self._lock:
            now = time.monotonic()
            while self._idempotent:
                oldest = next(iter(self._idempotent.values()))
                if oldest[0] > now:
                    break
                self._idempotent.popitem(last=False)
            if key is not None and key in self._idempotent:
                return self._idempotent[key][1]
            if endpoint == "charge":
                status, payload = self._charge(data, headers.get("Host"), emits)
            elif endpoint == "status":
                status, payload = self._status(ident, emits)
            elif endpoint == "refund":
                status, payload = self._refund(ident, data, emits)
            else:
                status, payload = self._end(ident, endpoint, emits)
            reply = _json_reply(status, payload)
            if key is not None and payload.get("status_code") in ("200", "201", "202", "407"):
                self._idempotent[key] = (now + IDEMPOTENCY_TTL, reply)
        self._emit_all(emits)
        return reply

    def _charge(self, data: bytes, host: str | None, emits: list[_Emit]) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(data or b"null")
        except ValueError:
            return 200, _midtrans_error("413", _SYNTAX_ERROR)
        if not isinstance(request, dict):
            return 200, _midtrans_error("500", "An unexpected error occurred: the request body is not an object")
        problems: list[str] = []
        payment_type = request.get("payment_type")
        details = request.get("transaction_details")
        if not isinstance(details, dict):
            details = {}
            problems.append("transaction_details is required")
        order_id = details.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            problems.append("transaction_details.order_id is required")
        elif len(order_id) > ORDER_ID_MAX:
            problems.append(f"transaction_details.order_id must be at most {ORDER_ID_MAX} characters")
        amount = details.get("gross_amount")
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        if isinstance(amount, str) and amount.isascii() and amount.isdigit():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            problems.append("transaction_details.gross_amount must be a whole number")
        elif amount <= 0:
            problems.append("transaction_details.gross_amount must be greater than or equal to 0.01")
        if not isinstance(payment_type, str) or not payment_type:
            problems.append("payment_type is required")
        lifetime = timedelta(seconds=self.expiry_seconds)
        custom = request.get("custom_expiry")
        if custom is not None:
            duration = custom.get("expiry_duration") if isinstance(custom, dict) else None
            unit = custom.get("unit") if isinstance(custom, dict) else None
            if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
                problems.append("custom_expiry.expiry_duration must be a positive whole number")
            elif unit not in _EXPIRY_UNITS:
                problems.append("custom_expiry.unit must be minute, hour or day")
            else:
                lifetime = timedelta(seconds=duration * _EXPIRY_UNITS[str(unit)])
                if lifetime > MAX_EXPIRY:
                    problems.append("custom_expiry exceeds the maximum of 7 days")
        if problems:
            return 200, _midtrans_error("400", _INVALID, validation_messages=problems)
        assert isinstance(order_id, str) and isinstance(amount, int) and isinstance(payment_type, str)
        qris = request.get("qris")
        acquirer = qris.get("acquirer", "gopay") if isinstance(qris, dict) else "gopay"
        if payment_type not in ("gopay", "qris") or (payment_type == "qris" and acquirer != "gopay"):
            return 200, _midtrans_error("402", "Merchant does not have access for this payment type")

        existing = self._find_order(order_id)
        if existing is not None:
            self._expire_if_due(existing, emits)
            if existing.status not in _REUSABLE:
                return 200, _midtrans_error(
                    "406",
                    "The request could not be completed due to a conflict with the current state of the "
                    "target resource, please try again",
                )
        now = self._now()
        txn = _Txn(
            transaction_id=str(uuid.uuid4()),
            order_id=order_id,
            payment_type=payment_type,
            gross_amount=amount,
            created=now,
            expires=now + lifetime,
        )
        txn.qr_string = qris_payload(txn.transaction_id, amount)
        self._txns[txn.transaction_id] = txn
        self._by_order[order_id] = txn.transaction_id
        self._count("charges", order_id)
        base = f"http://{host}" if host else self.url
        tid = txn.transaction_id
        common = {
            "gross_amount": txn.amount,
            "currency": "IDR",
            "payment_type": payment_type,
            "transaction_time": format_time(txn.created),
            "transaction_status": "pending",
            "fraud_status": "accept",
        }
        if payment_type == "gopay":
            return 200, {
                "status_code": "201",
                "status_message": "GO-PAY transaction is created",
                "transaction_id": tid,
                "order_id": order_id,
                **common,
                "actions": [
                    {"name": "generate-qr-code", "method": "GET", "url": f"{base}/v2/gopay/{tid}/qr-code"},
                    {"name": "deeplink-redirect", "method": "GET", "url": f"{base}/_sandbox/checkout/{tid}"},
                    {"name": "get-status", "method": "GET", "url": f"{base}/v2/{tid}/status"},
                    {"name": "cancel", "method": "POST", "url": f"{base}/v2/{tid}/cancel"},
                ],
                "expiry_time": format_time(txn.expires),
            }
        return 200, {
            "status_code": "201",
            "status_message": "QRIS transaction is created",
            "transaction_id": tid,
            "order_id": order_id,
            "merchant_id": MERCHANT_ID,
            **common,
            "actions": [{"name": "generate-qr-code", "method": "GET", "url": f"{base}/v2/qris/{tid}/qr-code"}],
            "qr_string": txn.qr_string,
            "acquirer": "gopay",
            "expire_time": format_time(txn.expires),
        }

    def _find_order(self, order_id: str) -> _Txn | None:
        tid = self._by_order.get(order_id)
        return self._txns[tid] if tid is not None else None

    def _transaction_fields(self, txn: _Txn) -> dict[str, Any]:
        return {
            "transaction_id": txn.transaction_id,
            "order_id": txn.order_id,
            "merchant_id": MERCHANT_ID,
            "gross_amount": txn.amount,
            "currency": "IDR",
            "payment_type": txn.payment_type,
            "transaction_time": format_time(txn.created),
            "transaction_status": txn.status,
            "fraud_status": "accept",
        }

    def _status(self, ident: str, emits: list[_Emit]) -> tuple[int, dict[str, Any]]:
        txn = self._find(ident)
        if txn is None:
            return 200, _midtrans_error("404", _NOT_FOUND)
        self._expire_if_due(txn, emits)
        code = ANSWER_CODES[txn.status]
        body: dict[str, Any] = {
            "transaction_time": format_time(txn.created),
            "gross_amount": txn.amount,
            "currency": "IDR",
            "order_id": txn.order_id,
            "payment_type": txn.payment_type,
            "signature_key": compute_signature(txn.order_id, code, txn.amount, self.server_key),
            "status_code": code,
            "transaction_id": txn.transaction_id,
            "transaction_status": txn.status,
            "fraud_status": "accept",
            "status_message": "Success, transaction is found",
            "merchant_id": MERCHANT_ID,
            "expiry_time": format_time(txn.expires),
        }
        if txn.settled is not None:
            body["settlement_time"] = format_time(txn.settled)
        if txn.payment_type == "qris":
            body["acquirer"] = "gopay"
        if txn.refunds:
            body["refund_amount"] = _money(txn.refunded)
            body["refunds"] = [dict(refund) for refund in txn.refunds]
        return 200, body

    def _end(self, ident: str, action: str, emits: list[_Emit]) -> tuple[int, dict[str, Any]]:
        txn = self._find(ident)
        if txn is None:
            return 200, _midtrans_error("404", _NOT_FOUND)
        self._expire_if_due(txn, emits)
        if txn.status != "pending":
            return 200, {"status_code": "412", "status_message": _CANNOT_MODIFY}
        if action == "cancel":
            self._move(txn, "cancel", emits)
            return 200, {"status_code": "200", "status_message": "Success, transaction is canceled"} | (
                self._transaction_fields(txn)
            )
        self._move(txn, "expire", emits)
        return 200, {"status_code": "407", "status_message": "Success, transaction has expired"} | (
            self._transaction_fields(txn)
        )

    def _refund(self, ident: str, data: bytes, emits: list[_Emit]) -> tuple[int, dict[str, Any]]:
        txn = self._find(ident)
        if txn is None:
            return 200, _midtrans_error("404", _NOT_FOUND)
        self._expire_if_due(txn, emits)
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return 200, _midtrans_error("413", _SYNTAX_ERROR)
        if not isinstance(request, dict):
            return 200, _midtrans_error("400", _INVALID)
        refund_key = request.get("refund_key")
        if refund_key is not None and not (isinstance(refund_key, str) and _REFUND_KEY_RE.fullmatch(refund_key)):
            return 200, _midtrans_error(
                "400",
                _INVALID,
                validation_messages=["refund_key may hold only letters, digits, '-' and '_'"],
            )
        if refund_key is not None and refund_key in txn.refund_answers:
            return 200, dict(txn.refund_answers[refund_key])  # the same refund again pays nothing
        if txn.status not in _REFUNDABLE:
            return 200, {"status_code": "412", "status_message": _CANNOT_MODIFY}
        remaining = txn.gross_amount - txn.refunded
        amount = request.get("amount", remaining)
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            return 200, _midtrans_error("400", _INVALID, validation_messages=["amount must be a whole number"])
        if amount <= 0 or amount > remaining:
            return 200, {"status_code": "414", "status_message": "Refund request is rejected due to invalid amount"}
        reason = request.get("reason")
        txn.refunded += amount
        refund = {
            "refund_chargeback_id": len(txn.refunds) + 1,
            "refund_amount": _money(amount),
            "created_at": format_time(self._now()),
            "reason": reason if isinstance(reason, str) else None,
            "refund_key": refund_key,
        }
        txn.refunds.append(refund)
        self._move(txn, "refund" if txn.refunded == txn.gross_amount else "partial_refund", emits)
        answer = {
            "status_code": "200",
            "status_message": "Success, refund request is approved",
            "transaction_id": txn.transaction_id,
            "order_id": txn.order_id,
            "payment_type": txn.payment_type,
            "transaction_time": format_time(txn.created),
            "transaction_status": txn.status,
            "gross_amount": txn.amount,
            "refund_chargeback_id": refund["refund_chargeback_id"],
            "refund_amount": _money(amount),
            "refund_key": refund_key,
        }
        if refund_key is not None:
            txn.refund_answers[refund_key] = answer
        self._count("refunds", txn.order_id)
        return 200, dict(answer)

    def _qr_code(self, ident: str) -> _Reply:
        with self._lock:
            txn = self._txns.get(ident)
            text = txn.qr_string if txn is not None else None
        if text is None:
            return _json_reply(200, _midtrans_error("404", _NOT_FOUND))
        import segno

        buffer = io.BytesIO()
        segno.make(text, error="m", micro=False).save(buffer, kind="png", scale=6, border=4)
        return _Reply(200, buffer.getvalue(), "image/png")

    # -- control endpoints (no auth, never faulted) --

    def _control(self, method: str, parts: list[str], data: bytes) -> _Reply:
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return _json_reply(400, {"sandbox_error": "the body is not JSON"})
        if not isinstance(request, dict):
            return _json_reply(400, {"sandbox_error": "the body must be a JSON object"})
        if method == "POST" and len(parts) == 2 and parts[0] == "pay":
            status = request.get("status", "settlement")
            try:
                return _json_reply(200, self.pay(parts[1], str(status)))
            except UsageError as exc:
                return _json_reply(400, {"sandbox_error": str(exc)})
            except NotFoundError as exc:
                return _json_reply(404, {"sandbox_error": str(exc)})
            except MidtransRejected as exc:
                return _json_reply(409, {"sandbox_error": str(exc)})
        if method == "GET" and parts == ["stats"]:
            return _json_reply(200, self.stats())
        if method == "POST" and parts == ["reset"]:
            self.reset_stats()
            return _json_reply(200, {"ok": True})
        if method == "POST" and parts == ["faults"]:
            allowed = {"fail_rate", "rate_limit_rate", "stall_rate", "malformed_rate", "latency_ms", "stall_seconds"}
            unknown = sorted(set(request) - allowed - {"seed"})
            if unknown:
                return _json_reply(400, {"sandbox_error": f"unknown settings: {', '.join(unknown)}"})
            try:
                return _json_reply(200, self.set_faults(**request))
            except (TypeError, ValueError) as exc:
                return _json_reply(400, {"sandbox_error": str(exc)})
        if method == "GET" and parts == ["orders"]:
            return _json_reply(200, {"orders": self.orders()})
        if method == "GET" and len(parts) == 2 and parts[0] == "orders":
            order = self.get_order(parts[1])
            if order is None:
                return _json_reply(404, {"sandbox_error": f"the sandbox has no order {parts[1]!r}"})
            return _json_reply(200, order)
        if method == "GET" and parts == ["health"]:
            return _json_reply(200, {"ok": True, "url": self.url})
        if method == "GET" and len(parts) == 2 and parts[0] == "checkout":
            page = (
                "<html><body><h1>midpay sandbox: simulated GoPay checkout</h1>"
                "<p>Pay with <code>midpay sandbox pay ORDER_ID</code>.</p></body></html>"
            )
            return _Reply(200, page.encode(), "text/html; charset=utf-8")
        return _json_reply(404, {"sandbox_error": "no such sandbox endpoint"})


# -- command-line entry points -----------------------------------------------------------


def serve(
    *,
    host: str,
    port: int,
    server_key: str | None,
    latency_ms: int,
    fail_rate: float,
    notify_url: str | None,
    notify_dir: Path | None,
    seed: int | None = None,
    stall_rate: float = 0.0,
    malformed_rate: float = 0.0,
    expiry_seconds: int = 900,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM (``midpay sandbox serve``)."""
    try:
        sandbox = SandboxServer(
            host=host,
            port=port,
            server_key=server_key,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            seed=seed,
            expiry_seconds=expiry_seconds,
            notify_url=notify_url,
            notify_dir=notify_dir,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    sandbox.start()
    done = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        announce(f"midpay sandbox listening on {sandbox.url} (Ctrl-C to stop)")
        if sandbox.using_dev_key:
            announce(f"using the development server key {DEV_SERVER_KEY}")
        else:
            announce("using the server key from MIDTRANS_SERVER_KEY")
        announce(f"point midpay at it with MIDTRANS_API_URL={sandbox.url}")
        if notify_url:
            announce(f"notifications are POSTed to {notify_url}")
        if notify_dir:
            announce(f"notifications are written to {notify_dir}")
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        sandbox.stop()
        announce("sandbox stopped")


def pay_remote(*, api_url: str, order_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask a running sandbox to move ``order_id`` (``midpay sandbox pay``); returns the notification."""
    import requests

    if status not in PAY_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
    base = api_url.rstrip("/")
    url = f"{base}/_sandbox/pay/{quote(order_id, safe='')}"
    try:
        response = requests.post(url, json={"status": status}, timeout=(timeout, timeout))
    except requests.ReadTimeout as exc:
        raise OutcomeUnknown(f"the sandbox at {base} did not answer within {timeout:g} s") from exc
    except requests.RequestException as exc:
        raise GatewayUnavailable(
            f"no midpay sandbox answered at {base} ({type(exc).__name__}); start one with `midpay sandbox serve` "
            "and set MIDTRANS_API_URL to its URL"
        ) from exc
    try:
        body: object = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and "order_id" in body:
        return body
    message = body.get("sandbox_error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        raise GatewayProtocolError(
            f"{base} did not answer like a midpay sandbox (HTTP {response.status_code}); "
            "is MIDTRANS_API_URL pointing at `midpay sandbox serve`?"
        )
    if response.status_code == 404:
        raise NotFoundError(message)
    if response.status_code == 400:
        raise UsageError(message)
    if response.status_code == 409:
        raise MidtransRejected(message, "412", {"status_code": "412", "status_message": _CANNOT_MODIFY})
    raise GatewayProtocolError(f"the sandbox at {base} answered HTTP {response.status_code}: {message}")
