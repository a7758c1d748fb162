"""PostgreSQL access, one module per table or concern; the names most callers need are here.

    core      the URL, connections, the pool, psycopg errors mapped to midpay's
    payments  payment_transactions rows
    claims    which open rows are due for a check; claiming them for reconcile
    events    payment_webhook_events rows (every notification body received)
    refunds   payment_refunds rows
"""

from midpay.db.claims import claim_due, count_due, iter_due, select_due
from midpay.db.core import (
    CONNECT_TIMEOUT,
    Connection,
    connect,
    database_now,
    first_line,
    map_error,
    open_pool,
    serving_pool,
    translate_errors,
)
from midpay.db.events import (
    WebhookEvent,
    list_events,
    select_unprocessed_event_ids,
)
from midpay.db.payments import (
    PAYMENT_COLUMNS,
    Payment,
    PaymentWrite,
    get_payment,
    insert_payment,
    list_payments,
    lock_orders,
    read_payments,
    whole_amount,
    write_payments,
)
from midpay.db.refunds import (
    LedgerSync,
    Refund,
    RefundReport,
    ReportedRefund,
    finish_refund,
    insert_refund,
    list_refunds,
    refunds_of,
    sync_ledger,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "PAYMENT_COLUMNS",
    "Connection",
    "LedgerSync",
    "Payment",
    "PaymentWrite",
    "Refund",
    "RefundReport",
    "ReportedRefund",
    "WebhookEvent",
    "claim_due",
    "connect",
    "count_due",
    "database_now",
    "finish_refund",
    "first_line",
    "get_payment",
    "insert_payment",
    "insert_refund",
    "iter_due",
    "list_events",
    "list_payments",
    "list_refunds",
    "lock_orders",
    "map_error",
    "open_pool",
    "read_payments",
    "refunds_of",
    "select_due",
    "select_unprocessed_event_ids",
    "serving_pool",
    "sync_ledger",
    "translate_errors",
    "whole_amount",
    "write_payments",
]
