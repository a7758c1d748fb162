"""Named crash points, for the reliability tests only: die or pause at an exact step.

Inert unless ``MIDPAY_TEST_CRASH_AT`` is set: no production run sets it.

A process started with ``MIDPAY_TEST_CRASH_AT=<point>`` kills itself with SIGKILL
when it reaches ``<point>`` (no cleanup, no message: exactly like ``kill -9``).
``MIDPAY_TEST_CRASH_AT=<point>:pause`` instead writes ``<point>.reached`` (its pid and
its PostgreSQL backend pid, as JSON) into ``MIDPAY_TEST_CRASH_DIR`` and waits until a
file ``<point>.go`` appears there, so a test can act at that exact step (terminate
the backend, kill the process) and then let it go on. Unset, ``reach`` does nothing.

The points of a refund (``midpay.refunds.command``), in order: ``refund.checked`` (Midtrans'
figures read, nothing written), ``refund.before_row`` (payment locked, status
applied, refund row not yet written), ``refund.row_committed`` (the ``requested`` row
committed, Midtrans not yet asked), ``refund.answered`` (Midtrans answered, nothing
recorded), ``refund.outcome_written`` (outcome and payment written, not committed),
``refund.committed`` (all committed, nothing printed yet).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

CRASH_AT = "MIDPAY_TEST_CRASH_AT"
CRASH_DIR = "MIDPAY_TEST_CRASH_DIR"
PAUSE_LIMIT_SECONDS = 120.0


def reach(point: str, conn: Any = None) -> None:
    """Die or pause here when the environment names ``point``; otherwise do nothing."""
    wanted = os.environ.get(CRASH_AT)
    if not wanted:
        return
    name, _, action = wanted.partition(":")
    if name != point:
        return
    if action == "pause":
        _pause(point, conn)
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _pause(point: str, conn: Any) -> None:
    folder = Path(os.environ.get(CRASH_DIR) or ".")
    backend = None
    if conn is not None:
        try:
            backend = conn.info.backend_pid
        except Exception:  # noqa: BLE001 - a closed connection has no backend: report none
            backend = None
    reached = folder / f"{point}.reached"
    partial = reached.with_name(reached.name + ".part")
    partial.write_text(json.dumps({"pid": os.getpid(), "backend_pid": backend}))
    os.replace(partial, reached)
    go = folder / f"{point}.go"
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
