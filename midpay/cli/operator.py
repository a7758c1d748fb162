"""Operator actions that change a payment at Midtrans: cancel, expire, refund."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from midpay.cli.boundary import document, stop
from midpay.cli.common import JsonFlag, OrderIdArg, YesFlag, app, open_connection, open_gateway
from midpay.errors import UsageError

if TYPE_CHECKING:
    from midpay.refunds.command import RefundPlan


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
        stop(1, "aborted: nothing was changed")


def _end_payment(action: str, order_id: str, yes: bool, json_out: bool) -> None:
    from midpay import output
    from midpay.payments import operations

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
        document(output.payment_document(outcome.payment))
    else:
        con = output.console()
        output.render_payment(con, outcome.payment, title={"cancel": "Cancelled", "expire": "Expired"}[action])
        if outcome.result.note:
            con.print(output.text(outcome.result.note))


@app.command("cancel", short_help='Cancel a pending payment at Midtrans.')
def cancel_payment(order_id: OrderIdArg, yes: YesFlag = False, json_out: JsonFlag = False) -> None:
    """Cancel a pending payment at Midtrans and record the answer (asks first).

    Examples:

    \b
      midpay cancel shop-1042
      midpay cancel shop-1042 --yes --json
    """
    _end_payment("cancel", order_id, yes, json_out)


@app.command("expire", short_help='Expire a pending payment at Midtrans now.')
def expire_payment(order_id: OrderIdArg, yes: YesFlag = False, json_out: JsonFlag = False) -> None:
    """Expire a pending payment at Midtrans now and record the answer (asks first).

    Examples:

    \b
      midpay expire shop-1042 --yes
    """
    _end_payment("expire", order_id, yes, json_out)


@app.command("refund", short_help='Refund a settled payment, fully or partly.')
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

    Midtrans' own figures decide what is left to refund, so refunds made elsewhere
    (the Midtrans dashboard) count. The refund is recorded with its own refund_key
    before Midtrans is asked. Whatever interrupts it (no answer, exit 3, a killed
    process), run the same command again: it finishes that refund (the same
    refund_key is sent, and Midtrans pays a refund_key out once) or reports it done.
    The same amount and reason again within 24 hours is taken as that rerun.

    Examples:

    \b
      midpay refund shop-1042
      midpay refund shop-1042 --amount 20000 --reason "damaged box" --yes
    """
    from midpay import output
    from midpay.refunds import command as refunds

    ask = _must_ask(f"refund order {order_id}", yes)
    conn = open_connection()
    with conn, open_gateway() as gateway:
        if ask:
            plan = refunds.plan_refund(conn, gateway, order_id, amount, reason)
            if plan.already is None:
                _confirm(_question(plan))
                amount = plan.amount  # exactly what was confirmed
        outcome = refunds.refund(conn, gateway, order_id, amount=amount, reason=reason)
    if json_out:
        document(output.refund_document(outcome))
    else:
        output.render_refund(output.console(), outcome)


def _question(plan: "RefundPlan") -> str:
    from midpay.output import rupiah

    order_id = plan.payment.order_id
    if plan.retry is not None:
        return (
            f"Send again refund {plan.retry.refund_key} of {rupiah(plan.amount)} of order {order_id} "
            "(its outcome is unknown; Midtrans pays a refund_key once)?"
        )
    return (
        f"Refund {rupiah(plan.amount)} of order {order_id} (paid {rupiah(plan.payment.gross_amount)}, "
        f"refunded {rupiah(plan.ledger.refunded)}, {rupiah(plan.ledger.refundable)} left)?"
    )
