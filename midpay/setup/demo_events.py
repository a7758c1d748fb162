"""The demo's payment events: the shop's own app on loopback, its endpoint, one delivery pass.

``ShopApp`` stands in for the shop's backend: a standard-library HTTP server on
127.0.0.1 (a port the system picks) in the demo's own process. It does what the README
asks of a real receiver: it verifies each delivery's Standard Webhooks signature (here
with midpay's own signing module, as the demo ships in the package; a shop uses the
``standardwebhooks`` package or a few lines of its own), refuses what does not verify,
and keeps each event once by its ``webhook-id``. The endpoint is added by the use case
``midpay endpoints add`` runs, and the events are sent by the code of ``midpay deliver
--once``: the demo adds nothing of its own to either.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from midpay import output
from midpay.outbox import deliver, endpoints, signing

if TYPE_CHECKING:
    from rich.console import Console

    from midpay.db.core import Connection
    from midpay.db.endpoints import Endpoint

PATTERNS = "payment.*"  # every payment event: the order they arrive in shows `sequence` at work
PATH = "/shop/midpay-events"
TOLERANCE_SECONDS = 300  # a timestamp further than this from the receiver's clock is refused (a replay)
MAX_BODY = 1_048_576
SHOWN = 200  # how much of each field the demo prints


@dataclass(frozen=True)
class Arrival:
    """One event the shop's app received: what the body says, and whether its signature verified."""

    event_id: str
    type: str
    order_id: str
    sequence: str
    verified: bool


def signature_verifies(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether one of ``webhook-signature``'s signatures is ``secret``'s over id, timestamp and body.

    As Standard Webhooks' receivers do: every header present, the timestamp within
    ``TOLERANCE_SECONDS`` of ``now``, the comparison in constant time; any signature of
    the space-separated list will do (while a secret rotates there are two).
    """
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    seconds = _small_number(stamp)
    if not (msg_id and given) or seconds is None or abs(now - seconds) > TOLERANCE_SECONDS:
        return False
    try:
        expected = signing.signature(secret, msg_id, seconds, body.decode("utf-8")).encode()
    except UnicodeDecodeError:
        return False
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in given.split())


def _small_number(text: str) -> int | None:
    """``text`` as a number of ASCII digits (at most 15 of them), else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 15 else None


def _arrival(event_id: str, body: bytes, *, verified: bool) -> Arrival:
    """What the body says (whatever a stranger wrote there: shown literally, later, and cut short)."""
    try:
        event: Any = json.loads(body)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        return Arrival(event_id[:SHOWN], "(not a JSON object)", "?", "?", verified)
    data = event.get("data")
    order_id = data.get("order_id") if isinstance(data, dict) else None
    event_type, sequence = event.get("type"), event.get("sequence")
    return Arrival(event_id[:SHOWN], str(event_type)[:SHOWN], str(order_id)[:SHOWN], str(sequence)[:SHOWN], verified)


class ShopApp:
    """``with ShopApp() as shop:`` a receiver of payment events on ``shop.url`` until the block ends.

    Its ``secret`` is set once the endpoint exists (``add_endpoint``); until then every
    delivery is refused, as nothing could verify it.
    """

    def __init__(self) -> None:
        self.secret: str | None = None
        self._arrivals: list[Arrival] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(  # a short poll: leaving the block waits for the serving loop to notice
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="midpay-demo-shop", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def __enter__(self) -> ShopApp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def arrivals(self) -> list[Arrival]:
        """Every event taken so far, in arrival order (a refused one too, marked unverified)."""
        with self._lock:
            return list(self._arrivals)

    def take(self, headers: Mapping[str, str], body: bytes) -> int:
        """One POST, as the shop's app handles it: verify, keep once per ``webhook-id``; the status to answer."""
        event_id = headers.get("webhook-id", "")
        ok = self.secret is not None and signature_verifies(self.secret, headers, body, time.time())
        with self._lock:
            if ok and event_id in self._seen:
                return 204  # a retry of one already handled: acknowledged, not acted on twice
            if ok:
                self._seen.add(event_id)
            self._arrivals.append(_arrival(event_id, body, verified=ok))
        return 204 if ok else 401


def _handler(shop: ShopApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as deliver's session expects of a real app

        def do_POST(self) -> None:  # the name http.server calls
            length = _small_number(self.headers.get("content-length", ""))
            if length is None or length > MAX_BODY:
                self.close_connection = True  # the body was not read: the connection cannot carry another
                self._answer(413)
                return
            body = self.rfile.read(length)
            self._answer(shop.take({k.lower(): v for k, v in self.headers.items()}, body))

        def _answer(self, code: int) -> None:
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
            """Quiet: the demo prints what arrived itself."""

    return Handler


def add_endpoint(conn: Connection, shop: ShopApp) -> Endpoint:
    """``midpay endpoints add SHOP_URL --events payment.*``; the secret goes to the shop's app, and nowhere else."""
    new = endpoints.new_endpoint(shop.url, events=PATTERNS, description="midpay demo: the shop's own app")
    endpoint, secret = endpoints.add(conn, new)
    shop.secret = secret
    return endpoint


def show_endpoint(con: Console, shop: ShopApp, endpoint: Endpoint) -> None:
    con.print(output.join("  the shop's app: a receiver in this process on ", output.text(shop.url)), soft_wrap=True)
    con.print(output.join(
        "  endpoint ", output.text(endpoint.id), " takes ", output.text(", ".join(endpoint.events)),
        "; its signing secret went to the receiver (endpoints add prints it once; the demo does not)",
    ), soft_wrap=True)


def deliver_once(database_url: str) -> deliver.Summary:
    """``midpay deliver --once``: send what is due, every retry and ordering rule included, then return."""
    return deliver.deliver(database_url, deliver.Options(once=True))


def show_arrivals(con: Console, summary: deliver.Summary, arrivals: list[Arrival]) -> None:
    from midpay.output.deliver import deliver_line

    con.print(output.text("  " + deliver_line(summary)))
    if not arrivals:
        con.print(output.text("  the shop's app received nothing"))
    for got in arrivals:
        verdict = "signature verified" if got.verified else "signature NOT verified: refused with 401"
        fulfil = " (the one to fulfil the order on)" if got.verified and got.type == "payment.paid" else ""
        con.print(output.join(
            "  the shop's app received ", output.text(got.type), " for order ", output.text(got.order_id),
            ", sequence ", output.text(got.sequence), ": ", verdict, fulfil,
        ), soft_wrap=True)


def paid_event_arrived(arrivals: list[Arrival], order_id: str) -> bool:
    """Whether the event to fulfil the order on reached the shop's app, its signature verified."""
    return any(a.verified and a.type == "payment.paid" and a.order_id == order_id for a in arrivals)
