"""What the sandbox's tests share: raw HTTP to it, Midtrans' signature formula, Midtrans' samples.

The sandbox's own tests run it as `midpay sandbox` starts it: with its development key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from midpay.sandbox import SandboxServer
from tests.conftest import REPO as ROOT


def expected_signature(order_id: str, status_code: str, gross_amount: str, key: str) -> str:
    """Midtrans' formula, written out again here on purpose (not midpay's helper)."""
    return hashlib.sha512((order_id + status_code + gross_amount + key).encode("utf-8")).hexdigest()


class Client:
    """Raw HTTP to a sandbox: the exact status codes and bodies, no retries, no mapping."""

    def __init__(self, server: SandboxServer, key: str | None = None) -> None:
        self.url = server.url
        self.session = requests.Session()
        token = base64.b64encode(f"{key or server.server_key}:".encode()).decode()
        self.session.headers.update({"Authorization": f"Basic {token}", "Accept": "application/json"})

    def post(self, path: str, body: object = None, **kwargs: Any) -> requests.Response:
        data = kwargs.pop("data", None if body is None else json.dumps(body))
        return self.session.post(self.url + path, data=data, timeout=5, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=5, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url + path, timeout=5)

    def charge(
        self,
        order_id: str,
        amount: object = 44000,
        payment_type: str = "gopay",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Any:
        body = {"payment_type": payment_type, "transaction_details": {"order_id": order_id, "gross_amount": amount}}
        return self.post("/v2/charge", {**body, **extra}, headers=headers).json()

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[Client]:
    http = Client(sandbox)
    yield http
    http.close()


FIXTURES = ROOT / "tests" / "fixtures" / "midtrans"


def sample(name: str) -> Any:
    """One of Midtrans' published samples (tests/fixtures/midtrans)."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def sandbox_key() -> str | None:
    """None: the ``sandbox`` fixture of tests/conftest.py starts with the development key."""
    return None
