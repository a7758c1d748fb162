"""A small HTTP proxy in front of the sandbox that misbehaves for chosen orders, over real HTTP.

Everything is forwarded to the sandbox unchanged, except what a rule says for an
order id: answer with a fixed HTTP status, patch fields of the sandbox's JSON answer,
or stall before answering. Each request is counted per (endpoint, order id), whether
or not it reached the sandbox.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class Rule:
    """How to answer requests about one order (None: forward)."""

    http_status: int | None = None  # answer this status with a small JSON body, without forwarding
    patch: dict[str, Any] = field(default_factory=dict)  # fields replaced in the sandbox's answer
    raw: bytes | None = None  # answer these bytes (HTTP 200) instead of the sandbox's
    stall: float = 0.0  # seconds to wait before answering
    times: int | None = None  # apply to this many requests, then forward
    endpoint: str | None = None  # only requests to this endpoint ("status", "charge", ...)


def _order_of(path: str) -> tuple[str, str]:
    parts = [unquote(p) for p in path.split("?")[0].split("/") if p]
    if parts == ["v2", "charge"]:
        return "charge", ""
    if len(parts) >= 3 and parts[0] == "v2":
        return parts[2], parts[1]
    return "other", ""


class MidtransProxy:
    """``with MidtransProxy(sandbox.url) as proxy: proxy.rules["order"] = Rule(http_status=500)``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: dict[str, Rule] = {}
        self.default: Rule | None = None  # applies to every order without a rule of its own
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._serve(self, "GET")

            def do_POST(self) -> None:
                proxy._serve(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MidtransProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, endpoint: str, order_id: str | None = None) -> int:
        with self._lock:
            return sum(n for (e, o), n in self.counts.items() if e == endpoint and order_id in (None, o))

    def _rule(self, endpoint: str, order_id: str) -> Rule | None:
        with self._lock:
            rule = self.rules.get(order_id, self.default)
            if rule is not None and rule.endpoint not in (None, endpoint):
                return None
            if rule is not None and rule.times is not None:
                if rule.times <= 0:
                    return None
                rule.times -= 1
            return rule

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        endpoint, order_id = _order_of(handler.path)
        if endpoint == "charge":
            length = int(handler.headers.get("Content-Length") or 0)
            data = handler.rfile.read(length)
            try:
                order_id = json.loads(data)["transaction_details"]["order_id"]
            except (ValueError, KeyError, TypeError):
                order_id = ""
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            data = handler.rfile.read(length) if length else b""
        with self._lock:
            self.counts[(endpoint, order_id)] += 1
        rule = self._rule(endpoint, order_id)
        if rule is not None and rule.stall:
            time.sleep(rule.stall)  # the fault itself: a Midtrans that answers late
        if rule is not None and rule.http_status is not None:
            self._reply(handler, rule.http_status, json.dumps({"status_message": "proxy says no"}).encode())
            return
        if rule is not None and rule.raw is not None:
            self._reply(handler, 200, rule.raw)
            return
        status, body = self._forward(handler, method, data)
        if rule is not None and rule.patch:
            answer = json.loads(body)
            answer.update(rule.patch)
            body = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        self._reply(handler, status, body)

    def _forward(self, handler: BaseHTTPRequestHandler, method: str, data: bytes) -> tuple[int, bytes]:
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("authorization", "content-type",
                                                                            "accept", "idempotency-key")}
        request = urllib.request.Request(  # noqa: S310 - the loopback sandbox
            self.upstream + handler.path, data=data if method == "POST" else None, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):  # the sandbox is gone (the test is over)
            return 502, b"{}"

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout): nothing to answer
