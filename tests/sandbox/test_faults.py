"""midpay.sandbox.faults: random faults drawn from a seed, reproducibly."""

from __future__ import annotations

from midpay.sandbox import SandboxServer
from tests.sandbox.conftest import Client


def fault_sequence(seed: int) -> list[int]:
    with SandboxServer(seed=seed, fail_rate=0.3, rate_limit_rate=0.2, malformed_rate=0.2) as server:
        http = Client(server)
        codes = []
        for _ in range(40):
            response = http.get("/v2/x/status")
            codes.append(response.status_code if response.headers["Content-Type"] != "text/html" else -1)
        http.close()
    return codes


def test_seeded_faults_are_reproducible() -> None:
    first = fault_sequence(seed=42)
    assert fault_sequence(seed=42) == first
    assert {200, 429, -1} <= set(first) and set(first) & {500, 503}
    assert fault_sequence(seed=43) != first
