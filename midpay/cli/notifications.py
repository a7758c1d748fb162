"""Commands about notifications: replay-webhook, events, events reprocess."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from midpay.cli.boundary import JsonSpool, document
from midpay.cli.common import (
    JsonFlag,
    LimitFlag,
    app,
    database_url,
    exit_for,
    open_connection,
    open_gateway,
    settings,
    subapp,
)
from midpay.errors import UsageError

if TYPE_CHECKING:
    from midpay.errors import MidpayError
    from midpay.intake.pipeline import NotificationResult
    from midpay.intake.runs import RunReport

# --- replay-webhook --------------------------------------------------------------------

OfflineFlag = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Ask Midtrans nothing: apply only what each signed status_code proves (201 pending, 407 expire); "
        "store the rest as awaiting confirmation (exit 1).",
    ),
]
ConnectionsFlag = Annotated[
    int,
    typer.Option(
        "--connections", min=1, max=16,
        help="With --offline: PostgreSQL connections at once; the bodies of one order always share one, in order.",
    ),
]
ConcurrencyFlag = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Confirmations with Midtrans at a time.")
]


def _finish(
    report: "RunReport", *, json_out: bool, dry_run: bool, offline: bool, streamed: "_Streamed | None" = None
) -> None:
    """Render the results, then exit by the contract: 0, 1 (rejected or awaiting), 2 (key), 3 (unreachable).

    ``streamed``: the results went to a spool as they were decided (replay-webhook --json).
    """
    from midpay import output
    from midpay.errors import DependencyError

    counts = streamed.counts if streamed is not None else output.notification_document(report.results)["summary"]
    problem = report.fatal
    if problem is None and report.unreachable is not None and not offline:
        problem = DependencyError(
            f"Midtrans could not be asked to confirm {counts['awaiting']} notification(s) ({report.unreachable}); "
            "they are stored awaiting confirmation: run `midpay events reprocess` once Midtrans answers, "
            "or use --offline to apply only what their signatures prove"
        )
    if streamed is None:
        if json_out:
            document(output.notification_document(report.results), compact=len(report.results) > 100)
        else:
            output.render_notifications(output.console(), report.results, dry_run=dry_run)
    if problem is not None:
        raise problem
    exit_for(counts["rejected"] + counts["awaiting"] > 0)


class _Streamed:
    """replay-webhook --json: each result spooled as it is decided, and counted (memory stays flat)."""

    def __init__(self) -> None:
        from midpay import output

        self.counts = output.notification_document([])["summary"]
        self.spool = JsonSpool(self.counts)  # counted as results come: the summary is always up to date
        document(self.spool)

    def add(self, result: "NotificationResult") -> None:
        from midpay import output

        self.spool.add(output.notification_document([result])["results"][0])
        self.counts["total"] += 1
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1


def _no_key(stored: int) -> "MidpayError":
    from midpay.errors import ConfigError

    return ConfigError(
        f"MIDTRANS_SERVER_KEY is not set, so no signature can be checked: {stored} bodies stored undecided; "
        "set it and run `midpay events reprocess`"
    )


@app.command("replay-webhook", short_help='Run saved notification bodies through the intake.')
def replay_webhook(
    paths: Annotated[
        list[str],
        typer.Argument(help="Files, directories (their *.json), .jsonl files, or - for stdin.", show_default=False),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify, confirm and report; write nothing.")
    ] = False,
    offline: OfflineFlag = False,
    concurrency: ConcurrencyFlag = 8,
    connections: ConnectionsFlag = 1,
    json_out: JsonFlag = False,
) -> None:
    """Push saved notification bodies through the intake a live one gets: store, verify, confirm, apply.

    Every body is stored first (its exact bytes too). A body whose signature (sha512 of
    order_id, status_code, gross_amount and the server key), order or amount does not
    check out is rejected. The others are confirmed with Midtrans: Get Status for the
    order, and Midtrans' answer is what applies, checked against the row; the body's
    own transaction_status, times, transaction_id and fraud_status never decide
    anything. Several bodies of one order make one call; a body identical to one
    confirmed before makes none.

    --offline asks Midtrans nothing: a verified body applies only what its signed
    status_code proves (201: pending; 407: expire; 200 and 202 stand for several states
    and only show that the transaction exists). The rest is stored awaiting
    confirmation (exit 1); `midpay events reprocess` or `midpay reconcile` settles it.
    --connections N spreads an offline replay over N PostgreSQL connections by order
    id: the bodies of one order share one connection and are applied in order.
    Midtrans unreachable: exit 3, every body stored, awaiting confirmation.

    Examples:

    \b
      midpay replay-webhook paid.json
      midpay replay-webhook notifications/ day.jsonl --json
      cat body.json | midpay replay-webhook - --offline
    """
    from midpay.intake import bodies, online

    if connections != 1 and not offline:
        raise UsageError("--connections is for --offline replays (online, --concurrency sets the pace)")
    received = bodies.iter_bodies(paths, sys.stdin.buffer)  # every path checked now, bodies read lazily
    key = settings().server_key
    if not key:
        if dry_run:
            settings().require_server_key()
        raise _no_key(online.store_only(database_url(), received))
    url = database_url()
    gateway = None if offline else open_gateway(pool_size=concurrency)
    streamed = _Streamed() if json_out else None
    try:
        report = online.replay(
            url, gateway, received, key, concurrency=concurrency, connections=connections, dry_run=dry_run,
            on_result=streamed.add if streamed is not None else None,
        )
    finally:
        if gateway is not None:
            gateway.close()
    _finish(report, json_out=json_out, dry_run=dry_run, offline=offline, streamed=streamed)


events_app = subapp()
app.add_typer(events_app, name="events", short_help="List stored notifications; reprocess them.")


@events_app.callback(invoke_without_command=True, short_help='List stored notifications and their outcomes.')
def events_list(
    ctx: typer.Context,
    order_id: Annotated[str | None, typer.Option("--order-id", help="Only notifications of this order.")] = None,
    rejected: Annotated[
        bool,
        typer.Option("--rejected", help="Only those not processed (rejected, awaiting confirmation, never decided)."),
    ] = False,
    limit: LimitFlag = 50,
    json_out: JsonFlag = False,
) -> None:
    """List stored notifications, newest first, with their verification and outcome.

    `midpay events reprocess` runs the ones that were not applied through the checks again.

    Examples:

    \b
      midpay events --rejected
      midpay events --order-id shop-1042 --json
    """
    from midpay import output
    from midpay.payments import operations

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
        document({"events": [output.event_document(e) for e in rows]})
    else:
        output.render_events(output.console(), rows)


@events_app.command("reprocess", short_help='Decide again the notifications not applied.')
def events_reprocess(
    rejected: Annotated[
        bool, typer.Option("--rejected", help="Only those recorded as rejected (not awaiting, not undecided).")
    ] = False,
    order_id: Annotated[str | None, typer.Option("--order-id", help="Only notifications of this order.")] = None,
    offline: OfflineFlag = False,
    concurrency: ConcurrencyFlag = 8,
    json_out: JsonFlag = False,
) -> None:
    """Decide again the stored notifications that were not applied: rejected, awaiting confirmation, undecided.

    For instance after MIDTRANS_SERVER_KEY was corrected, a missing order was inserted,
    or Midtrans answers again after an --offline replay. Each stored body (its exact
    bytes when kept) is verified again with the current server key and confirmed with
    Midtrans like a live one; its new outcome is recorded on the same stored row (no
    second row is written). Without --rejected every unprocessed notification is
    taken, including those never decided (e.g. stored by an older backend). Oldest
    first. Exits 1 when any is still rejected or awaiting, 3 when Midtrans cannot be
    reached (--offline then applies what the signatures prove).

    Examples:

    \b
      midpay events reprocess
      midpay events reprocess --rejected --order-id shop-1042
    """
    from midpay.intake import online

    key = settings().require_server_key()
    url = database_url()
    gateway = None if offline else open_gateway(pool_size=concurrency)
    try:
        report = online.reprocess(
            url, gateway, key, order_id=order_id, rejected_only=rejected, concurrency=concurrency
        )
    finally:
        if gateway is not None:
            gateway.close()
    _finish(report, json_out=json_out, dry_run=False, offline=offline)
