"""The cron job: reconcile."""

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midpay.cli.boundary import JsonSpool, document
from midpay.cli.common import (
    JsonFlag,
    app,
    database_url,
    exit_for,
    finite,
    open_connection,
    open_gateway,
    seconds,
    terminate_as_interrupt,
)

if TYPE_CHECKING:
    from midpay.reconcile.job import ReconcileResult, ReconcileSummary

NOTABLE_SHOWN = 500


@app.command(short_help='Bring every open payment in line with Midtrans.')
def reconcile(
    min_age: Annotated[float, seconds("--min-age", "Only rows created more than this many seconds ago.")] = 60.0,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=1_000_000_000, help="Check at most this many rows.")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=128, help="Parallel status calls.")] = 8,
    max_rps: Annotated[
        float | None,
        typer.Option("--max-rps", min=0.01, max=100_000, callback=finite, help="Ceiling on status calls per second."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Ask Midtrans and report; write nothing.")] = False,
    grace: Annotated[
        float, seconds("--grace", "Seconds before a `created` row unknown to Midtrans becomes failure.")
    ] = 600.0,
    recheck_after: Annotated[
        float,
        seconds("--recheck-after",
                "Skip rows whose last completed check is younger than this many seconds (by any run)."),
    ] = 30.0,
    refund_recheck_after: Annotated[
        float,
        seconds("--refund-recheck-after", "Re-check partial_refund payments and refunds the bank has not confirmed at "
                "most this often (seconds)."),
    ] = 3600.0,
    lease: Annotated[
        float,
        seconds("--lease", "Seconds a claimed row stays reserved if this run dies (renewed while it runs).",
                least=1, most=86_400),
    ] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Bring every open payment in line with Midtrans (the cron job).

    Exit 0: every due row checked; 1: some rows could not be checked (each is due again
    on the next run); 2: Midtrans refused the server key (stops at the first 401) or a
    configuration error; 3: Midtrans or PostgreSQL could not be reached. With --json,
    stdout gets one complete document on every path, on one line (made for `>> file.jsonl`),
    with a top-level "error" and "exit_code" when the run failed or was cut short.

    Examples:

    \b
      midpay reconcile
      midpay reconcile --concurrency 32 --max-rps 50 --json >> reconcile.jsonl
      midpay reconcile --dry-run --limit 20
    """
    from midpay.reconcile import job as reconciling

    spool = JsonSpool({"checked": 0, "changed": 0, "unchanged": 0, "errors": 0}) if json_out else None
    if spool is not None:
        document(spool)  # from here on, every ending writes it: the early failures too
    gateway = open_gateway(pool_size=concurrency)
    with gateway:
        conn = open_connection()
        with conn:
            url = database_url()
            interactive = sys.stdout.isatty() and not json_out
            total = (
                reconciling.count_due(
                    conn, min_age=min_age, limit=limit, recheck_after=recheck_after,
                    refund_recheck_after=refund_recheck_after,
                )
                if interactive else None
            )
        report = _Report(spool, total=total)
        with terminate_as_interrupt():
            try:
                summary = reconciling.reconcile(
                    url, gateway, min_age=min_age, limit=limit, concurrency=concurrency, max_rps=max_rps,
                    dry_run=dry_run, grace=grace, recheck_after=recheck_after,
                    refund_recheck_after=refund_recheck_after, lease_seconds=lease,
                    on_result=report.add,
                )
            finally:
                report.stop_progress()
        report.finish(summary, dry_run=dry_run)
        if summary.fatal is not None:
            raise summary.fatal
        exit_for(summary.errors > 0)


class _Report:
    """Where results go: the spooled JSON document, or the notable rows and a progress bar."""

    def __init__(self, spool: JsonSpool | None, *, total: int | None) -> None:
        from midpay import output

        self.spool = spool
        self.notable: list[ReconcileResult] = []
        self.more = 0
        self.progress: Any = None
        if total is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("reconcile"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=output.console(),
            )
            self.task = self.progress.add_task("reconcile", total=total)
            self.progress.start()

    def add(self, result: "ReconcileResult") -> None:
        from midpay import output

        if self.spool is not None:
            self.spool.add(output.reconcile_result(result))
        elif result.error is not None or result.changed:
            if len(self.notable) < NOTABLE_SHOWN:
                self.notable.append(result)
            else:
                self.more += 1
        if self.progress is not None:
            self.progress.advance(self.task)

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, summary: "ReconcileSummary", *, dry_run: bool) -> None:
        """The summary: into the document (the boundary writes it, with the fatal error if any), or on screen."""
        from midpay import output

        if self.spool is not None:
            self.spool.summary = output.reconcile_summary(summary)
        else:
            output.render_reconcile(output.console(), self.notable, summary, dry_run=dry_run)
            if self.more:
                output.console().print(f"… and {self.more} more changed or failed rows (use --json for all)")
