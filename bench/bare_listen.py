"""The bare handler ``bench_listen`` compares ``midpay listen`` with.

The least a receiver can do and still confirm: store the body, ask Get Status, write the
answer's status onto the row. No signature check, no amount or state rule, no JSON log.
It runs on exactly the server ``midpay listen`` runs on (``midpay.web.server.serve``: gunicorn,
gthread workers, the same pool per worker), so the difference is midpay's own work.

    python bench/bare_listen.py --port 0 --workers N --threads T

Reads DATABASE_URL, MIDTRANS_SERVER_KEY and MIDTRANS_API_URL from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from midpay import db
from midpay.midtrans.gateway import Gateway
from midpay.web import app as webhook
from midpay.web import server as serving


class BareApp:
    """POST a body: INSERT it, GET its status from Midtrans, UPDATE the row; answer 200."""

    def __init__(self, url: str, api_url: str, server_key: str, threads: int) -> None:
        self.url, self.api_url, self.server_key, self.threads = url, api_url, server_key, threads
        self._lock = threading.Lock()
        self._pool: Any = None
        self._gateway: Gateway | None = None

    def _parts(self) -> tuple[Any, Gateway]:
        with self._lock:
            if self._pool is None:
                self._pool = db.serving_pool(self.url, self.threads, timeout=webhook.POOL_TIMEOUT)
                self._gateway = Gateway(
                    base_url=self.api_url, server_key=self.server_key, timeout=30, pool_size=self.threads
                )
            assert self._gateway is not None
            return self._pool, self._gateway

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != webhook.DEFAULT_PATH or environ.get("REQUEST_METHOD") != "POST":
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        body = json.loads(raw)
        order_id = body["order_id"]
        pool, gateway = self._parts()
        with pool.connection() as conn:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO payment_webhook_events (raw_body, source, order_id, is_verified, processed) "
                    "VALUES (%s::jsonb, 'bare', %s, false, false)",
                    (raw.decode(), order_id),
                )
            answer = gateway.status(order_id)
            with conn.transaction():
                conn.execute(
                    "UPDATE payment_transactions SET status = %s, updated_at = now() WHERE order_id = %s",
                    (answer["transaction_status"], order_id),
                )
        payload = b'{"outcome": "applied"}\n'
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._gateway is not None:
            self._gateway.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=serving.DEFAULT_THREADS)
    args = parser.parse_args(argv)
    url, api_url, key = os.environ["DATABASE_URL"], os.environ["MIDTRANS_API_URL"], os.environ["MIDTRANS_SERVER_KEY"]
    sock = serving.bind("127.0.0.1", args.port)
    announce = {
        "message": "bare handler listening",
        "url": serving.url_of(sock, webhook.DEFAULT_PATH),
        "health": serving.url_of(sock, webhook.HEALTH_PATH),
    }
    serving.serve(
        sock,
        lambda: BareApp(url, api_url, key, args.threads),
        workers=args.workers,
        threads=args.threads,
        announce=announce,
        secrets=[key],
    )


if __name__ == "__main__":
    sys.exit(main())
