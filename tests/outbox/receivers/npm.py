"""The Node receiver's one package (npm's ``standardwebhooks``, pinned by package-lock.json), installed.

The way tests/node_backend installs its packages (``tests.helpers.npm_ci``): ``npm ci``
once per lock file, as root or as an ordinary user alike. Without Node.js and npm the
Node receiver's tests skip (under CI, where .ci/run installs them, they fail); they
skip when npm cannot reach the registry.
"""

from __future__ import annotations

from pathlib import Path

from ...helpers import npm_ci

HERE = Path(__file__).resolve().parent


def installed() -> Path:
    """This directory with node_modules in place."""
    return npm_ci(HERE, "the Node receiver's tests")
