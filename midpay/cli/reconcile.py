"""The cron job: reconcile."""

import sys
from typing import Annotated, Any

import typer

from midpay.cli.common import JsonFlag, app, database_url, errors_to_exit, exit_for, fail, open_gateway

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
    refund_recheck_after: Annotated[
        float,
        typer.Option(
            "--refund-recheck-after", min=0,
            help="Re-check partial_refund payments and refunds the bank has not confirmed at most this often "
            "(seconds).",
        ),
    ] = 3600.0,
    json_out: JsonFlag = False,
) -> None:
    """Bring every open payment in line with Midtrans (the cron job)."""
    from midpay import output
    from midpay import reconcile as reconciling

    with errors_to_exit():
        url = database_url()
        gateway = open_gateway(pool_size=concurrency)
        with gateway:
            notable: list[reconciling.ReconcileResult] = []
            interactive = sys.stdout.isatty() and not json_out
            stream = _JsonResultStream() if json_out else None
            progress = None
            task = None
            if interactive:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                from midpay.db import connect

                with connect(url) as conn:
                    total = reconciling.count_due(
                        conn, min_age=min_age, limit=limit, recheck_after=recheck_after,
                        refund_recheck_after=refund_recheck_after,
                    )
                progress = Progress(
                    TextColumn("reconcile"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=output.console(),
                )
                task = progress.add_task("reconcile", total=total)
                progress.start()

            def on_result(result: reconciling.ReconcileResult) -> None:
                if stream is not None:
                    stream.add(output.reconcile_result(result))
                elif result.error is not None or result.changed:
                    notable.append(result)
                if progress is not None and task is not None:
                    progress.advance(task)

            try:
                summary = reconciling.reconcile(
                    url, gateway, min_age=min_age, limit=limit, concurrency=concurrency, max_rps=max_rps,
                    dry_run=dry_run, grace=grace, recheck_after=recheck_after,
                    refund_recheck_after=refund_recheck_after, on_result=on_result,
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
            exit_for(summary.errors > 0)


class _JsonResultStream:
    """Writes ``{"results": [...], "summary": {...}}`` as results arrive: memory stays flat."""

    def __init__(self) -> None:
        self._first = True
        sys.stdout.write('{"results": [')

    def add(self, item: dict[str, Any]) -> None:
        from midpay.output import json_text

        sys.stdout.write(("\n  " if self._first else ",\n  ") + json_text(item, compact=True))
        self._first = False

    def close(self, summary: dict[str, int]) -> None:
        import json

        sys.stdout.write(("" if self._first else "\n") + '], "summary": ' + json.dumps(summary) + "}\n")
        sys.stdout.flush()


