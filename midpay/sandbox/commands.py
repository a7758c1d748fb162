"""The command-line faces of the sandbox: ``midpay sandbox serve`` and ``midpay sandbox pay``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from midpay.errors import (
    GatewayProtocolError,
    GatewayUnavailable,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    UsageError,
)

from .reqlog import LineWriter
from .server import SandboxServer
from .shapes import DEV_SERVER_KEY, cannot_modify
from .state import PAY_STATUSES


def serve(
    *,
    quiet: bool = False,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM (``midpay sandbox serve``).

    ``options`` are SandboxServer's keyword arguments. Every line (the banner, then one
    per request unless ``quiet``) is written and flushed at once, so ``serve > log &``
    can be followed while it runs.
    """
    writer = LineWriter()
    say = announce or writer
    notify_url = options.get("notify_url")
    notify_dir = options.get("notify_dir")
    try:
        sandbox = SandboxServer(request_log=None if quiet else say, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    sandbox.start()
    done = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        say(f"midpay sandbox listening on {sandbox.url} (Ctrl-C to stop)")
        if sandbox.using_dev_key:
            say(f"using the development server key {DEV_SERVER_KEY}")
        else:
            say("using the server key from MIDTRANS_SERVER_KEY")
        say(f"point midpay at it with MIDTRANS_API_URL={sandbox.url}")
        if notify_url:
            say(f"notifications are POSTed to {_without_password(str(notify_url))}")
        if notify_dir:
            say(f"notifications are written to {notify_dir}")
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        sandbox.stop()
        say("sandbox stopped")


def pay_remote(
    *,
    api_url: str,
    order_id: str,
    status: str,
    payment_type: str | None = None,
    fraud_status: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Ask a running sandbox to move ``order_id`` (``midpay sandbox pay``); returns the notification."""
    import requests

    if status not in PAY_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
    base = api_url.rstrip("/")
    url = f"{base}/_sandbox/pay/{quote(order_id, safe='')}"
    try:
        request: dict[str, str] = {"status": status}
        if payment_type is not None:
            request["payment_type"] = payment_type
        if fraud_status is not None:
            request["fraud_status"] = fraud_status
        response = requests.post(url, json=request, timeout=(timeout, timeout))
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


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
