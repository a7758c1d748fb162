"""HTTP/1.1 on the wire, kept lean: the sandbox answers thousands of status checks a second.

``http.server.BaseHTTPRequestHandler`` parses every header block with the ``email``
package and formats every answer header by header; that was most of the sandbox's
CPU per request, CPU that benchmarks take away from midpay on a small machine. This
reads the request line and headers itself (names lower-cased), reads a body only by
Content-Length (chunked bodies get 411), and sends each answer in one ``sendall``.
Keep-alive is the HTTP/1.1 default; an idle connection is closed after 120 s.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from .shapes import Reply, json_reply

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_LINE = 1 << 16
MAX_HEADERS = 100
IDLE_TIMEOUT = 120.0

_REASONS = {status.value: status.phrase for status in HTTPStatus}


class Headers(dict[str, str]):
    """Request headers by lower-cased name; ``get`` takes any case."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


# (method, target, headers, body) -> the answer, or None to hang up without one
Handler = Callable[[str, str, Headers, bytes], Reply | None]
# (method, target, HTTP status or None when nothing was sent, body status_code, seconds)
Recorder = Callable[[str, str, int | None, str | None, float], None]


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._text = formatdate(now, usegmt=True).encode()
            self._second = now
        return self._text


def render(reply: Reply, date: bytes, *, close: bool) -> bytes:
    """The bytes of one answer: status line, headers, body."""
    head = [
        b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, "Unknown").encode()),
        b"Server: midpay-sandbox\r\nDate: " + date + b"\r\n",
        b"Content-Type: " + reply.content_type.encode("latin-1") + b"\r\n",
        b"Content-Length: %d\r\n" % len(reply.body),
    ]
    for name, value in reply.headers:
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(reply.body)
    return b"".join(head)


class WireServer(socketserver.ThreadingTCPServer):
    """One thread per connection; ``connections`` lets stop() cut idle keep-alive ones."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: Handler, recorder: Recorder | None, tracker: Callable[..., None]
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.handler = handler
        self.recorder = recorder
        self.tracker = tracker
        self.date = _Date()
        super().__init__(address, _Connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection from %s failed", client_address, exc_info=True)


class _Connection(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True

    wire: WireServer

    def setup(self) -> None:
        super().setup()
        server = self.server
        assert isinstance(server, WireServer)
        self.wire = server
        server.tracker(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.wire.tracker(self.connection, add=False)

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except OSError:  # timeout, reset, or stop() cut the socket
            pass

    def _one(self) -> bool:
        """Serve one request; False when the connection is done."""
        line = self.rfile.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated between requests
            line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        started = time.perf_counter()
        parts = line.split()
        if len(line) > MAX_LINE or len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return self._fail(400, "bad request line")
        method, target, version = (part.decode("latin-1") for part in parts)
        headers = Headers()
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.partition(b":")
            if not sep or len(raw) > MAX_LINE or len(headers) >= MAX_HEADERS:
                return self._fail(431 if sep else 400, "bad or too many headers")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if headers.get("transfer-encoding"):
            return self._fail(411, "send a Content-Length, not chunks", method, target, started)
        try:
            length = int(headers.get("content-length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError
        except ValueError:
            return self._fail(413, "bad or too large Content-Length", method, target, started)
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            return False
        try:
            reply = self.wire.handler(method, target, headers, data)
        except Exception:  # a sandbox bug must answer 500, not kill the connection thread
            log.exception("sandbox failed on %s %s", method, target)
            reply = json_reply(500, {"status_code": "500", "status_message": "sandbox internal error"})
        sent = reply is not None and self._send(reply, close=not keep)
        if self.wire.recorder is not None:
            status, code = (reply.status, reply.code) if sent and reply is not None else (None, None)
            self.wire.recorder(method, target, status, code, time.perf_counter() - started)
        return sent and keep

    def _send(self, reply: Reply, *, close: bool) -> bool:
        try:
            self.connection.sendall(render(reply, self.wire.date(), close=close))
        except OSError:  # the client gave up (read timeout) or stop() cut the socket
            return False
        return True

    def _fail(
        self, status: int, message: str, method: str = "-", target: str = "-", started: float | None = None
    ) -> bool:
        reply = json_reply(status, {"sandbox_error": message})
        sent = self._send(reply, close=True)
        if self.wire.recorder is not None and started is not None:
            self.wire.recorder(method, target, status if sent else None, None, time.perf_counter() - started)
        return False
