"""Running ``midpay listen`` as a child process: how ``midpay demo`` receives notifications over HTTP.

The child's stderr (its JSON log, one object a line) goes to a file; the child is ready
once it has logged its "listening" line (the one with ``health``), and a notification
has arrived once a request line names its order. The child gets this process's
environment with midpay's own settings replaced, so nothing of the user's leaks in.

The tests and the benchmarks start other servers of the same shape (``midpay listen``
with more options, the benchmark's bare handler) through ``start_server``; their own
helper for that is ``tests/listen_process.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from midpay.errors import DependencyError

LISTEN = ("-m", "midpay", "listen")


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


def start_listen(env: Mapping[str, str], log_path: Path, *, port: int = 0, cwd: Path | None = None) -> Listener:
    """Start ``midpay listen --port PORT`` and wait for its "listening" line."""
    return start_server([*LISTEN, "--port", str(port)], env, log_path, cwd=cwd)


def start_server(
    arguments: Sequence[str], env: Mapping[str, str], log_path: Path, *, cwd: Path | None = None, timeout: float = 60.0
) -> Listener:
    """Start ``python ARGUMENTS``, a server that logs like ``midpay listen``, and wait for its "listening" line.

    DependencyError (with the last line it logged) when it exits first or is not
    listening within ``timeout`` seconds (it is killed then).
    """
    log = log_path.open("ab")
    start = log.tell()  # a log kept from an earlier run holds older "listening" lines
    process = subprocess.Popen(
        [sys.executable, *arguments],
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
