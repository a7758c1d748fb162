"""Commands of one payment's life: charge, status, and the payments listing."""

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midpay.cli.boundary import describe, document
from midpay.cli.common import JsonFlag, LimitFlag, app, finite, open_connection, open_gateway
from midpay.errors import MidpayError, UsageError

if TYPE_CHECKING:
    from midpay.db import Connection
    from midpay.midtrans.gateway import Gateway


# --- charge ----------------------------------------------------------------------------


@app.command(short_help='Create a GoPay or QRIS charge and show its QR.')
def charge(
    amount: Annotated[
        str, typer.Option("--amount", help="Amount in whole rupiah (IDR), e.g. 25000.", show_default=False)
    ],
    order_id: Annotated[
        str | None,
        typer.Option("--order-id", help="Your order id (default: a generated unique one). The id of a charge "
                     "that never reached Midtrans resumes it."),
    ] = None,
    user_id: Annotated[
        int | None, typer.Option("--user-id", min=-(2**63), max=2**63 - 1, help="The paying user's id.")
    ] = None,
    qris: Annotated[bool, typer.Option("--qris", help="Charge QRIS (acquirer gopay) instead of GoPay.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Poll the status until the payment is final.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, max=8 * 86_400, callback=finite,
                     help="With --wait: give up after this many seconds (default: the QR's expiry, plus a minute)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a GoPay or QRIS charge; show its QR code, deeplink and expiry.

    Again with the same --order-id and --amount, a charge that never reached Midtrans
    (connection refused, wrong server key, answer lost) is resumed: Midtrans is asked
    first and the charge is sent only if it does not know the order, so an order is
    never charged twice.

    Examples:

    \b
      midpay charge --amount 25000
      midpay charge --amount 25000 --qris --order-id shop-1042 --wait
      midpay charge --amount 25000 --order-id shop-1042   # again: resumes a charge that never arrived
    """
    from midpay import output
    from midpay.payments import charge as charges
    from midpay.payments import operations

    whole = operations.parse_amount(amount)
    if timeout is not None and not wait:
        raise UsageError("--timeout only applies with --wait")
    gateway = open_gateway()
    conn = open_connection()
    with conn, gateway:
        outcome = charges.charge(conn, gateway, amount=whole, order_id=order_id, user_id=user_id, qris=qris)
        payment = outcome.payment
        con = output.console(sys.stderr if json_out else None)
        if outcome.note:
            sys.stderr.write(f"midpay: {output.visible(outcome.note)}\n")
        if not json_out:
            title = "Charge resumed" if outcome.resumed else "Charge created"
            output.render_payment(con, payment, title=title, show_qr=True)
        if wait:
            waited = _wait_final(conn, gateway, payment, con, timeout=timeout, quiet=json_out)
            payment = waited.payment
            if not json_out:
                output.render_payment(con, payment, title="Final status" if waited.final else "Status")
        if json_out:
            document(output.payment_document(payment))
        if wait and not waited.final:
            if waited.last_error is not None:
                raise waited.last_error
            raise MidpayError(
                f"order {payment.order_id} is still {payment.status} after waiting: "
                f"`midpay status {payment.order_id}` shows it later"
            )


def _wait_final(
    conn: "Connection", gateway: "Gateway", payment: Any, con: Any, *, timeout: float | None, quiet: bool
) -> Any:
    import time
    from datetime import UTC, datetime

    from midpay import output
    from midpay.output import join, text, visible
    from midpay.payments import refresh

    if timeout is None:  # the QR's own expiry (Midtrans' default is 15 minutes), and a minute to see it expire
        expiry = output.payment_expiry(payment)
        left = (expiry - datetime.now(UTC)).total_seconds() if expiry is not None else 15 * 60
        timeout = max(left, 0) + 60
    deadline = time.monotonic() + timeout
    order_id = payment.order_id
    status = con.status(join("waiting for ", text(order_id), " to be paid…"), spinner="dots") if not quiet else None

    def polled(current: Any) -> None:
        if status is not None:
            status.update(join("waiting for ", text(order_id), ": ", text(current.status), " (Ctrl-C stops waiting)"))

    def refused(error: Exception, poll: int) -> None:
        sys.stderr.write(f"midpay: status check {poll} of {visible(order_id)} failed, still waiting: "
                         f"{visible(describe(error)[0])}\n")

    if status is not None:
        status.start()
    try:
        return refresh.wait_final(conn, gateway, order_id, deadline=deadline, on_poll=polled, on_refusal=refused)
    finally:
        if status is not None:
            status.stop()


# --- status ----------------------------------------------------------------------------


@app.command(short_help='Show one payment, asking Midtrans if not final.')
def status(
    order_id: Annotated[str, typer.Argument(help="The order id.", show_default=False, metavar="ORDER_ID")],
    no_refresh: Annotated[bool, typer.Option("--no-refresh", help="Show the stored row; do not ask Midtrans.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Show one payment and its refunds, asking Midtrans first when it is not final.

    A payment is asked about while it is unsettled, partly refunded, or has a refund
    whose outcome (or bank confirmation) midpay has not seen yet.

    Examples:

    \b
      midpay status shop-1042
      midpay status shop-1042 --no-refresh --json
    """
    from midpay import output
    from midpay.payments import refresh
    from midpay.refunds import ledger as refund_ledger

    conn = open_connection()
    with conn:
        gateway = None
        if not no_refresh:
            from midpay.db import get_payment

            current = get_payment(conn, order_id)
            wanted = current is not None and refund_ledger.wants_refresh(conn, current)
            conn.commit()
            if wanted:
                gateway = open_gateway()
        try:
            outcome = refresh.refresh(conn, gateway, order_id)
        finally:
            if gateway is not None:
                gateway.close()
        ledger = refund_ledger.ledger(conn, outcome.payment)
        conn.commit()
        if json_out:
            document(output.payment_document(outcome.payment, ledger=ledger))
        else:
            output.render_payment(output.console(), outcome.payment, show_qr=False, ledger=ledger)
        if outcome.error is not None:
            raise outcome.error


@app.command("payments", short_help='List recent payments, newest first.')
def payments_list(
    status: Annotated[
        str | None, typer.Option("--status", help="Only payments in this state (pending, settlement, refund, …).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only payments created since 2026-11-26, 2026-11-26T10:00:00+07:00, or 30m, 2h, 7d ago "
            "(times without an offset are Jakarta time, WIB).",
        ),
    ] = None,
    limit: LimitFlag = 50,
    wide: Annotated[
        bool, typer.Option("--wide", help="Always a table, however narrow the terminal (lines may then wrap).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List recent payments, newest first, with what was refunded of each.

    Examples:

    \b
      midpay payments --since 2h
      midpay payments --status settlement --since 2026-12-01 --json
    """
    from midpay import output
    from midpay.payments import operations
    from midpay.refunds import ledger as refund_ledger

    wanted = operations.status_filter(status)
    moment = operations.parse_since(since) if since is not None else None
    conn = open_connection()
    with conn:
        rows = operations.list_payments(conn, status=wanted, since=moment, limit=limit)
        ledgers = {found.payment.id: found for found in refund_ledger.ledgers(conn, rows)}
    if json_out:
        document({"payments": [output.payment_document(p, ledger=ledgers[p.id]) for p in rows]})
    else:
        output.render_payments(output.console(), rows, wide=wide, ledgers=ledgers)
