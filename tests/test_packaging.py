"""The wheel carries the SQL migrations: `midpay migrate` works from any directory after `pip install .`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from midpay.db import migrate

from .conftest import REPO


def test_installed_wheel_migrates_from_another_directory(tmp_path: Path, empty_db_url: str) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("midpay_ops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"midpay/sql/{f.name}" for f in migrate.load_files(REPO / "sql")} <= names
    assert {f"midpay/sandbox/{f.name}" for f in (REPO / "midpay" / "sandbox").glob("*.py")} <= names

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"PYTHONPATH": str(target), "DATABASE_URL": empty_db_url})

    def midpay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import sys, midpay.cli as c; "
             f"assert c.__file__.startswith({str(target)!r}), c.__file__; sys.argv[0] = 'midpay'; c.main()", *args],
            capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env,
        )

    first = midpay("migrate", "--json")
    assert first.returncode == 0, first.stderr
    assert [m["name"] for m in json.loads(first.stdout)["applied"]] == [f.name for f in migrate.load_files()]
    again = midpay("migrate")
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    listing = json.loads(midpay("migrate", "--status", "--json").stdout)
    assert listing["pending"] == [] and len(listing["applied"]) == len(migrate.load_files())
