"""A local Midtrans-compatible Core API for development, tests, demos and benchmarks.

The Core API (HTTP Basic auth with the server key, like Midtrans)::

    POST /v2/charge                          gopay, or qris with acquirer gopay
    GET  /v2/{order|txn id}/status           201 pending, 200 settlement/capture/cancel/refund,
                                             202 deny, 407 expire, 404 unknown
    POST /v2/{id}/cancel | /expire           412 unless pending
    POST /v2/{id}/refund                     {refund_key, amount, reason}; 412, 414, replay
    POST /v2/{id}/refund/online/direct       the same, "approved by the bank"
    GET  /v2/gopay|qris/{txn id}/qr-code     a PNG of the QR (no auth, like Midtrans)

Shapes follow Midtrans' published samples: errors come back as HTTP 200 with the error
in the body's ``status_code`` (404, 406, 412, 414, ...), except 401 (HTTP 401) and the
injected faults; a charge is HTTP 200 with body ``"201"``. ``Idempotency-Key`` (up to 46
characters) replays the saved successful answer for 300 s. A pending order past its
expiry turns ``expire`` the next time anything looks at it. Every state change emits a
signed notification, written to ``notify_dir`` and POSTed to ``notify_url`` with
Midtrans' retries (``notify``); a charge's ``X-Override-Notification`` /
``X-Append-Notification`` (up to 3 URLs) are honoured.

The Python API (``SandboxServer``, in-process; see each method)::

    SandboxServer(host, port, server_key, latency_ms, fail_rate, stall_rate, malformed_rate,
                  rate_limit_rate, stall_seconds, seed, expiry_seconds, notify_url, notify_dir,
                  notify_retry_scale=1.0, notify_timeout=15.0, auto_confirm_refunds=True,
                  request_log=None)                              start(), stop(), with-block, url
    pay(order_id, status="settlement", *, payment_type=None, fraud_status=None) -> notification
    refund_outside(order_id, amount=None, reason=None) -> refunds[] item (source "outside")
    confirm_refunds(order_id, refund_chargeback_id=None) -> notifications; auto_confirm_refunds
    paid_out(order_id) -> int;  refund_requests(order_id=None) -> [request records]
    tamper(order_id, fields=None, *, remove=(), replace=False, echo_authorization=False,
           http_status=None, resign=True, times=None, endpoints=None) -> rule
    fault_order(order_id, fault, *, times=None, endpoints=None, seconds=None) -> rule
    clear_rules(order_id=None);  list_rules()
    seed_orders(count=None, *, order_ids=None, prefix="seed-", amount=10000,
                payment_type="gopay", settle_fraction=0.0) -> rows
    deliveries();  wait_for_deliveries(timeout=10.0) -> bool
    stats(), reset_stats(), set_faults(...), get_order(id), orders()

The control endpoints (no auth, never faulted; JSON bodies carry the method's keyword
arguments; errors are ``{"sandbox_error"}`` with 400, 404 or 409)::

    POST   /_sandbox/pay/{order_id}              {status, payment_type, fraud_status}
    POST   /_sandbox/refund-outside/{order_id}   {amount, reason} -> {refund}
    POST   /_sandbox/confirm-refunds/{order_id}  {refund_chargeback_id} -> {notifications}
    GET    /_sandbox/refunds                     -> {requests}
    GET    /_sandbox/refunds/{order_id}          -> {order_id, paid_out, refunds, requests}
    POST   /_sandbox/settings                    {auto_confirm_refunds}
    POST   /_sandbox/tamper/{order_id}           {fields, remove, replace, echo_authorization,
                                                  http_status, resign, times, endpoints}
    POST   /_sandbox/fault/{order_id}            {fault, times, endpoints, seconds}
    GET    /_sandbox/rules;  DELETE /_sandbox/rules[/{order_id}]
    POST   /_sandbox/seed                        {count | order_ids, prefix, amount,
                                                  payment_type, settle_fraction} -> {orders}
    GET    /_sandbox/deliveries;  POST /_sandbox/wait-deliveries {timeout} -> {idle}
    GET    /_sandbox/stats;  POST /_sandbox/reset;  POST /_sandbox/faults {rates, latency_ms, seed}
    GET    /_sandbox/orders[/{id}];  GET /_sandbox/health

Modules: ``shapes`` (codes, messages, QRIS payload), ``state`` (transactions, their
moves and notification bodies), ``api`` (the /v2 endpoints), ``refunds`` (refunds and
the payout record), ``tamper`` (per-order tampering and faults), ``faults`` (random
faults and latency), ``notify`` (writing and delivering notifications), ``stats``,
``wire`` (HTTP/1.1 on sockets), ``http`` (routing, auth, faults), ``control`` (the
/_sandbox endpoints' HTTP half: JSON in and out, errors to 400/404/409), ``reqlog``
(``serve``'s request log), ``server`` (SandboxServer, composing them; its
``control_routes`` say which /_sandbox endpoint calls which method), ``commands``
(``serve`` and ``pay_remote`` for the CLI). Nothing below ``server`` imports it.
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
