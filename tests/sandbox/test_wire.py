"""midpay.sandbox.wire: HTTP/1.1 on the wire: keep-alive, pipelining, and the requests it refuses."""

from __future__ import annotations

import base64
import socket

from midpay.sandbox import DEV_SERVER_KEY, SandboxServer


def _raw(sandbox: SandboxServer, payload: bytes) -> bytes:
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_http_keep_alive_pipelining_and_refusals(sandbox: SandboxServer) -> None:
    auth = base64.b64encode(f"{DEV_SERVER_KEY}:".encode())
    one = b"GET /v2/nobody/status HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n\r\n"
    two = _raw(sandbox, one + one)  # pipelined: two answers, in order, on one connection
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2 and two.count(b"Transaction doesn't exist.") == 2
    assert b"Content-Length: " in two and b"Date: " in two
    closing = _raw(sandbox, one.replace(b"HTTP/1.1", b"HTTP/1.0") + one)  # 1.0 without keep-alive: one answer
    assert closing.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in closing
    assert _raw(sandbox, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    chunked = b"POST /v2/charge HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert _raw(sandbox, chunked).startswith(b"HTTP/1.1 411 ")
    huge = b"POST /v2/charge HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
    assert _raw(sandbox, huge).startswith(b"HTTP/1.1 413 ")
    many = b"GET /_sandbox/health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
    assert _raw(sandbox, many).startswith(b"HTTP/1.1 431 ")
