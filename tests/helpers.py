"""What the tests share besides fixtures: reading a payment back, and waiting on a state.

``payment_row`` and ``payment_status`` are the one way a test reads a row of
payment_transactions by order id. ``wait_until`` is the one way a test waits for
something to become true (a lease to expire, a run to have checked its rows, a
process to have taken a lock): it polls the state itself, with a deadline, instead of
sleeping a fixed time and hoping the state has been reached.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import pytest
from psycopg import sql

T = TypeVar("T")

# What most tests compare: the columns a transition may change, and the order's identity.
PAYMENT_COLUMNS = (
    "status",
    "paid_at",
    "payment_type",
    "midtrans_transaction_id",
    "gross_amount",
    "unconfirmed_since",
    "updated_at",
    "midtrans_response_json",
)


def payment_row(
    source: str | psycopg.Connection[Any], order_id: str, columns: Sequence[str] = PAYMENT_COLUMNS
) -> dict[str, Any]:
    """The row of ``order_id`` as {column: value} for ``columns`` ("*" for all); it must exist.

    ``source`` is a database URL (a connection is opened for the read) or an open
    connection (its transaction is ended after the read, so the next read sees new commits).
    """
    if list(columns) == ["*"]:
        selected: sql.Composable = sql.SQL("*")
    else:
        selected = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL("SELECT {} FROM payment_transactions WHERE order_id = %s").format(selected)
    if isinstance(source, str):
        with psycopg.connect(source) as conn:
            return _read(conn, query, order_id)
    found = _read(source, query, order_id)
    source.commit()
    return found


def _read(conn: psycopg.Connection[Any], query: sql.Composed, order_id: str) -> dict[str, Any]:
    cur = conn.execute(query, (order_id,))
    names = [d.name for d in cur.description or ()]
    row = cur.fetchone()
    assert row is not None, f"no payment row for {order_id!r}"
    return dict(zip(names, row, strict=True))


def payment_status(url: str, order_id: str) -> str | None:
    """The status stored for ``order_id``, or None when there is no row for it."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM payment_transactions WHERE order_id = %s", (order_id,)).fetchone()
    return None if row is None else str(row[0])


def wait_until(predicate: Callable[[], T], timeout: float, *, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or predicate!r}")
        time.sleep(interval)


def abandoned_connections(port: int) -> int:
    """Connections a server on this machine's ``port`` still holds after their client closed them (/proc/net).

    TCP's CLOSE_WAIT: the client gave up (a timeout) and closed its end; the server closes
    its own only once it has finished the request it was handling on it. None left means
    every request a client gave up on has been handled.
    """
    held = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":  # 08: CLOSE_WAIT
                held += 1
    return held


def waits_on_a_lock(url: str, pid: int) -> bool:
    """Whether the backend ``pid`` is waiting for a lock (pg_stat_activity), e.g. on a row another holds."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def missing_prerequisite(message: str) -> NoReturn:
    """Skip for a missing prerequisite, or fail under CI (where .ci/run installs everything)."""
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run installs it)")
    pytest.skip(message)


_NPM_NETWORK = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network|fetch failed", re.I
)


def npm_ci(directory: Path, needed_by: str) -> Path:
    """``directory`` with the node_modules its package-lock.json pins, installed by ``npm ci`` once per lock file.

    As root or as an ordinary user alike, from the registry or npm's cache. Without Node.js
    and npm, ``missing_prerequisite`` (``needed_by`` says who needs them); a registry out
    of reach skips.
    """
    if shutil.which("node") is None or shutil.which("npm") is None or shutil.which("npx") is None:
        missing_prerequisite(f"{needed_by} need Node.js and npm (apt-get install nodejs npm)")
    wanted = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / ".midpay-lock-sha256"
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return directory
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).strip()
        if _NPM_NETWORK.search(text):
            pytest.skip(f"npm could not reach the registry: {text.splitlines()[0] if text else proc.returncode}")
        pytest.fail(f"npm ci failed ({proc.returncode}): {text[-2000:]}")
    stamp.write_text(wanted + "\n")
    return directory
