"""The command-line faces of the sandbox: ``midpay sandbox serve`` and ``midpay sandbox pay``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from midpay.errors import (
    GatewayProtocolError,
    GatewayUnavailable,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    UsageError,
)

from .server import SandboxServer
from .shapes import DEV_SERVER_KEY, cannot_modify
from .state import PAY_STATUSES


def serve(
    *,
    host: str,
    port: int,
    server_key: str | None,
    latency_ms: int,
    fail_rate: float,
    notify_url: str | None,
    notify_dir: Path | None,
    seed: int | None = None,
    stall_rate: float = 0.0,
    malformed_rate: float = 0.0,
    expiry_seconds: int = 900,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM (``midpay sandbox serve``)."""
    try:
        sandbox = SandboxServer(
            host=host,
            port=port,
            server_key=server_key,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            stall_rate=stall_rate,
            malformed_rate=malformed_rate,
            seed=seed,
            expiry_seconds=expiry_seconds,
            notify_url=notify_url,
            notify_dir=notify_dir,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    sandbox.start()
    done = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        announce(f"midpay sandbox listening on {sandbox.url} (Ctrl-C to stop)")
        if sandbox.using_dev_key:
            announce(f"using the development server key {DEV_SERVER_KEY}")
        else:
            announce("using the server key from MIDTRANS_SERVER_KEY")
        announce(f"point midpay at it with MIDTRANS_API_URL={sandbox.url}")
        if notify_url:
            announce(f"notifications are POSTed to {notify_url}")
        if notify_dir:
            announce(f"notifications are written to {notify_dir}")
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        sandbox.stop()
        announce("sandbox stopped")


def pay_remote(*, api_url: str, order_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask a running sandbox to move ``order_id`` (``midpay sandbox pay``); returns the notification."""
    import requests

    if status not in PAY_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
    base = api_url.rstrip("/")
    url = f"{base}/_sandbox/pay/{quote(order_id, safe='')}"
    try:
        response = requests.post(url, json={"status": status}, timeout=(timeout, timeout))
    except requests.ReadTimeout as exc:
        raise OutcomeUnknown(f"the sandbox at {base} did not answer within {timeout:g} s") from exc
    except requests.RequestException as exc:
        raise GatewayUnavailable(
            f"no midpay sandbox answered at {base} ({type(exc).__name__}); start one with `midpay sandbox serve` "
            "and set MIDTRANS_API_URL to its URL"
        ) from exc
    try:
        body: object = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and "order_id" in body:
        return body
    message = body.get("sandbox_error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        raise GatewayProtocolError(
            f"{base} did not answer like a midpay sandbox (HTTP {response.status_code}); "
            "is MIDTRANS_API_URL pointing at `midpay sandbox serve`?"
        )
    if response.status_code == 404:
        raise NotFoundError(message)
    if response.status_code == 400:
        raise UsageError(message)
    if response.status_code == 409:
        raise MidtransRejected(message, "412", cannot_modify())
    raise GatewayProtocolError(f"the sandbox at {base} answered HTTP {response.status_code}: {message}")
