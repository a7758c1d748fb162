"""A Midtrans in front of the sandbox that edits its answers, over real HTTP on loopback.

For the checks that must refuse an answer: about another order, another amount,
another transaction, an unknown status, a fraud_status that contradicts it. Requests
go to the sandbox as they are; the answer about an order with a rule is edited before
it is sent back. The sandbox itself stays genuine (its state, its notifications).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

Edit = Callable[[dict[str, Any]], dict[str, Any]]
_FORWARDED = ("Authorization", "Content-Type", "Accept", "Idempotency-Key", "User-Agent")


class AnswerProxy:
    """``url`` answers like the sandbox at ``upstream``, except where ``edit`` says otherwise."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: dict[str, Edit] = {}
        self.asked: Counter[str] = Counter()  # status calls per order, as sent
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def edit(self, asked: str, **fields: Any) -> None:
        """Answers about the order ``asked`` carry these fields instead (None removes one)."""

        def change(answer: dict[str, Any]) -> dict[str, Any]:
            edited = {**answer, **fields}
            return {k: v for k, v in edited.items() if v is not None}

        self.rules[asked] = change

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        data = handler.rfile.read(length) if length else None
        headers = {k: handler.headers[k] for k in _FORWARDED if handler.headers.get(k)}
        upstream = self._session.request(method, self.upstream + handler.path, data=data, headers=headers, timeout=10)
        body = upstream.content
        parts = [unquote(p) for p in urlsplit(handler.path).path.split("/")[1:]]
        order_id = parts[1] if len(parts) == 3 and parts[0] == "v2" else None
        if parts == ["v2", "charge"] and data:
            order_id = json.loads(data).get("transaction_details", {}).get("order_id")
        elif order_id is not None and parts[2] == "status":
            self.asked[order_id] += 1
        rule = self.rules.get(order_id) if order_id is not None else None
        if rule is not None:
            answer = json.loads(body)
            if isinstance(answer, dict) and answer.get("order_id") is not None:
                body = json.dumps(rule(answer)).encode()
        handler.send_response(upstream.status_code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> AnswerProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()


@contextmanager
def answer_proxy(upstream: str) -> Iterator[AnswerProxy]:
    proxy = AnswerProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
