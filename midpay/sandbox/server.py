"""SandboxServer: the sandbox's state, Core API, faults, notifier and HTTP front, composed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from midpay.errors import UsageError

from .api import CoreApi
from .control import ControlEndpoints
from .faults import FaultPolicy
from .http import HttpFront
from .notify import Notifier
from .reqlog import RequestLog
from .shapes import DEV_SERVER_KEY
from .state import SandboxState, Stats


class SandboxServer:
    """A Midtrans-compatible Core API in a background thread of this process."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_key: str | None = None,
        latency_ms: int = 0,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        stall_seconds: float = 30.0,
        seed: int | None = None,
        expiry_seconds: int = 900,
        notify_url: str | None = None,
        notify_dir: Path | None = None,
        request_log: Callable[[str], None] | None = None,
    ) -> None:
        if expiry_seconds <= 0:
            raise ValueError("expiry_seconds must be positive")
        self.server_key = server_key or DEV_SERVER_KEY
        self.using_dev_key = self.server_key == DEV_SERVER_KEY
        self.expiry_seconds = expiry_seconds
        self.notify_url = notify_url
        self.notify_dir = Path(notify_dir) if notify_dir is not None else None
        self._stats = Stats()
        self.faults = FaultPolicy(seed)
        self.set_faults(
            fail_rate=fail_rate,
            rate_limit_rate=rate_limit_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            latency_ms=latency_ms,
            stall_seconds=stall_seconds,
        )
        self.notifier = Notifier(stats=self._stats, notify_url=notify_url, notify_dir=self.notify_dir)
        self.state = SandboxState(
            server_key=self.server_key, expiry_seconds=expiry_seconds, stats=self._stats, emit=self.notifier
        )
        self.api = CoreApi(self.state)
        self.front = HttpFront(
            host=host,
            port=port,
            server_key=self.server_key,
            state=self.state,
            api=self.api,
            faults=self.faults,
            stats=self._stats,
            control=ControlEndpoints(self),
            request_log=RequestLog(request_log) if request_log is not None else None,
        )

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url!r}, dev_key={self.using_dev_key})"

    @property
    def url(self) -> str:
        """``http://host:port`` once started, else ``""``."""
        return self.front.url

    @property
    def host(self) -> str:
        return self.front.host

    @property
    def port(self) -> int:
        return self.front.port

    # -- lifecycle --

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; ``url`` is set once this returns."""
        try:
            self.front.start()
        except OSError as exc:
            raise UsageError(f"the sandbox cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        return self

    def stop(self) -> None:
        """Stop serving, waking stalled requests and closing keep-alive connections; never hangs."""
        self.front.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection and control --

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last ``reset_stats()`` (a deep copy)."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters; orders are kept."""
        self._stats.reset()

    def set_faults(
        self,
        *,
        fail_rate: float | None = None,
        rate_limit_rate: float | None = None,
        stall_rate: float | None = None,
        malformed_rate: float | None = None,
        latency_ms: int | None = None,
        stall_seconds: float | None = None,
        seed: int | None = None,
    ) -> dict[str, float]:
        """Change fault rates (0..1), latency and stall length at run time; returns them all."""
        return self.faults.set(
            fail_rate=fail_rate,
            rate_limit_rate=rate_limit_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            latency_ms=latency_ms,
            stall_seconds=stall_seconds,
            seed=seed,
        )

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        """A snapshot of the latest transaction of ``order_id`` (or of a transaction id)."""
        return self.state.get_order(order_id)

    def orders(self) -> list[dict[str, Any]]:
        """Snapshots of the latest transaction of every order."""
        return self.state.orders()

    def pay(self, order_id: str, status: str = "settlement") -> dict[str, Any]:
        """Move an order as its customer would and emit the signed notification, which is returned.

        ``status`` is settlement, expire, cancel or deny (from pending), or the order's
        current status to send its notification again. Raises UsageError for another
        status, NotFoundError for an unknown order, MidtransRejected (412) for a move out
        of a final state.
        """
        return self.state.pay(order_id, status)
