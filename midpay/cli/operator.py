"""Operator actions that change a payment at Midtrans: cancel, expire, refund."""

import sys
from typing import Annotated

import typer

from midpay.cli.common import JsonFlag, OrderIdArg, YesFlag, app, errors_to_exit, open_connection, open_gateway
from midpay.errors import UsageError


def _must_ask(action: str, yes: bool) -> bool:
    """Whether to ask before ``action``; without a terminal to ask on, --yes is required."""
    if yes:
        return False
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {action} without --yes (there is no terminal to confirm on)")
    return True


def _confirm(question: str) -> None:
    from midpay.output import visible

    if not typer.confirm(visible(question), default=False, err=True):
        sys.stderr.write("Aborted: nothing was changed.\n")
        raise typer.Exit(1)


def _end_payment(action: str, order_id: str, yes: bool, json_out: bool) -> None:
    from midpay import operations, output

    with errors_to_exit():
        ask = _must_ask(f"{action} order {order_id}", yes)
        conn = open_connection()
        with conn:
            if ask:
                current = operations.get_payment(conn, order_id)
                _confirm(
                    f"{action.capitalize()} order {order_id} ({output.rupiah(current.gross_amount)}, "
                    f"{current.status} here) at Midtrans?"
                )
            with open_gateway() as gateway:
                end = operations.cancel if action == "cancel" else operations.expire
                outcome = end(conn, gateway, order_id)
        if json_out:
            output.write_json(output.payment_document(outcome.payment))
        else:
            con = output.console()
            output.render_payment(con, outcome.payment, title={"cancel": "Cancelled", "expire": "Expired"}[action])
            if outcome.result.note:
                con.print(output.text(outcome.result.note))


@app.command("cancel")
def cancel_payment(order_id: OrderIdArg, yes: YesFlag = False, json_out: JsonFlag = False) -> None:
    """Cancel a pending payment at Midtrans and record the answer (asks first)."""
    _end_payment("cancel", order_id, yes, json_out)


@app.command("expire")
def expire_payment(order_id: OrderIdArg, yes: YesFlag = False, json_out: JsonFlag = False) -> None:
    """Expire a pending payment at Midtrans now and record the answer (asks first)."""
    _end_payment("expire", order_id, yes, json_out)


@app.command("refund")
def refund_payment(
    order_id: OrderIdArg,
    amount: Annotated[
        int | None, typer.Option("--amount", help="Whole rupiah to refund (default: all that is left).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Shown in the customer's GoPay history (at most 255 characters).")
    ] = None,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Refund a settled payment, fully or partly, through Midtrans (asks first).

    The refund is recorded with its own refund_key before Midtrans is asked. When no
    answer comes back (exit 3), run the same command again: the same refund_key is sent,
    and Midtrans pays a refund_key out only once.
    """
    from midpay import output, refunds

    with errors_to_exit():
        ask = _must_ask(f"refund order {order_id}", yes)
        conn = open_connection()
        with conn:
            if ask:
                plan = refunds.plan_refund(conn, order_id, amount)
                _confirm(
                    f"Refund {output.rupiah(plan.amount)} of order {order_id} "
                    f"(paid {output.rupiah(plan.payment.gross_amount)}, {output.rupiah(plan.remainder)} left)?"
                )
                amount = plan.amount  # exactly what was confirmed
            with open_gateway() as gateway:
                outcome = refunds.refund(conn, gateway, order_id, amount=amount, reason=reason)
        if json_out:
            output.write_json(
                {"refund": output.refund_document(outcome.refund), "payment": output.payment_document(outcome.payment)}
            )
        else:
            output.render_refund(output.console(), outcome.refund, outcome.payment, retried=outcome.retried)


