"""``midpay listen`` as a child process of a test, with any options and on any port.

The shipped part (start, wait for the "listening" line, read the log, stop) is
``midpay.web.child``, which ``midpay demo`` uses; this adds only what tests pass on
top: more options (``--workers``, ``--threads``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from midpay.web.child import LISTEN, Listener, free_port, start_server

__all__ = ["Listener", "free_port", "start_process"]


def start_process(
    env: Mapping[str, str], log_path: Path, *args: str, port: int = 0, cwd: Path | None = None
) -> Listener:
    """Start ``midpay listen --port PORT ARGS`` and wait for its "listening" line."""
    return start_server([*LISTEN, "--port", str(port), *args], env, log_path, cwd=cwd)
