"""A receiver of midpay's payment events on loopback, verifying each with PyPI's ``standardwebhooks``.

It records every POST (id, type, order, sequence, verified, how many signatures) and
answers as the test says: a status code, ``stall`` (hold every request until the mode
changes, then answer it) or ``drop`` (close the connection without an answer).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


class PythonReceiver:
    """``with PythonReceiver(secrets) as r:`` serves on ``r.url`` until the block ends."""

    kind = "python"

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = list(secrets)
        self.answer = 204
        self.mode = "answer"
        self._records: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/midpay"

    def __enter__(self) -> PythonReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.control(mode="answer")  # let held requests go
        self._server.shutdown()
        self._server.server_close()

    def control(self, *, answer: int | None = None, mode: str | None = None) -> None:
        """Answer ``answer`` from now on; ``mode`` answer, stall or drop."""
        with self._changed:
            if answer is not None:
                self.answer = answer
            if mode is not None:
                self.mode = mode
            self._changed.notify_all()

    def received(self) -> list[dict[str, Any]]:
        """Every request so far, in arrival order."""
        with self._changed:
            return [dict(r) for r in self._records]

    def _take(self, body: bytes, headers: dict[str, str]) -> tuple[str, int]:
        event = _verify(self.secrets, body, headers)
        parsed = event if event is not None else _parse(body)
        data = parsed.get("data") if isinstance(parsed, dict) else None
        with self._changed:
            self._records.append({
                "id": headers.get("webhook-id"),
                "type": parsed.get("type") if isinstance(parsed, dict) else None,
                "order": data.get("order_id") if isinstance(data, dict) else None,
                "sequence": parsed.get("sequence") if isinstance(parsed, dict) else None,
                "verified": event is not None and event.get("id") == headers.get("webhook-id"),
                "signatures": len(headers.get("webhook-signature", "").split()),
            })
            while self.mode == "stall":
                self._changed.wait()
            return self.mode, self.answer


def _verify(secrets: list[str], body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
    """The event, if any one of ``secrets`` verifies the request (the way a receiver mid-rotation does)."""
    for secret in secrets:
        try:
            event = Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            continue
        return event if isinstance(event, dict) else None
    return None


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _handler(receiver: PythonReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            mode, answer = receiver._take(body, headers)
            if mode == "drop":
                self.close_connection = True
                self.connection.close()
                return
            self.send_response(answer)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
