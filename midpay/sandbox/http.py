"""The sandbox's HTTP front: a threaded HTTP/1.1 server, routing, auth, faults.

Keep-alive is on (every answer carries Content-Length); each connection has its own
thread. ``/v2/...`` goes through latency, faults and Basic auth to the Core API;
``/_sandbox/...`` goes to the control endpoints (no auth, never faulted); anything else
gets the Spring-style 404 Midtrans' own front answers for a path it has no route for.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from midpay.notifications import JAKARTA

from .api import CoreApi
from .faults import FaultPolicy, garble, refusal
from .reqlog import RequestLog
from .shapes import AUTH_FAILED, Reply, json_reply, midtrans_error
from .state import SandboxState, Stats

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20

Control = Callable[[str, list[str], bytes], Reply]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() cuts open keep-alive connections itself
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], front: HttpFront) -> None:
        self.front = front
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
    def front(self) -> HttpFront:
        server = self.server
        assert isinstance(server, _HTTPServer)
        return server.front

    def setup(self) -> None:
        super().setup()
        self.front.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.front.track(self.connection, add=False)

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
        started = time.perf_counter()
        reply = self._answer(method)
        sent = False
        if reply is None:  # stopped while stalling: hang up without an answer
            self.close_connection = True
        else:
            sent = self._send(reply)
        journal = self.front.request_log
        if journal is not None:
            status, code = (reply.status, reply.code) if reply is not None and sent else (None, None)
            journal.record(method, self.path, status, code, time.perf_counter() - started)

    def _answer(self, method: str) -> Reply | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return json_reply(411, {"sandbox_error": "send a Content-Length, not chunks"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return json_reply(413, {"sandbox_error": "bad or too large Content-Length"})
        data = self.rfile.read(length) if length else b""
        try:
            return self.front.dispatch(method, self.path, self.headers, data)
        except Exception:  # a sandbox bug must answer 500, not kill the connection thread
            log.exception("sandbox failed on %s %s", method, self.path)
            return json_reply(500, midtrans_error("500", "sandbox internal error"))

    def _send(self, reply: Reply) -> bool:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:  # the client gave up (read timeout) or stop() cut the socket
            self.close_connection = True
            return False
        return True


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


def classify(method: str, parts: list[str]) -> tuple[str, str]:
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
        request_log: RequestLog | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._key = server_key.encode()
        self.state = state
        self.api = api
        self.faults = faults
        self.stats = stats
        self.control = control
        self.request_log = request_log
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> None:
        """Bind (OSError when the address is taken) and serve in a daemon thread."""
        if self._httpd is not None:
            return
        httpd = _HTTPServer((self.host, self.port), self)
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
        raw_path = urlsplit(target).path
        segments = [unquote(part) for part in raw_path.split("/")[1:]]
        if segments and segments[0] == "_sandbox":
            return self.control(method, segments[1:], data)
        if segments and segments[0] == "v2":
            return self._v2(method, segments[1:], raw_path, headers, data)
        return spring_404(raw_path)

    def _v2(self, method: str, parts: list[str], raw_path: str, headers: Any, data: bytes) -> Reply | None:
        endpoint, ident = classify(method, parts)
        self.stats.request(endpoint, self.state.order_key(ident) if endpoint == "status" else None)
        draw = self.faults.draw()
        settings = draw.settings
        if settings.latency_ms and self.stopping.wait(settings.latency_ms / 1000):
            return None
        if draw.kind is not None:
            self.stats.bump("faults", draw.kind)
            refused = refusal(draw.kind, draw.variant)
            if refused is not None:
                return refused
            if draw.kind == "stall" and self.stopping.wait(settings.stall_seconds):
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
            base = f"http://{host}" if host else self.url
            reply = self.api.handle(endpoint, ident, headers.get("Idempotency-Key"), base, data)

        if draw.kind == "malformed":
            return garble(reply, draw.variant)
        return reply

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user = decoded.split(b":", 1)[0]
        return hmac.compare_digest(user, self._key)
