"""The command line: parse, call one use case, render.

This is the one place where a midpay error becomes ``Error: …`` on stderr and an
exit code (CONTRACT.md). Heavy modules (psycopg, requests, rich) are imported inside
the commands, so ``midpay --help`` stays fast. No ``from __future__ import annotations``
here: Typer would have to evaluate every option's annotation string at start-up.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from midpay import __version__
from midpay.errors import DependencyError, MidpayError, UsageError

if TYPE_CHECKING:
    from midpay.config import Settings
    from midpay.db import Connection
    from midpay.gateway import Gateway

T = TypeVar("T")

app = typer.Typer(
    name="midpay",
    help="GoPay and QRIS payment operations over Midtrans and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sandbox_app = typer.Typer(
    help="A local Midtrans-compatible Core API for development, tests and demos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(sandbox_app, name="sandbox")


@dataclass
class State:
    """What the top-level options leave for the commands."""

    env_file: Path | None = None
    settings: "Settings | None" = None


_state = State()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"midpay {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Read configuration from this file instead of ./.env.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """GoPay and QRIS payment operations over Midtrans and PostgreSQL."""
    _state.env_file = env_file
    _state.settings = None


# --- the one error boundary ------------------------------------------------------------


def _secrets() -> list[str]:
    return _state.settings.secrets() if _state.settings is not None else []


def fail(exc: MidpayError) -> NoReturn:
    """Print ``Error: …`` (secrets redacted) and exit with the error's code."""
    from midpay.config import redact

    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__, _secrets())
    sys.stderr.write(f"Error: {message}\n")
    raise typer.Exit(exc.exit_code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn any failure inside a command into one line on stderr and the contract's exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except MidpayError as exc:
        fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback, no secret
        mapped = _map_foreign(exc)
        if mapped is not None:
            fail(mapped)
        fail(MidpayError(f"unexpected {exc.__class__.__name__}: {exc}"))


def _map_foreign(exc: BaseException) -> MidpayError | None:
    if "psycopg" in sys.modules or "psycopg_pool" in sys.modules:
        from midpay.db import map_error

        return map_error(exc)
    return None


def settings() -> "Settings":
    """Settings, resolved once per process."""
    if _state.settings is None:
        from midpay.config import load_settings

        _state.settings = load_settings(_state.env_file)
    return _state.settings


def _announce(line: str) -> None:
    sys.stderr.write(line + "\n")


def database_url() -> str:
    from midpay.db import resolve_url

    return resolve_url(settings(), announce=_announce)


def open_connection() -> "Connection":
    from midpay.db import connect

    return connect(database_url())


def open_gateway(pool_size: int = 4) -> "Gateway":
    from midpay.gateway import Gateway

    s = settings()
    return Gateway(base_url=s.api_url, server_key=s.require_server_key(), timeout=s.timeout, pool_size=pool_size)


def _exit_for(failed: bool) -> None:
    if failed:
        raise typer.Exit(1)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


# --- migrate ---------------------------------------------------------------------------


@app.command()
def migrate(
    status: Annotated[bool, typer.Option("--status", help="List applied and pending files; change nothing.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be applied; change nothing.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Apply the pending SQL migrations of sql/, in order, each in one transaction."""
    from midpay import migrate as migrations
    from midpay import output

    with errors_to_exit():
        conn = open_connection()
        with conn:
            if status:
                st = migrations.status(conn)
                if json_out:
                    output.write_json(output.migration_document(st))
                else:
                    output.render_migration_status(output.console(), st)
                return
            con = output.console(sys.stderr if json_out else None)
            on_apply = None if json_out else (lambda f: con.print(f"applying {f.name}"))
            done = migrations.migrate(conn, dry_run=dry_run, on_apply=None if dry_run else on_apply)
            if json_out:
                key = "pending" if dry_run else "applied"
                output.write_json({key: [{"version": f.version, "name": f.name, "checksum": f.checksum} for f in done]})
            elif dry_run:
                con.print(
                    "would apply: " + ", ".join(f.name for f in done) if done else "nothing to apply: up to date"
                )
            else:
                con.print(f"applied {len(done)} migration(s)" if done else "nothing to apply: up to date")


# --- charge ----------------------------------------------------------------------------


@app.command()
def charge(
    amount: Annotated[int, typer.Option("--amount", help="Amount in whole rupiah (IDR).", show_default=False)],
    order_id: Annotated[
        str | None, typer.Option("--order-id", help="Your order id (default: a generated unique one).")
    ] = None,
    user_id: Annotated[int | None, typer.Option("--user-id", help="The paying user's id.")] = None,
    qris: Annotated[bool, typer.Option("--qris", help="Charge QRIS (acquirer gopay) instead of GoPay.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Poll the status until the payment is final.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create a GoPay or QRIS charge; show its QR code, deeplink and expiry."""
    from midpay import output, payments

    with errors_to_exit():
        conn = open_connection()
        gateway = open_gateway()
        with conn, gateway:
            outcome = payments.charge(conn, gateway, amount=amount, order_id=order_id, user_id=user_id, qris=qris)
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

    from midpay import payments, states

    interval = 2.0
    status = con.status(f"waiting for {order_id} to be paid…", spinner="dots") if not quiet else None
    if status is not None:
        status.start()
    try:
        while True:
            outcome = payments.refresh(conn, gateway, order_id)
            if outcome.error is not None and isinstance(outcome.error, DependencyError):
                raise outcome.error
            if outcome.payment.status not in states.UNSETTLED_STATES:
                return outcome.payment
            if status is not None:
                status.update(f"waiting for {order_id}: {outcome.payment.status} (Ctrl-C stops waiting)")
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
    """Show one payment, asking Midtrans first when it is not final."""
    from midpay import output, payments, states

    with errors_to_exit():
        conn = open_connection()
        with conn:
            gateway = None
            if not no_refresh:
                from midpay.db import get_payment

                current = get_payment(conn, order_id)
                conn.commit()
                if current is not None and current.status in states.UNSETTLED_STATES:
                    gateway = open_gateway()
            try:
                outcome = payments.refresh(conn, gateway, order_id)
            finally:
                if gateway is not None:
                    gateway.close()
            if json_out:
                output.write_json(output.payment_document(outcome.payment))
            else:
                output.render_payment(output.console(), outcome.payment, show_qr=False)
            if outcome.error is not None:
                fail(outcome.error)


# --- replay-webhook --------------------------------------------------------------------


@app.command("replay-webhook")
def replay_webhook(
    paths: Annotated[
        list[str],
        typer.Argument(help="Files, directories (their *.json), .jsonl files, or - for stdin.", show_default=False),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Verify and report; write nothing.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Push saved notification bodies through the same check and update a live one gets."""
    from midpay import output, payments

    with errors_to_exit():
        server_key = settings().require_server_key()
        bodies = list(payments.iter_bodies(paths, sys.stdin.read))
        conn = open_connection()
        results = []
        with conn:
            for body in bodies:
                results.append(payments.process_notification(conn, body, server_key, dry_run=dry_run))
        if json_out:
            output.write_json(output.notification_document(results), compact=len(results) > 100)
        else:
            output.render_notifications(output.console(), results, dry_run=dry_run)
        _exit_for(any(r.outcome == "rejected" for r in results))


# --- reconcile -------------------------------------------------------------------------


@app.command()
def reconcile(
    min_age: Annotated[
        float, typer.Option("--min-age", min=0, help="Only rows created more than this many seconds ago.")
    ] = 60.0,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Check at most this many rows.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=128, help="Parallel status calls.")] = 8,
    max_rps: Annotated[
        float | None, typer.Option("--max-rps", min=0.01, help="Ceiling on status calls per second.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Ask Midtrans and report; write nothing.")] = False,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0, help="Seconds before a `created` row unknown to Midtrans becomes failure."),
    ] = 600.0,
    recheck_after: Annotated[
        float,
        typer.Option(
            "--recheck-after", min=0, help="Skip rows checked less than this many seconds ago (by any run)."
        ),
    ] = 30.0,
    json_out: JsonFlag = False,
) -> None:
    """Bring every open payment in line with Midtrans (the cron job)."""
    from midpay import output, payments

    with errors_to_exit():
        url = database_url()
        gateway = open_gateway(pool_size=concurrency)
        with gateway:
            notable: list[payments.ReconcileResult] = []
            interactive = sys.stdout.isatty() and not json_out
            stream = _JsonResultStream() if json_out else None
            progress = None
            task = None
            if interactive:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                from midpay.db import connect

                with connect(url) as conn:
                    total = payments.count_due(conn, min_age=min_age, limit=limit, recheck_after=recheck_after)
                progress = Progress(
                    TextColumn("reconcile"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=output.console(),
                )
                task = progress.add_task("reconcile", total=total)
                progress.start()

            def on_result(result: payments.ReconcileResult) -> None:
                if stream is not None:
                    stream.add(output.reconcile_result(result))
                elif result.error is not None or result.changed:
                    notable.append(result)
                if progress is not None and task is not None:
                    progress.advance(task)

            try:
                summary = payments.reconcile(
                    url, gateway, min_age=min_age, limit=limit, concurrency=concurrency, max_rps=max_rps,
                    dry_run=dry_run, grace=grace, recheck_after=recheck_after, on_result=on_result,
                )
            finally:
                if progress is not None:
                    progress.stop()
            if stream is not None:
                stream.close(output.reconcile_summary(summary))
            else:
                output.render_reconcile(output.console(), notable, summary, dry_run=dry_run)
            if summary.fatal is not None:
                fail(summary.fatal)
            _exit_for(summary.errors > 0)


class _JsonResultStream:
    """Writes ``{"results": [...], "summary": {...}}`` as results arrive: memory stays flat."""

    def __init__(self) -> None:
        self._first = True
        sys.stdout.write('{"results": [')

    def add(self, item: dict[str, Any]) -> None:
        import json

        sys.stdout.write(("\n  " if self._first else ",\n  ") + json.dumps(item, ensure_ascii=False))
        self._first = False

    def close(self, summary: dict[str, int]) -> None:
        import json

        sys.stdout.write(("" if self._first else "\n") + '], "summary": ' + json.dumps(summary) + "}\n")
        sys.stdout.flush()


# --- sandbox ---------------------------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8765,
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, help="Added to every API answer.")] = 0,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0.0, max=1.0, help="Share of API calls answered with a 5xx.")
    ] = 0.0,
    notify_url: Annotated[str | None, typer.Option("--notify-url", help="POST notifications here.")] = None,
    notify_dir: Annotated[Path | None, typer.Option("--notify-dir", help="Write notifications here.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Make injected faults reproducible.")] = None,
    stall_rate: Annotated[
        float, typer.Option("--stall-rate", min=0.0, max=1.0, help="Share of API calls that never answer in time.")
    ] = 0.0,
    malformed_rate: Annotated[
        float, typer.Option("--malformed-rate", min=0.0, max=1.0, help="Share of API calls answered with garbage.")
    ] = 0.0,
    expiry_seconds: Annotated[int, typer.Option("--expiry-seconds", min=1, help="Default charge expiry.")] = 900,
) -> None:
    """Run a local Midtrans-compatible Core API until interrupted."""
    from midpay import sandbox

    with errors_to_exit():
        s = settings()
        sandbox.serve(
            host=host, port=port, server_key=s.server_key, latency_ms=latency_ms, fail_rate=fail_rate,
            notify_url=notify_url, notify_dir=notify_dir, seed=seed, stall_rate=stall_rate,
            malformed_rate=malformed_rate, expiry_seconds=expiry_seconds,
        )


@sandbox_app.command("pay")
def sandbox_pay(
    order_id: Annotated[str, typer.Argument(help="The order to move.", show_default=False)],
    status: Annotated[
        str, typer.Option("--status", help="settlement, expire, cancel or deny.")
    ] = "settlement",
) -> None:
    """Move a sandbox order as a paying customer would; print the signed notification."""
    from midpay import output, sandbox

    with errors_to_exit():
        if status not in ("settlement", "expire", "cancel", "deny"):
            raise UsageError(f"--status must be settlement, expire, cancel or deny, not {status!r}")
        s = settings()
        body = sandbox.pay_remote(api_url=s.api_url, order_id=order_id, status=status, timeout=s.timeout)
        output.write_json(body)


# --- demo ------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Walk one payment end to end on an embedded PostgreSQL and a local sandbox; no setup needed."""
    from midpay import demo as demo_mod
    from midpay import output

    with errors_to_exit():
        from midpay.config import load_settings

        # The demo needs no configuration: it ignores DATABASE_URL and Midtrans settings.
        _state.settings = load_settings(_state.env_file)
        con = output.console()
        counter = iter(range(1, 100))

        def step(text: str) -> None:
            con.print(f"\n[bold cyan]{next(counter)}.[/] [bold]{text}[/]")

        report = demo_mod.run(_state.settings, con, step)
        demo_mod.render_account(con, report)
        _exit_for(report.final_status != "settlement")


# --- operator views and actions --------------------------------------------------------

events_app = typer.Typer(  # its help is the docstring of events_list
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(events_app, name="events")

LimitFlag = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")]
OrderIdArg = Annotated[str, typer.Argument(help="The order id.", show_default=False)]
YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not on a terminal).")
]


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
            "(times without an offset are local time).",
        ),
    ] = None,
    limit: LimitFlag = 50,
    json_out: JsonFlag = False,
) -> None:
    """List recent payments, newest first."""
    from midpay import operations, output

    with errors_to_exit():
        wanted = operations.status_filter(status)
        moment = operations.parse_since(since) if since is not None else None
        conn = open_connection()
        with conn:
            rows = operations.list_payments(conn, status=wanted, since=moment, limit=limit)
        if json_out:
            output.write_json({"payments": [output.payment_document(p) for p in rows]})
        else:
            output.render_payments(output.console(), rows)


@events_app.callback(invoke_without_command=True)
def events_list(
    ctx: typer.Context,
    order_id: Annotated[str | None, typer.Option("--order-id", help="Only notifications of this order.")] = None,
    rejected: Annotated[
        bool, typer.Option("--rejected", help="Only those not processed (rejected, or never decided).")
    ] = False,
    limit: LimitFlag = 50,
    json_out: JsonFlag = False,
) -> None:
    """List stored notifications, newest first, with their verification and outcome.

    `midpay events reprocess` runs the ones that were not applied through the checks again.
    """
    from midpay import operations, output

    with errors_to_exit():
        if ctx.invoked_subcommand is not None:
            if order_id is not None or rejected or json_out or limit != 50:
                raise UsageError(
                    f"give the options after the subcommand, e.g. `midpay events {ctx.invoked_subcommand} --rejected`"
                )
            return
        conn = open_connection()
        with conn:
            rows = operations.list_events(conn, order_id=order_id, rejected_only=rejected, limit=limit)
        if json_out:
            output.write_json({"events": [output.event_document(e) for e in rows]})
        else:
            output.render_events(output.console(), rows)


@events_app.command("reprocess")
def events_reprocess(
    rejected: Annotated[
        bool, typer.Option("--rejected", help="Only those recorded as rejected (not those never decided).")
    ] = False,
    order_id: Annotated[str | None, typer.Option("--order-id", help="Only notifications of this order.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Verify and apply stored notifications that were not applied, once the cause is fixed.

    For instance after MIDTRANS_SERVER_KEY was corrected, or a missing order was
    inserted. Each stored body is verified again with the current server key and goes
    through the same update a live notification gets; its new outcome is recorded on the
    same stored row (no second row is written). Without --rejected every unprocessed
    notification is taken: the rejected ones and those never decided (e.g. stored by an
    older backend). Oldest first. Exits 1 when any is still rejected.
    """
    from midpay import operations, output

    with errors_to_exit():
        server_key = settings().require_server_key()
        conn = open_connection()
        with conn:
            results = operations.reprocess_events(conn, server_key, order_id=order_id, rejected_only=rejected)
        if json_out:
            output.write_json(output.notification_document(results))
        else:
            output.render_notifications(output.console(), results, dry_run=False)
        _exit_for(any(r.outcome == "rejected" for r in results))


def _must_ask(action: str, yes: bool) -> bool:
    """Whether to ask before ``action``; without a terminal to ask on, --yes is required."""
    if yes:
        return False
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {action} without --yes (there is no terminal to confirm on)")
    return True


def _confirm(question: str) -> None:
    if not typer.confirm(question, default=False, err=True):
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
                con.print(outcome.result.note)


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
    from midpay import operations, output

    with errors_to_exit():
        ask = _must_ask(f"refund order {order_id}", yes)
        conn = open_connection()
        with conn:
            if ask:
                plan = operations.plan_refund(conn, order_id, amount)
                _confirm(
                    f"Refund {output.rupiah(plan.amount)} of order {order_id} "
                    f"(paid {output.rupiah(plan.payment.gross_amount)}, {output.rupiah(plan.remainder)} left)?"
                )
                amount = plan.amount  # exactly what was confirmed
            with open_gateway() as gateway:
                outcome = operations.refund(conn, gateway, order_id, amount=amount, reason=reason)
        if json_out:
            output.write_json(
                {"refund": output.refund_document(outcome.refund), "payment": output.payment_document(outcome.payment)}
            )
        else:
            output.render_refund(output.console(), outcome.refund, outcome.payment, retried=outcome.retried)


# --- operator views and actions: end ---------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
