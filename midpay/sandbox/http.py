"""The sandbox's HTTP front: a threaded HTTP/1.1 server, routing, auth, faults.

The wire protocol is in ``wire``. ``/v2/...`` goes through latency, faults and Basic auth to the Core API;
``/_sandbox/...`` goes to the control endpoints (no auth, never faulted); anything else
gets the Spring-style 404 Midtrans' own front answers for a path it has no route for.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from midpay.midtrans.notifications import JAKARTA

from . import tamper
from .api import Call, CoreApi
from .faults import FaultPolicy, garble, refusal
from .reqlog import RequestLog
from .shapes import AUTH_FAILED, Reply, json_reply, midtrans_error
from .state import SandboxState
from .stats import Stats
from .tamper import ANSWERS, OrderRules, Rule
from .tamper import refusal as order_refusal
from .wire import WireServer

Control = Callable[[str, list[str], bytes], Reply]


def spring_404(raw_path: str) -> Reply:
    """What Midtrans' own front answers for a path it has no route for."""
    return json_reply(
        404,
        {
            "timestamp": datetime.now(JAKARTA).isoformat(timespec="milliseconds"),
            "status": 404,
            "error": "Not Found",
            "message": "Not Found",
            "path": raw_path,
        },
    )


def classify(method: str, parts: list[str]) -> tuple[str, str, bool]:
    """(endpoint, id, direct refund?) of a /v2 path (its segments after 'v2', percent-decoded)."""
    if method == "POST" and parts == ["charge"]:
        return "charge", "", False
    if len(parts) == 2 and parts[0]:
        if method == "GET" and parts[1] == "status":
            return "status", parts[0], False
        if method == "POST" and parts[1] in ("cancel", "expire", "refund"):
            return parts[1], parts[0], False
    if method == "POST" and len(parts) == 4 and parts[0] and parts[1:] == ["refund", "online", "direct"]:
        return "refund", parts[0], True
    if method == "GET" and len(parts) == 3 and parts[0] in ("gopay", "qris") and parts[2] == "qr-code":
        return "qr-code", parts[1], False
    return "other", "", False


def _charged_order(data: bytes) -> str:
    """The order id a charge request names, for per-order rules ("" when there is none)."""
    try:
        request = json.loads(data)
    except ValueError:
        return ""
    details = request.get("transaction_details") if isinstance(request, dict) else None
    order_id = details.get("order_id") if isinstance(details, dict) else None
    return order_id if isinstance(order_id, str) else ""


class HttpFront:
    """Binds, serves in a daemon thread, routes; ``stop()`` never hangs."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        server_key: str,
        state: SandboxState,
        api: CoreApi,
        faults: FaultPolicy,
        stats: Stats,
        control: Control,
        rules: OrderRules,
        request_log: RequestLog | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._key = server_key.encode()
        self._expected = ("Basic " + base64.b64encode(self._key + b":").decode()).encode()
        self._server_key = server_key
        self.state = state
        self.api = api
        self.faults = faults
        self.stats = stats
        self.control = control
        self.rules = rules
        self.request_log = request_log
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: WireServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> None:
        """Bind (OSError when the address is taken) and serve in a daemon thread."""
        if self._httpd is not None:
            return
        recorder = self.request_log.record if self.request_log is not None else None
        httpd = WireServer((self.host, self.port), self.dispatch, recorder, self.track)
        if self.request_log is not None:
            self.request_log.start()
        self.stopping.clear()
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="midpay-sandbox", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, waking stalled requests and closing keep-alive connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
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
        if self.request_log is not None:
            self.request_log.stop()

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- routing --

    def dispatch(self, method: str, target: str, headers: Any, data: bytes) -> Reply | None:
        raw_path = target.partition("?")[0].partition("#")[0]
        if raw_path.startswith(("http://", "https://")):  # an absolute-form target
            raw_path = urlsplit(raw_path).path
        segments = [unquote(part) if "%" in part else part for part in raw_path.split("/")[1:]]
        if segments and segments[0] == "_sandbox":
            return self.control(method, segments[1:], data)
        if segments and segments[0] == "v2":
            return self._v2(method, segments[1:], raw_path, headers, data)
        return spring_404(raw_path)

    def _v2(self, method: str, parts: list[str], raw_path: str, headers: Any, data: bytes) -> Reply | None:
        endpoint, ident, direct = classify(method, parts)
        about: str | None = None  # the order this answer is about, when rules or counting need it
        if endpoint == "status" or (self.rules and endpoint in ANSWERS):
            about = _charged_order(data) if endpoint == "charge" else self.state.order_key(ident)
        self.stats.request(endpoint, about if endpoint == "status" else None)
        fault_rule, tamper_rule = self.rules.take(about, endpoint) if about and self.rules else (None, None)

        draw = self.faults.draw()
        settings = draw.settings
        if settings.latency_ms:
            time.sleep(settings.latency_ms / 1000)  # cheaper than Event.wait; stop() need not cut it short
            if self.stopping.is_set():
                return None
        kind = draw.kind
        if fault_rule is not None:  # the order's own fault comes instead of a random one
            assert fault_rule.fault is not None
            kind = fault_rule.fault
            self.stats.bump("order_faults", kind)
            refused = order_refusal(fault_rule)
            if refused is not None:
                return self._tampered(tamper_rule, refused, headers)
            if kind == "hangup":
                return None
            seconds = fault_rule.seconds if fault_rule.seconds is not None else settings.stall_seconds
            if kind == "stall" and self.stopping.wait(seconds):
                return None
        elif kind is not None:
            self.stats.bump("faults", kind)
            refused = refusal(kind, draw.variant)
            if refused is not None:
                return refused
            if kind == "stall" and self.stopping.wait(settings.stall_seconds):
                return None

        if endpoint == "qr-code":  # hotlinked from <img>: no auth, like Midtrans
            reply = self.api.qr_code(ident)
        elif not self._authorized(headers.get("Authorization")):
            self.stats.bump("unauthorized")
            reply = json_reply(401, midtrans_error("401", AUTH_FAILED))
        elif endpoint == "other":
            reply = spring_404(raw_path)
        else:
            host = headers.get("Host")
            call = Call(
                endpoint,
                ident,
                data,
                f"http://{host}" if host else self.url,
                headers.get("Idempotency-Key"),
                headers.get("X-Override-Notification"),
                headers.get("X-Append-Notification"),
                direct,
            )
            reply = self.api.handle(call)

        if kind == "lost-answer":
            return None
        if kind == "malformed":
            return garble(reply, draw.variant if fault_rule is None else 0.0)
        return self._tampered(tamper_rule, reply, headers)

    def _tampered(self, rule: Rule | None, reply: Reply, headers: Any) -> Reply:
        if rule is None:
            return reply
        self.stats.bump("tampered")
        return tamper.apply(rule, reply, headers.get("Authorization"), self._server_key)

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        if hmac.compare_digest(header.encode("latin-1", "replace"), self._expected):
            return True  # the usual spelling: no need to decode it
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user = decoded.split(b":", 1)[0]
        return hmac.compare_digest(user, self._key)
