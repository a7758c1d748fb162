"""A local Midtrans-compatible Core API for development, tests, demos and benchmarks.

    POST /v2/charge                 gopay, or qris with acquirer gopay
    GET  /v2/{order|txn id}/status  status_code 201 pending, 200 settlement/cancel/refund,
                                    202 deny, 407 expire, 404 unknown
    POST /v2/{id}/cancel|expire|refund
    GET  /v2/gopay|qris/{txn id}/qr-code   a PNG of the QR (no auth, like Midtrans)

Shapes follow Midtrans' published samples: errors come back as HTTP 200 with the error
in the body's ``status_code`` (404, 406, 412, 414, ...), except 401 (HTTP 401) and the
injected faults; a charge is HTTP 200 with body ``"201"``. ``Idempotency-Key`` (up to 46
characters) replays the saved successful answer for 300 s. A pending order past its
expiry turns ``expire`` the next time anything looks at it.

Every state change (``pay()``, cancel, expire, refund, lazy expiry) emits a signed
notification: POSTed to ``notify_url`` and written to ``notify_dir``, as Midtrans would.

Faults (see ``faults``): ``fail_rate`` (HTTP 500/503 before anything happens),
``rate_limit_rate`` (429), ``stall_rate`` (wait ``stall_seconds``, then process),
``malformed_rate`` (process, then answer garbage), ``latency_ms``; drawn from
``random.Random(seed)``.

Control endpoints for other processes (no auth): ``POST /_sandbox/pay/{order_id}``
``{"status": "settlement"}``, ``GET /_sandbox/stats``, ``POST /_sandbox/reset``,
``POST /_sandbox/faults``, ``GET /_sandbox/orders[/{id}]``, ``GET /_sandbox/health``.

Modules: ``shapes`` (codes, messages, QRIS payload), ``state`` (transactions and their
moves, notification bodies), ``api`` (the /v2 endpoints), ``faults``, ``notify``
(writing and POSTing notifications), ``http`` (server, routing, auth), ``control``
(the /_sandbox endpoints), ``server`` (SandboxServer, composing them), ``commands``
(``serve`` and ``pay_remote`` for the CLI).
"""

from __future__ import annotations

from .commands import pay_remote, serve
from .server import SandboxServer
from .shapes import ANSWER_CODES, DEV_SERVER_KEY, MERCHANT_ID, NOTIFICATION_CODES, qris_payload, safe_file_stem
from .state import PAY_STATUSES

__all__ = [
    "ANSWER_CODES",
    "DEV_SERVER_KEY",
    "MERCHANT_ID",
    "NOTIFICATION_CODES",
    "PAY_STATUSES",
    "SandboxServer",
    "pay_remote",
    "qris_payload",
    "safe_file_stem",
    "serve",
]
