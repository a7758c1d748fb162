"""A receiver of midpay's payment events on loopback, verifying each with PyPI's ``standardwebhooks``.

It records every POST (id, type, order, sequence, verified, how many signatures, whether
the whole body arrived, what it was answered) and answers as the test says: a status
code, ``stall`` (hold every request until the mode changes, then answer it), ``drop``
(close the connection without an answer) or ``random`` (``randomly``: a seeded draw per
request fails it with 500, or holds it past the deliverer's timeout and closes it
unanswered, or answers it).
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Chaos:
    """The ``random`` mode's odds: ``fail`` of the requests get 500, ``silent`` get no answer for ``hold`` seconds."""

    seed: int
    fail: float
    silent: float
    hold: float


class PythonReceiver:
    """``with PythonReceiver(secrets) as r:`` serves on ``r.url`` until the block ends (on ``port``, if given)."""

    kind = "python"

    def __init__(self, secrets: list[str], *, port: int = 0) -> None:
        self.secrets = list(secrets)
        self.answer = 204
        self.mode = "answer"
        self._chaos: Chaos | None = None
        self._rng = random.Random(0)
        self._records: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
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

    def randomly(self, chaos: Chaos) -> None:
        """From now on, each request's answer is drawn (seeded): 500, none for ``chaos.hold`` s, or ``answer``.

        The draws follow the order requests arrive in, so the seed fixes the odds and the
        sequence of outcomes, not which delivery gets which.
        """
        with self._changed:
            self._chaos = chaos
            self._rng = random.Random(chaos.seed)
            self.mode = "random"
            self._changed.notify_all()

    def received(self) -> list[dict[str, Any]]:
        """Every request so far, in arrival order."""
        with self._changed:
            return [dict(r) for r in self._records]

    def _take(self, body: bytes, headers: dict[str, str], complete: bool) -> tuple[str, int]:
        event = _verify(self.secrets, body, headers)
        parsed = event if event is not None else _parse(body)
        data = parsed.get("data") if isinstance(parsed, dict) else None
        record = {
            "id": headers.get("webhook-id"),
            "type": parsed.get("type") if isinstance(parsed, dict) else None,
            "order": data.get("order_id") if isinstance(data, dict) else None,
            "sequence": parsed.get("sequence") if isinstance(parsed, dict) else None,
            "verified": event is not None and event.get("id") == headers.get("webhook-id"),
            "signatures": len(headers.get("webhook-signature", "").split()),
            "complete": complete,
            "answer": None,  # the status code it was answered with; None: none (dropped, held, cut short)
        }
        with self._changed:
            self._records.append(record)
            while self.mode == "stall":
                self._changed.wait()
            mode, answer = self.mode, self.answer
            if mode == "random":
                mode, answer = self._draw()
            if complete and mode != "drop":
                record["answer"] = answer
            return mode, answer

    def _draw(self) -> tuple[str, int]:
        """The ``random`` mode's outcome for one request (the condition's lock held); a silent one is held here."""
        chaos = self._chaos
        assert chaos is not None
        draw = self._rng.random()
        if draw < chaos.silent:
            deadline = threading.Event()
            timer = threading.Timer(chaos.hold, self._release, (deadline,))
            timer.daemon = True  # the receiver's end lets every held request go at once
            timer.start()
            while self.mode == "random" and not deadline.is_set():
                self._changed.wait()
            return "drop", self.answer
        if draw < chaos.silent + chaos.fail:
            return "answer", 500
        return "answer", self.answer

    def _release(self, deadline: threading.Event) -> None:
        with self._changed:
            deadline.set()
            self._changed.notify_all()


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
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            mode, answer = receiver._take(body, headers, complete=len(body) == length)
            if mode == "drop" or len(body) != length:  # a sender killed mid-request gets no answer either
                self.close_connection = True
                self.connection.close()
                return
            self.send_response(answer)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
