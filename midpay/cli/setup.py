"""Setting up and trying midpay: migrate, demo, and the local sandbox."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from midpay.cli.boundary import document
from midpay.cli.common import JsonFlag, app, exit_for, open_connection, settings, subapp
from midpay.cli.state import state
from midpay.errors import UsageError

# --- migrate ---------------------------------------------------------------------------


@app.command(short_help='Apply the pending SQL migrations.')
def migrate(
    status: Annotated[bool, typer.Option("--status", help="List applied and pending files; change nothing.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be applied; change nothing.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Apply the pending SQL migrations of sql/, in order, each in one transaction.

    Examples:

    \b
      midpay migrate
      midpay migrate --status
      midpay migrate --dry-run --json
    """
    from midpay import output
    from midpay.db import migrate as migrations

    conn = open_connection(check_schema=False)
    with conn:
        if status:
            st = migrations.status(conn)
            if json_out:
                document(output.migration_document(st))
            else:
                output.render_migration_status(output.console(), st)
            return
        con = output.console(sys.stderr if json_out else None)
        on_apply = None if json_out else (lambda f: con.print(output.join("applying ", output.text(f.name))))
        done = migrations.migrate(conn, dry_run=dry_run, on_apply=None if dry_run else on_apply)
        if json_out:
            key = "pending" if dry_run else "applied"
            document({key: [{"version": f.version, "name": f.name, "checksum": f.checksum} for f in done]})
        elif dry_run:
            names = output.text(", ".join(f.name for f in done))
            con.print(output.join("would apply: ", names) if done else output.text("nothing to apply: up to date"))
        else:
            con.print(output.text(f"applied {len(done)} migration(s)" if done else "nothing to apply: up to date"))




sandbox_app = subapp(
    help="A local Midtrans-compatible Core API for development, tests and demos.", no_args_is_help=True
)
app.add_typer(sandbox_app, name="sandbox", short_help="A local Midtrans for development and tests.")


# --- sandbox ---------------------------------------------------------------------------


@sandbox_app.command("serve", short_help='Run the local Midtrans until interrupted.')
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not log each request to stdout.")] = False,
    notify_retry_scale: Annotated[
        float, typer.Option("--notify-retry-scale", min=0.0, help="Multiply Midtrans' retry waits (2 min ...) by this.")
    ] = 1.0,
    notify_timeout: Annotated[
        float, typer.Option("--notify-timeout", min=0.001, help="Seconds to wait for a notification POST's answer.")
    ] = 15.0,
) -> None:
    """Run a local Midtrans-compatible Core API until interrupted; logs one line per request.

    Examples:

    \b
      midpay sandbox serve
      midpay sandbox serve --latency-ms 200 --notify-url http://127.0.0.1:8080/midtrans/notification
    """
    from midpay import sandbox

    s = settings()
    sandbox.serve(
        host=host, port=port, server_key=s.server_key, latency_ms=latency_ms, fail_rate=fail_rate,
        notify_url=notify_url, notify_dir=notify_dir, seed=seed, stall_rate=stall_rate,
        malformed_rate=malformed_rate, expiry_seconds=expiry_seconds, quiet=quiet,
        notify_retry_scale=notify_retry_scale, notify_timeout=notify_timeout,
    )


@sandbox_app.command("pay", short_help='Pay or end a sandbox order as its customer would.')
def sandbox_pay(
    order_id: Annotated[str, typer.Argument(help="The order to move.", show_default=False)],
    status: Annotated[
        str, typer.Option("--status", help="settlement, capture, deny, cancel, expire or pending.")
    ] = "settlement",
    payment_type: Annotated[
        str | None, typer.Option("--payment-type", help="qris: a gopay charge paid by scanning its QR.")
    ] = None,
    fraud_status: Annotated[
        str | None, typer.Option("--fraud-status", help="accept, challenge or deny.")
    ] = None,
) -> None:
    """Move a sandbox order as a paying customer would; print the signed notification.

    Examples:

    \b
      midpay sandbox pay shop-1042 > paid.json
      midpay sandbox pay shop-1042 --status expire
    """
    from midpay import output, sandbox

    if status not in sandbox.PAY_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(sandbox.PAY_STATUSES)}, not {status!r}")
    s = settings()
    body = sandbox.pay_remote(
        api_url=s.api_url, order_id=order_id, status=status, payment_type=payment_type,
        fraud_status=fraud_status, timeout=s.timeout,
    )
    output.write_json(body)


# --- demo ------------------------------------------------------------------------------


@app.command(short_help='Walk one payment end to end; no setup needed.')
def demo() -> None:
    """Walk one payment end to end on an embedded PostgreSQL and a local sandbox; no setup needed.

    Examples:

    \b
      midpay demo
    """
    from midpay import output
    from midpay.config import load_settings
    from midpay.setup import demo as demo_mod

    # The demo needs no configuration: it ignores DATABASE_URL and Midtrans settings.
    state.settings = load_settings(state.env_file)
    con = output.console()
    counter = iter(range(1, 100))

    def step(text: str) -> None:
        con.print()
        con.print(output.join(output.text(f"{next(counter)}. ", "bold cyan"), output.text(text, "bold")))

    report = demo_mod.run(state.settings, con, step)
    demo_mod.render_account(con, report)
    exit_for(not report.ok)


