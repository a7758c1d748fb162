"""The command line: parse, call one use case, render.

``boundary`` is the one error boundary (every failure becomes ``Error: …``, an exit
code and, with --json, the one document); ``common`` holds the app, settings and
connections; ``state`` what the top-level options leave. Each other module registers
its commands on import:

    setup          migrate, demo, sandbox serve|pay
    lifecycle      charge, status, payments
    notifications  replay-webhook, events, events reprocess
    listen         listen (the HTTP notification receiver)
    reconcile      reconcile
    operator       cancel, expire, refund
    database       db status|start|stop, doctor
    endpoints      endpoints add|list|remove|disable|enable|rotate-secret, deliveries, deliveries resend
"""

from typing import Any

from midpay.cli import database, deliver, endpoints, lifecycle, listen, notifications, operator, reconcile, setup
from midpay.cli.common import app

# `midpay --help` lists the commands in the order of a payment's life, then upkeep.
_ORDER = (
    "migrate", "charge", "status", "payments", "reconcile", "replay-webhook", "listen",
    "cancel", "expire", "refund", "endpoints", "deliver", "deliveries", "doctor", "demo",
)


def _place(command: Any) -> int:
    name = command.name or command.callback.__name__.replace("_", "-")
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


app.registered_commands.sort(key=_place)

__all__ = [
    "app", "database", "deliver", "endpoints", "lifecycle", "listen", "main", "notifications", "operator",
    "reconcile", "setup",
]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
