"""`midpay demo` shows a notification arriving over HTTP at a real `midpay listen`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from midpay import embedded
from tests.conftest import REPO


def test_the_demo_delivers_its_notification_to_listen_over_http(tmp_path: Path) -> None:
    # Outside pytest's own directory, which is closed to the user the server runs as under root.
    root = Path(tempfile.mkdtemp(prefix="midpay-listen-demo-"))
    root.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"}
    env.update(MIDPAY_HOME=str(root / "home"), PYTHONPATH=str(REPO), COLUMNS="120", NO_COLOR="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "midpay", "demo"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        log = (root / "home" / "demo" / "listen.log").read_text() if proc.returncode == 0 else ""
    finally:  # the demo stops the PostgreSQL it started; should it fail to, the test does
        embedded.stop(root / "home" / "demo")
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "Midtrans notified it over HTTP: POST /midtrans/notification answered 200 (applied, pending -> settlement)"
        in proc.stdout
    )
    assert '"outcome": "applied"' in log
    assert log.rstrip().endswith('"message": "Shutting down: Master"}')  # stopped, not left running
