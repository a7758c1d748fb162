"""The HTTP face of the notification intake: the WSGI app that ``midpay listen`` serves.

Thin on purpose. It checks the HTTP framing (path, method, content type, size), hands
the exact bytes received to the intake (``intake.single.receive``: it stores them first,
then decides), and turns the result (its outcome and reason code) into an answer Midtrans
acts on (REFERENCE §5: 2xx is never retried, 400/404 twice, 503 four times, anything else
five times):

    200  stored; applied, or nothing to change (a duplicate, an older state)
    400  stored and rejected: not a usable notification, a bad signature, a wrong amount
    404  stored and rejected: no payment with that order id here
    503  not stored (PostgreSQL unreachable) or not known to be stored; or stored but
         awaiting confirmation (Get Status could not be had): Midtrans resends it
    404 / 405 / 413 / 415 before anything is read or stored: another path, another
         method, a body over the size limit, a body that does not say it is JSON

Rejections are 4xx although the body is kept, so that Midtrans' dashboard history and
its failed-delivery e-mails show the operator that something is wrong (a wrong server
key, say); ``midpay events reprocess --rejected`` applies the stored bodies after the
fix. Nothing about a notification is decided here.

``GET /healthz`` answers 200 when PostgreSQL answers and the migrations are exactly
those this midpay ships, 503 otherwise. Every request is one JSON line on stderr.

Shops that mount the app in their own WSGI server use ``midpay.web.app:app``
(configured from the environment when first imported) or ``create_app()``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from midpay import __version__, db, embedded
from midpay.config import Settings, redact
from midpay.db.migrate import load_files, read_applied, readiness
from midpay.errors import MidpayError
from midpay.intake.pipeline import Reason
from midpay.intake.single import receive

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from midpay.intake.pipeline import NotificationResult
    from midpay.midtrans.gateway import Gateway

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

DEFAULT_PATH = "/midtrans/notification"
HEALTH_PATH = "/healthz"
# A Midtrans notification is about 1 KB; a refund's list of refunds adds a few hundred
# bytes per refund. Anything near this limit is not from Midtrans.
MAX_BODY_BYTES = 256 * 1024
# How long a request waits for a pooled connection before answering 503. Midtrans
# gives up on an answer after 15 s.
POOL_TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0
# The longest one Get Status call may take (MIDPAY_TIMEOUT, if shorter): with the
# intake's one re-ask of a stalled call, the answer still comes within Midtrans' 15 s.
CONFIRM_TIMEOUT = 5.0  # a monitor wants a prompt "no" more than a late "yes"
# PostgreSQL connections each serving process holds at most, whatever its threads: a
# request needs one only to store, screen and apply (a few ms), not while Midtrans
# answers. 4 workers hold at most 16, beside reconcile's 3 a process.
DB_CONNECTIONS = 4
_LOG_FIELD_LIMIT = 300  # characters of an order id or error in a log line


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, and what the log line says about it."""

    status: int
    document: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    log: dict[str, Any] = field(default_factory=dict)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_for(result: NotificationResult) -> int:
    """The HTTP status that tells Midtrans what became of a stored body (see the module docstring)."""
    if result.outcome in ("applied", "unchanged"):
        return 200
    if result.outcome == "awaiting":
        return 503  # stored, but Midtrans could not confirm it now: a resend tries again
    if result.reason is Reason.UNKNOWN_ORDER:
        return 404
    return 400


def write_log_line(record: dict[str, Any]) -> None:
    """One JSON line on stderr, in one write (lines of concurrent workers never interleave)."""
    line = json.dumps(record, ensure_ascii=True, default=str) + "\n"
    try:
        os.write(2, line.encode("ascii"))
    except OSError:
        pass  # stderr is gone (a closed pipe): the answer matters more than its log line


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookApp:
    """The WSGI app: notifications on ``path``, health on ``/healthz``.

    Each process that serves it opens its own pool of up to ``pool_size`` PostgreSQL
    connections (``DB_CONNECTIONS`` unless told otherwise, whatever the number of
    threads) and its own Midtrans session of ``threads`` HTTP connections, on the first
    request (so a pre-forking server never shares them across processes). A request
    holds a PostgreSQL connection only while it stores, screens and applies; none while
    it waits on Get Status (``intake.single.receive``). Get Status calls wait at most ``CONFIRM_TIMEOUT``
    seconds each (or ``timeout``, if shorter), so that Midtrans, which waits 15 s, gets
    its answer.
    """

    def __init__(
        self,
        *,
        database_url: str,
        server_key: str,
        api_url: str,
        timeout: float = CONFIRM_TIMEOUT,
        path: str = DEFAULT_PATH,
        pool_size: int = DB_CONNECTIONS,
        threads: int = 8,
        max_body: int = MAX_BODY_BYTES,
        secrets: Iterable[str] = (),
        log: Callable[[dict[str, Any]], None] = write_log_line,
    ) -> None:
        self.path = path
        self.max_body = max_body
        self._url = database_url
        self._server_key = server_key
        self._api_url = api_url
        self._timeout = min(timeout, CONFIRM_TIMEOUT)
        self._pool_size = pool_size
        self._threads = threads
        self._secrets = [*secrets, server_key]
        self._log = log
        self._migrations = load_files()
        self._pool: ConnectionPool[db.Connection] | None = None
        self._gateway: Gateway | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()

    # --- WSGI ---

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        try:
            reply = self._route(method, path, environ)
        except Exception as exc:  # noqa: BLE001 - a fault here must still answer, and say so once
            reply = Reply(500, {"error": "internal error"}, log={"outcome": "error", "error": self._text(exc)})
        payload = b"" if method == "HEAD" else json.dumps(reply.document).encode() + b"\n"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *reply.headers]
        start_response(f"{reply.status} {_REASONS.get(reply.status, '')}".rstrip(), headers)
        record = {
            "time": now_text(),
            "method": method,
            "path": _clip(path),
            "status": reply.status,
            "order_id": None,
            "error": None,
            **reply.log,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "remote": environ.get("REMOTE_ADDR"),
        }
        self._log(record)
        return [payload]

    def _route(self, method: str, path: str, environ: Environ) -> Reply:
        if path == self.path:
            if method != "POST":
                return _refuse(405, "only POST", (("Allow", "POST"),))
            return self._notification(environ)
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _refuse(405, "only GET and HEAD", (("Allow", "GET, HEAD"),))
            return self._health()
        return _refuse(404, "no such path")

    # --- notifications ---

    def _notification(self, environ: Environ) -> Reply:
        refused = _check_framing(environ, self.max_body)
        if refused is not None:
            return refused
        try:
            raw = _read_body(environ, self.max_body)
        except Exception:  # noqa: BLE001 - the sender went away mid-body: nothing complete to store
            return _refuse(400, "the body could not be read to its end")
        if raw is None:
            return _refuse(413, f"body larger than {self.max_body} bytes")
        source = f"http:{environ.get('REMOTE_ADDR') or 'unknown'}"
        try:
            pool, gateway = self._parts()
            result = receive(pool.connection, gateway, raw, source, server_key=self._server_key)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the sender must send it again
            mapped = db.map_error(exc)
            reason = self._text(mapped if mapped is not None else exc)
            return Reply(503, {"outcome": "not stored", "error": reason}, log={"outcome": "error", "error": reason})
        status = status_for(result)
        error = self._text(result.error) if result.error else None
        order_id = _clip(result.order_id) if result.order_id is not None else None
        log = {
            "outcome": result.outcome,
            "order_id": order_id,
            "status_before": result.status_before,
            "status_after": result.status_after,
            "error": error,
        }
        return Reply(status, {"outcome": result.outcome, "order_id": order_id, "error": error}, log=log)

    # --- health ---

    def _health(self) -> Reply:
        try:
            with self._parts()[0].connection(timeout=HEALTH_TIMEOUT) as conn:
                problems = readiness(self._migrations, read_applied(conn)).problems
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not in order"
            mapped = db.map_error(exc)
            reason = self._text(mapped if mapped is not None else exc)
            document = {"status": "unavailable", "database": reason, "migrations": "unknown"}
            return Reply(503, document, log={"outcome": "unhealthy", "error": reason})
        if problems:
            document = {"status": "unavailable", "database": "ok", "migrations": "; ".join(problems)}
            return Reply(503, document, log={"outcome": "unhealthy", "error": document["migrations"]})
        return Reply(200, {"status": "ok", "database": "ok", "migrations": "ok"}, log={"outcome": "healthy"})

    # --- plumbing ---

    def _parts(self) -> tuple[ConnectionPool[db.Connection], Gateway]:
        """This process's pool and Midtrans session, made on first use (after a pre-forking server forked)."""
        from midpay.midtrans.gateway import Gateway

        with self._lock:
            if self._pool is None or self._gateway is None or self._pool_pid != os.getpid():
                self._pool = db.serving_pool(self._url, self._pool_size, timeout=POOL_TIMEOUT)
                self._gateway = Gateway(
                    base_url=self._api_url,
                    server_key=self._server_key,
                    timeout=self._timeout,
                    pool_size=max(self._threads, self._pool_size),
                    user_agent=f"midpay-listen/{__version__}",
                )
                self._pool_pid = os.getpid()
            return self._pool, self._gateway

    def close(self) -> None:
        """Close this process's connections (a server calls it as a worker exits)."""
        with self._lock:
            pool, gateway, self._pool, self._gateway = self._pool, self._gateway, None, None
        if self._pool_pid == os.getpid():
            if pool is not None:
                pool.close()
            if gateway is not None:
                gateway.close()

    def _text(self, value: object) -> str:
        """One line for an answer or a log line, with every secret masked."""
        if isinstance(value, BaseException):
            message = str(value).strip()
            text = message.splitlines()[0] if message else type(value).__name__
            if not isinstance(value, MidpayError):
                text = f"{type(value).__name__}: {text}"
        else:
            text = str(value)
        return _clip(redact(text, self._secrets))


def _refuse(status: int, error: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An answer given before anything was read or stored."""
    return Reply(status, {"error": error}, headers, {"outcome": "refused", "error": error})


def _check_framing(environ: Environ, limit: int) -> Reply | None:
    media = str(environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = _clip(media, 60) or "none"
        return _refuse(415, f"Content-Type must be application/json, not {shown}")
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        if not length.isdigit():
            return _refuse(400, "malformed Content-Length")
        if int(length) > limit:
            return _refuse(413, f"body larger than {limit} bytes")
    return None


def _read_body(environ: Environ, limit: int) -> bytes | None:
    """The body's exact bytes; None when it is longer than ``limit`` (chunked bodies have no length).

    A body shorter than its Content-Length (the sender went away) raises.
    """
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        data: bytes = stream.read(int(length))
        if len(data) != int(length):
            raise EOFError(f"{len(data)} of {length} bytes")
        return data
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def _clip(value: str, size: int = _LOG_FIELD_LIMIT) -> str:
    return value if len(value) <= size else value[:size] + "…"


# --- configured from the environment ---------------------------------------------------


def create_app(
    settings: Settings | None = None,
    *,
    path: str = DEFAULT_PATH,
    pool_size: int = DB_CONNECTIONS,
    max_body: int = MAX_BODY_BYTES,
) -> WebhookApp:
    """The app for ``settings`` (default: the environment and ./.env, as the command line reads them)."""
    if settings is None:
        from midpay.config import load_settings

        settings = load_settings()
    return WebhookApp(
        database_url=embedded.resolve_url(settings),
        server_key=settings.require_server_key(),
        api_url=settings.api_url,
        timeout=settings.timeout,
        path=path,
        pool_size=pool_size,
        max_body=max_body,
        secrets=settings.secrets(),
    )


_default: WebhookApp | None = None
_default_lock = threading.Lock()


def __getattr__(name: str) -> WebhookApp:
    """``midpay.web.app:app``, made from the environment the first time it is asked for."""
    global _default
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _default_lock:
        if _default is None:
            _default = create_app()
        return _default
