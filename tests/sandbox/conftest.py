"""The sandbox's own tests run it as `midpay sandbox` starts it: with its development key."""

from __future__ import annotations

import pytest


@pytest.fixture
def sandbox_key() -> str | None:
    """None: the ``sandbox`` fixture of tests/conftest.py starts with the development key."""
    return None
