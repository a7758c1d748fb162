"""The deliverer: deliver."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from midpay.cli.boundary import document
from midpay.cli.common import JsonFlag, app, database_url, exit_for, seconds

if TYPE_CHECKING:
    from midpay.db.deliveries import Attempt, Delivery
    from midpay.outbox.deliver import Deliverer


@app.command(short_help="Send payment events to the shop's endpoints.")
def deliver(
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then exit.")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight at once.")
    ] = 8,
    retry_base: Annotated[
        float, seconds("--retry-base", "Seconds before the first retry; doubled for each next one (±20 %, at most "
                       "2 hours).", least=0.001, most=7200)
    ] = 5.0,
    give_up_after: Annotated[
        float, seconds("--give-up-after", "Seconds after the event when a delivery that keeps failing is failed "
                       "for good.", least=0)
    ] = 259_200.0,
    timeout: Annotated[
        float, seconds("--timeout", "Seconds to wait for an endpoint's answer.", least=0.001, most=3600)
    ] = 10.0,
    json_out: JsonFlag = False,
) -> None:
    """Send payment events to the shop's endpoints, signed the Standard Webhooks way, with retries.

    Each event goes as a POST to every enabled endpoint whose patterns match it, with the
    headers webhook-id (the event id, the same on every retry), webhook-timestamp and
    webhook-signature. A 2xx answer delivers; anything else, a timeout or a refused
    connection is retried after --retry-base × 2^(n−1) seconds until --give-up-after has
    passed since the event; then the delivery is failed. 410 Gone disables the endpoint.
    One order's events reach an endpoint in order. Without --once it runs until SIGTERM or
    Ctrl-C (finishing the requests in flight), woken by PostgreSQL's NOTIFY and polling once
    a second. Several processes can share the work.

    Exit 0: done (or stopped); 1: with --once, a delivery failed for good in this run;
    3: PostgreSQL could not be reached or was lost. With --json, one document:
    {"summary": {"delivered", "retrying", "failed"}}.

    Examples:

    \b
      midpay deliver
      midpay deliver --once --json
      midpay deliver --concurrency 16 --timeout 5
    """
    from midpay import output
    from midpay.outbox.deliver import Options
    from midpay.outbox.deliver import deliver as run_deliverer
    from midpay.output.deliver import deliver_document, deliver_line

    options = Options(once=once, concurrency=concurrency, retry_base=retry_base, give_up_after=give_up_after,
                      timeout=timeout)
    url = database_url()
    progress = _Progress(enabled=sys.stderr.isatty() and not json_out)
    with _stopped_by_signals() as signals:
        summary = run_deliverer(url, options, on_attempt=progress.attempt, started=signals.append)
    progress.close()
    if json_out:
        document(deliver_document(summary))
    elif once or progress.enabled:
        output.console().print(deliver_line(summary), markup=False)
    if once and signals.received:  # a --once run cut short did not send all that was due
        from midpay.errors import Interrupted

        raise Interrupted("interrupted: stopped before everything due was sent (the requests in flight were finished)")
    exit_for(once and summary.failed > 0)


class _Progress:
    """On a terminal, a running count on stderr; every delivery that failed for good, always, one line on stderr."""

    def __init__(self, *, enabled: bool) -> None:
        import threading

        self.lock = threading.Lock()  # workers report from their own threads
        self.enabled = enabled
        self.counts = {"delivered": 0, "retrying": 0, "failed": 0}

    def attempt(self, delivery: "Delivery", attempt: "Attempt", status: str | None) -> None:
        with self.lock:
            self._show(delivery, attempt, status)

    def _show(self, delivery: "Delivery", attempt: "Attempt", status: str | None) -> None:
        from midpay.output.deliver import attempt_line

        key = {"delivered": "delivered", "failed": "failed", "pending": "retrying"}.get(status or "")
        if key is not None:
            self.counts[key] += 1
        if status == "failed" or (self.enabled and status == "pending"):
            self._clear()
            sys.stderr.write(attempt_line(delivery, attempt, status) + "\n")
        if self.enabled:
            c = self.counts
            sys.stderr.write(f"\rdeliver: {c['delivered']} delivered, {c['retrying']} retrying, {c['failed']} failed")
        sys.stderr.flush()

    def _clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")

    def close(self) -> None:
        if self.enabled:
            self._clear()
            sys.stderr.flush()


class _Signals:
    """The deliverers that SIGTERM and SIGINT stop, and whether one came."""

    def __init__(self) -> None:
        self.deliverers: list[Deliverer] = []
        self.received = False

    def append(self, deliverer: "Deliverer") -> None:
        self.deliverers.append(deliverer)

    def handle(self, signum: int, frame: object) -> None:
        self.received = True
        for d in self.deliverers:
            d.stop()


@contextmanager
def _stopped_by_signals() -> Iterator[_Signals]:
    """SIGTERM and SIGINT stop the deliverer (it finishes the requests in flight) instead of killing it."""
    import signal
    import threading

    signals = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    previous = {s: signal.signal(s, signals.handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield signals
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
