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
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from midpay import db
from midpay.config import redact
from midpay.db.migrate import load_files, read_applied, readiness
from midpay.errors import ConfigError, DependencyError, UsageError
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
    """Refuse to start on a database that cannot be reached (exit 3) or is not migrated (exit 2)."""
    with db.translate_errors(), db.connect(url) as conn:
        problems = readiness(load_files(), read_applied(conn)).problems
    if problems:
        raise ConfigError(f"the database is not migrated ({'; '.join(problems)}): run midpay migrate")


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


# --- as a child process (the demo, tests, benchmarks) -----------------------------------


class Listener:
    """A ``midpay listen`` child process; its stderr (the JSON log) goes to ``log_path``."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, ready: dict[str, Any], start: int = 0) -> None:
        self.process = process
        self.log_path = log_path
        self.log_start = start  # where this process's lines begin in the log file
        self.url: str = ready["url"]
        self.health_url: str = ready["health"]

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line this process logged so far."""
        import json

        lines = []
        for line in _read_from(self.log_path, self.log_start).splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"unparsed": line})
        return lines

    def wait_for(self, order_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The first request line about ``order_id``, once it is logged; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if line.get("method") == "POST" and line.get("order_id") == order_id:
                    return line
            if time.monotonic() >= deadline or self.process.poll() is not None:
                return None
            time.sleep(0.05)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit; its exit code (killed after ``timeout``: -9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


def cannot_start_process() -> str | None:
    """Why this process cannot start ``python -m midpay listen`` (its interpreter out of reach), or None."""
    if not os.access(sys.executable, os.X_OK):
        return f"{sys.executable} cannot be run by this user"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for a sender that must know the URL before the receiver starts)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def child_env(*, database_url: str, server_key: str, api_url: str, home: Path) -> dict[str, str]:
    """This process's environment with midpay's settings replaced by these (nothing of the user's leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url, MIDTRANS_SERVER_KEY=server_key, MIDTRANS_API_URL=api_url, MIDPAY_HOME=str(home)
    )
    return env


def describe(line: dict[str, Any] | None) -> str:
    """One line about a received notification, from its log line."""
    if line is None:
        return "no notification arrived over HTTP"
    moved = f", {line.get('status_before')} -> {line.get('status_after')}" if line.get("status_before") else ""
    error = f": {line['error']}" if line.get("error") else ""
    return f"POST {line.get('path')} answered {line.get('status')} ({line.get('outcome')}{moved}){error}"


def start_process(
    env: Mapping[str, str],
    log_path: Path,
    *args: str,
    port: int = 0,
    cwd: Path | None = None,
    timeout: float = 60.0,
    program: Sequence[str] = ("-m", "midpay", "listen"),
) -> Listener:
    """Start ``midpay listen --port PORT ARGS`` and wait for its "listening" line.

    ``program`` runs another server of the same shape instead (the benchmark's bare handler).
    """
    import json

    log = log_path.open("ab")
    start = log.tell()  # a log kept from an earlier run holds older "listening" lines
    process = subprocess.Popen(
        [sys.executable, *program, "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=dict(env),
        cwd=cwd,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _read_from(log_path, start).splitlines():
            if line.startswith("{") and '"health"' in line:
                return Listener(process, log_path, json.loads(line), start)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    tail = _read_from(log_path, start).strip().splitlines()[-1:] or ["no output"]
    raise DependencyError(f"midpay listen did not start (exit {process.returncode}): {tail[0][:300]}")


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")
