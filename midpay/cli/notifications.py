"""Commands about notifications: replay-webhook, events, events reprocess."""

import sys
from typing import Annotated

import typer

from midpay.cli.common import (
    JsonFlag,
    JsonSpool,
    LimitFlag,
    app,
    error_line,
    errors_to_exit,
    exit_for,
    open_connection,
    settings,
    subapp,
    terminate_as_interrupt,
)
from midpay.errors import UsageError

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
    from midpay import bodies, intake, output

    with errors_to_exit():
        server_key = settings().require_server_key()
        received = bodies.iter_bodies(paths, sys.stdin.buffer)  # every path checked here; bodies read lazily
        conn = open_connection()
        spool = JsonSpool() if json_out else None
        results = []  # for the human table only: --json streams through the spool
        counts = {"total": 0, "applied": 0, "unchanged": 0, "rejected": 0}
        with conn, terminate_as_interrupt():
            try:
                for body in received:
                    result = intake.process_notification(conn, body, server_key, dry_run=dry_run)
                    counts["total"] += 1
                    counts[result.outcome] += 1
                    if spool is not None:
                        spool.add(output.notification_document([result])["results"][0])
                    else:
                        results.append(result)
            except BaseException as exc:
                if spool is not None:
                    spool.close(counts, error_line(exc))
                raise
        if spool is not None:
            spool.close(counts, None)
        else:
            output.render_notifications(output.console(), results, dry_run=dry_run)
        exit_for(counts["rejected"] > 0)




events_app = subapp()
app.add_typer(events_app, name="events")


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
    from midpay import intake, output

    with errors_to_exit():
        server_key = settings().require_server_key()
        conn = open_connection()
        with conn:
            results = intake.reprocess_events(conn, server_key, order_id=order_id, rejected_only=rejected)
        if json_out:
            output.write_json(output.notification_document(results))
        else:
            output.render_notifications(output.console(), results, dry_run=False)
        exit_for(any(r.outcome == "rejected" for r in results))


