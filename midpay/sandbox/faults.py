"""Fault injection: what can go wrong between midpay and Midtrans, on purpose.

Drawn per /v2 request from ``random.Random(seed)`` (reproducible when the requests
come in the same order):

    fail_rate        HTTP 500/503 before anything happens (safe to retry)
    rate_limit_rate  HTTP 429 before anything happens
    stall_rate       wait ``stall_seconds`` (cut short by stop()), then process and answer
    malformed_rate   process, then answer HTTP 200 with an HTML page or truncated JSON
                     (the request took effect; only its answer is lost)

``latency_ms`` is added to every /v2 answer by sleeping (never spinning).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass

from .shapes import Reply, json_reply, midtrans_error
from .stats import FAULT_KINDS

SETTINGS = ("fail_rate", "rate_limit_rate", "stall_rate", "malformed_rate", "latency_ms", "stall_seconds")


@dataclass
class FaultSettings:
    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    stall_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_ms: int = 0
    stall_seconds: float = 30.0

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SETTINGS}


@dataclass(frozen=True)
class Draw:
    """The fault (if any) chosen for one request, with the settings it was drawn under."""

    settings: FaultSettings
    kind: str | None
    variant: float


def _checked(name: str, value: object) -> float:
    """``value`` as the setting ``name`` takes it: a rate 0..1, whole milliseconds, or seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        value = None
    if name == "latency_ms":
        if not isinstance(value, int) or value < 0:
            raise ValueError("latency_ms must be a whole number >= 0")
        return value
    if name == "stall_seconds":
        if value is None or value < 0:
            raise ValueError("stall_seconds must be a number >= 0")
        return float(value)
    if value is None or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1")
    return float(value)


class FaultPolicy:
    """The random faults and latency of every /v2 request."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._settings = FaultSettings()

    def set(self, *, seed: int | None = None, **changes: float | None) -> dict[str, float]:
        """Change some of the SETTINGS (None: keep) and the seed; returns them all.

        ValueError when a value is out of range, TypeError for an unknown name; nothing changes then.
        """
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown fault settings: {', '.join(unknown)}")
        with self._lock:
            faults = dataclasses.replace(self._settings)
            for name in SETTINGS:
                value = changes.get(name)
                if value is not None:
                    setattr(faults, name, _checked(name, value))
            if seed is not None:
                self._rng.seed(seed)
            self._settings = faults
            return faults.as_dict()

    def draw(self) -> Draw:
        with self._lock:
            settings = self._settings
            draw = self._rng.random()
            variant = self._rng.random()
        edge = 0.0
        rates = (settings.fail_rate, settings.rate_limit_rate, settings.stall_rate, settings.malformed_rate)
        for kind, rate in zip(FAULT_KINDS, rates, strict=True):
            edge += rate
            if draw < edge:
                return Draw(settings, kind, variant)
        return Draw(settings, None, variant)


def refusal(kind: str, variant: float) -> Reply | None:
    """The answer of a fault that strikes before processing (5xx, 429), else None."""
    if kind == "5xx":
        if variant < 0.5:
            return json_reply(
                500, midtrans_error("500", "Sorry. Our system is recovering from unexpected issues. Please retry.")
            )
        return json_reply(
            503, midtrans_error("503", "Bank/partner is experiencing connection issue. Please retry later.")
        )
    if kind == "429":
        return json_reply(429, midtrans_error("429", "API rate limit exceeded"))
    return None


def garble(reply: Reply, variant: float) -> Reply:
    """What a broken proxy makes of an answer: an HTML page or the JSON cut in half."""
    if variant < 0.5:
        return Reply(200, b"<html>502 Bad Gateway</html>", "text/html")
    return Reply(200, reply.body[: max(1, len(reply.body) // 2)], "application/json")
