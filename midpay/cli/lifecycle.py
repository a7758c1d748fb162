"""Commands of one payment's life: charge, status, and the payments listing."""

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midpay.cli.common import (
    JsonFlag,
    LimitFlag,
    app,
    errors_to_exit,
    fail,
    open_connection,
    open_gateway,
)
from midpay.errors import DependencyError

if TYPE_CHECKING:
    from midpay.db import Connection
    from midpay.gateway import Gateway


# --- charge ----------------------------------------------------------------------------


@app.command()
def charge(
    amount: Annotated[
        str, typer.Option("--amount", help="Amount in whole rupiah (IDR), e.g. 25000.", show_default=False)
    ],
    order_id: Annotated[
        str | None, typer.Option("--order-id", help="Your order id (default: a generated unique one).")
    ] = None,
    user_id: Annotated[int | None, typer.Option("--user-id", help="The paying user's id.")] = None,
    qris: Annotated[bool, typer.Option("--qris", help="Charge QRIS (acquirer gopay) instead of GoPay.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Poll the status until the payment is final.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create a GoPay or QRIS charge; show its QR code, deeplink and expiry."""
    from midpay import charges, operations, output

    with errors_to_exit():
        whole = operations.parse_amount(amount)
        conn = open_connection()
        gateway = open_gateway()
        with conn, gateway:
            outcome = charges.charge(conn, gateway, amount=whole, order_id=order_id, user_id=user_id, qris=qris)
            payment = outcome.payment
            con = output.console(sys.stderr if json_out else None)
            if not json_out:
                output.render_payment(con, payment, title="Charge created", show_qr=True)
            if wait:
                payment = _wait_final(conn, gateway, payment.order_id, con, quiet=json_out)
                if not json_out:
                    output.render_payment(con, payment, title="Final status")
            if json_out:
                output.write_json(output.payment_document(payment))


def _wait_final(conn: "Connection", gateway: "Gateway", order_id: str, con: Any, *, quiet: bool) -> Any:
    import time

    from midpay import refresh, states

    interval = 2.0
    from midpay.output import join, text

    waiting = join("waiting for ", text(order_id), " to be paid…")
    status = con.status(waiting, spinner="dots") if not quiet else None
    if status is not None:
        status.start()
    try:
        while True:
            outcome = refresh.refresh(conn, gateway, order_id)
            if outcome.error is not None and isinstance(outcome.error, DependencyError):
                raise outcome.error
            if outcome.payment.status not in states.UNSETTLED_STATES:
                return outcome.payment
            if status is not None:
                status.update(
                    join("waiting for ", text(order_id), ": ", text(outcome.payment.status), " (Ctrl-C stops waiting)")
                )
            time.sleep(interval)
    finally:
        if status is not None:
            status.stop()


# --- status ----------------------------------------------------------------------------


@app.command()
def status(
    order_id: Annotated[str, typer.Argument(help="The order id.", show_default=False)],
    no_refresh: Annotated[bool, typer.Option("--no-refresh", help="Show the stored row; do not ask Midtrans.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Show one payment and its refunds, asking Midtrans first when it is not final.

    A payment is asked about while it is unsettled, partly refunded, or has a refund
    whose outcome (or bank confirmation) midpay has not seen yet.
    """
    from midpay import ledger as refund_ledger
    from midpay import output, refresh

    with errors_to_exit():
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
                output.write_json(output.payment_document(outcome.payment, ledger=ledger))
            else:
                output.render_payment(output.console(), outcome.payment, show_qr=False, ledger=ledger)
            if outcome.error is not None:
                fail(outcome.error)




@app.command("payments")
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
    """List recent payments, newest first, with what was refunded of each."""
    from midpay import ledger as refund_ledger
    from midpay import operations, output

    with errors_to_exit():
        wanted = operations.status_filter(status)
        moment = operations.parse_since(since) if since is not None else None
        conn = open_connection()
        with conn:
            rows = operations.list_payments(conn, status=wanted, since=moment, limit=limit)
            ledgers = {found.payment.id: found for found in refund_ledger.ledgers(conn, rows)}
        if json_out:
            output.write_json({"payments": [output.payment_document(p, ledger=ledgers[p.id]) for p in rows]})
        else:
            output.render_payments(output.console(), rows, wide=wide, ledgers=ledgers)

