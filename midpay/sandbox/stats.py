"""The sandbox's counters and its record of notification deliveries, behind one lock."""

from __future__ import annotations

import json
import threading
from typing import Any

ENDPOINTS = ("charge", "status", "cancel", "expire", "refund", "qr-code", "other")
FAULT_KINDS = ("5xx", "429", "stall", "malformed")
ORDER_FAULTS = ("500", "503", "429", "401", "stall", "hangup", "lost-answer", "malformed")
MAX_DELIVERIES = 50_000  # a long-running ``serve`` keeps the newest attempts only


def _fresh() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_endpoint": dict.fromkeys(ENDPOINTS, 0),
        "status_checks": {},
        "charges": {},
        "refunds": {},
        "seeded": 0,
        "faults": dict.fromkeys(FAULT_KINDS, 0),
        "order_faults": dict.fromkeys(ORDER_FAULTS, 0),
        "tampered": 0,
        "unauthorized": 0,
        "notifications": {
            "emitted": 0,
            "written": 0,
            "posted": 0,
            "failed": 0,
            "attempts": 0,
            "retries": 0,
            "forgotten": 0,
        },
        "deliveries": [],
    }


class Stats:
    """Counters since start or the last reset.

    ``status_checks``, ``charges`` and ``refunds`` count per order id (``refunds``: new
    refunds made through the API, replays not counted); ``deliveries`` lists every
    notification delivery attempt with its answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = _fresh()

    def request(self, endpoint: str, status_of: str | None) -> None:
        """One /v2 request; ``status_of`` is the order a status check asked about."""
        with self._lock:
            data = self._data
            data["requests"] += 1
            data["by_endpoint"][endpoint] += 1
            if status_of is not None:
                checks = data["status_checks"]
                checks[status_of] = checks.get(status_of, 0) + 1

    def bump(self, group: str, name: str | None = None, by: int = 1) -> None:
        """Add ``by`` to a top-level counter, or to ``group[name]`` (created at 0)."""
        with self._lock:
            if name is None:
                self._data[group] += by
            else:
                table = self._data[group]
                table[name] = table.get(name, 0) + by

    def delivery(self, record: dict[str, Any], final: str | None) -> None:
        """One delivery attempt; ``final`` ("posted" or "failed") when it ended the delivery."""
        with self._lock:
            notes = self._data["notifications"]
            notes["attempts"] += 1
            if record["attempt"] > 1 and record["hop"] == 0:
                notes["retries"] += 1
            if final is not None:
                notes[final] += 1
            records = self._data["deliveries"]
            records.append(record)
            if len(records) > MAX_DELIVERIES:
                forget = MAX_DELIVERIES // 10
                del records[:forget]
                notes["forgotten"] += forget

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._data))
        return copy

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            copy: list[dict[str, Any]] = json.loads(json.dumps(self._data["deliveries"]))
        return copy

    def reset(self) -> None:
        with self._lock:
            self._data = _fresh()
