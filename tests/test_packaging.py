"""The wheel carries the SQL migrations, so `midpay migrate` works after a plain `pip install .`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from midpay import migrate

from .conftest import REPO


def test_wheel_ships_every_migration_file(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("midpay_ops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"midpay/sql/{f.name}" for f in migrate.load_files(REPO / "sql")}
    assert expected and expected <= names
    assert "midpay/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "midpay = midpay.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
