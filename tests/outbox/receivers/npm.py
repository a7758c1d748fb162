"""Installing the Node receiver's one package (npm's ``standardwebhooks``, pinned by package-lock.json).

``npm ci`` runs once per lock file (a stamp in node_modules remembers it), the way
tests/node_backend installs its packages: as root or as an ordinary user alike, from
the registry or npm's cache. Without Node.js and npm the Node receiver's tests skip
(under CI, where .ci/run installs them, they fail); they skip when npm cannot reach the
registry.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_NETWORK = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network|fetch failed", re.I)


def _missing(what: str) -> None:
    message = f"the Node receiver needs {what}"
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run installs it)")
    pytest.skip(message)


def installed() -> Path:
    """This directory with node_modules in place; skips (or fails under CI) when that cannot be."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _missing("Node.js and npm (apt-get install nodejs npm)")
    wanted = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    stamp = HERE / "node_modules" / ".midpay-lock-sha256"
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return HERE
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).strip()
        if _NETWORK.search(text):
            pytest.skip(f"npm could not reach the registry: {text.splitlines()[0] if text else proc.returncode}")
        pytest.fail(f"npm ci failed ({proc.returncode}): {text[-2000:]}")
    stamp.write_text(wanted + "\n")
    return HERE
