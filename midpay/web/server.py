"""Serving the webhook app: ``midpay listen`` runs it under gunicorn's threaded workers.

gunicorn because it is the WSGI server operators already know how to run: ``--workers``
pre-forked processes watched by a master, a graceful stop on SIGTERM, a documented way
to start it from code (``BaseApplication``), and 15 years of production use. The
``gthread`` worker gives each process a pool of threads, so a request waiting on
PostgreSQL or on Midtrans' Get Status does not hold up the others.

The socket is bound here, before gunicorn starts, so that a port in use or an address
that cannot be had is one error line (exit 2) and ``--port 0`` works: the port chosen
is in the "listening" line. Everything on stderr is JSON, one object a line: the
request lines of ``webhook`` and gunicorn's own lines as ``{"time", "level", "message"}``.

Signals (gunicorn's): SIGTERM closes the socket, lets the requests in flight finish
(up to ``GRACEFUL_TIMEOUT`` seconds) and exits 0; SIGINT and SIGQUIT stop at once;
SIGHUP restarts the workers; SIGTTIN and SIGTTOU add or remove one.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from midpay import db
from midpay.config import redact
from midpay.db.migrate import require_migrated
from midpay.errors import UsageError
from midpay.web.app import now_text, write_log_line

WSGIApp = Callable[..., Any]

# Longer than Midtrans waits for an answer (15 s): a request in flight when SIGTERM
# arrives is either answered or abandoned by Midtrans, never cut off by us first.
GRACEFUL_TIMEOUT = 20
DEFAULT_THREADS = 8


def log_record(message: str, level: str = "info") -> dict[str, Any]:
    """A server line in the shape of gunicorn's: time, level, message."""
    return {"time": now_text(), "level": level, "message": message}


def check_ready(url: str) -> None:
    """Refuse to start on a database that cannot be reached (exit 3) or is not migrated (exit 2), in the
    words every command uses (``db.migrate.require_migrated``)."""
    with db.translate_errors(), db.connect(url) as conn:
        require_migrated(conn)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {_reason(exc)}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {_reason(exc)}") from exc
    return sock


def url_of(sock: socket.socket, path: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def serve(
    sock: socket.socket,
    load: Callable[[], WSGIApp],
    *,
    workers: int,
    threads: int,
    announce: dict[str, Any],
    secrets: list[str],
) -> None:
    """Run gunicorn on ``sock`` until it is told to stop; each worker calls ``load`` for its app.

    ``announce`` is logged (with the time and level) once the master is listening. The
    socket is handed over to gunicorn, which closes it.
    """
    from gunicorn.app.base import BaseApplication

    fd = sock.detach()
    options: dict[str, Any] = {
        "bind": [f"fd://{fd}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 60,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": _json_logger(secrets),
        "proc_name": "midpay-listen",
        "when_ready": lambda server: write_log_line({**log_record(""), **announce}),
        "worker_exit": _close_app,
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)  # no ~/.gunicorn/gunicorn.ctl

        def load(self) -> WSGIApp:
            return load()

    try:
        Server().run()
    except SystemExit:
        # The stop is decided: a second SIGTERM while the interpreter winds down (when
        # Python has put back the default handlers) must not turn exit 0 into a kill.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise


def _close_app(server: Any, worker: Any) -> None:
    """gunicorn's worker_exit hook: close the exiting worker's connections."""
    close = getattr(getattr(worker, "wsgi", None), "close", None)
    if callable(close):
        close()


def _json_logger(secrets: list[str]) -> type:
    """gunicorn's logger, writing each line as a JSON object with every secret masked."""
    from gunicorn.glogging import Logger

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            import json

            document = {"time": now_text(), "level": record.levelname.lower(), "message": redact(message, secrets)}
            return json.dumps(document, ensure_ascii=True)

    class JsonLogger(Logger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    return JsonLogger


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
