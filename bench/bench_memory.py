"""5. Memory: peak RSS of one reconcile run over 100,000 open rows.

``midpay reconcile --json --min-age 0 --concurrency 16`` runs as a subprocess against a
sandbox with no latency; its peak RSS is the ru_maxrss that wait4() reports for that
one process (VmRSS is also sampled every 0.5 s, to show whether memory grows with the
rows checked).

By default the orders do not exist in the sandbox: every status call answers 404 and
every row ends as an error (exit 1), but every row is still claimed, asked about and
reported, which is what the memory bound is about. ``--memory-in-sandbox`` charges the
orders in the sandbox first, so every row is applied through the database as well
(slower to set up: about 2 ms per order).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from common import Lab, Result, SandboxProcess, Target, charge_orders, copy_rows, log, midpay_env, run_midpay


def run(lab: Lab, *, quick: bool, rows: int | None = None, in_sandbox: bool = False) -> Result:
    n = rows or (1000 if quick else 100_000)
    result = Result("memory")
    db_url = lab.fresh_db("memory")
    ids = [f"bench-mem-{i:07d}" for i in range(n)]
    amounts = [15_000 + i % 1000 for i in range(n)]
    created = datetime.now(UTC) - timedelta(minutes=30)
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        if in_sandbox:
            log(f"memory: charging {n:,} orders in the sandbox")
            charge_orders(sandbox.url, ids, amounts)
        with psycopg.connect(db_url) as conn, conn.transaction():
            copy_rows(
                conn,
                "payment_transactions",
                ("order_id", "gross_amount", "payment_type", "status", "created_at", "updated_at"),
                ((oid, amt, "gopay", "pending", created, created) for oid, amt in zip(ids, amounts, strict=True)),
            )
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE payment_transactions")
        log(f"memory: midpay reconcile over {n:,} open rows ({'in the sandbox' if in_sandbox else 'all 404'})")
        env = midpay_env(lab, db_url, sandbox.url)
        run = run_midpay(
            lab,
            env,
            "reconcile",
            "--json",
            "--min-age",
            "0",
            "--concurrency",
            "16",
            name="memory",
            measure_rss=True,
            timeout=1800,
        )
    expected_rc = 0 if in_sandbox else 1
    if run.returncode != expected_rc:
        raise RuntimeError(f"midpay reconcile exited {run.returncode}: {run.stderr[-2000:]}")
    summary = run.json()["summary"]
    if summary["checked"] != n:
        raise RuntimeError(f"reconcile checked {summary['checked']} rows, expected {n}")
    assert run.max_rss_kb is not None
    peak_mb = run.max_rss_kb / 1024
    samples = [kb for kb in run.rss_samples_kb if kb > 10_240]  # past the exec of the interpreter
    half = samples[len(samples) // 2] if samples else None
    result.metrics.update(
        {
            "open_rows": n,
            "orders_in_sandbox": in_sandbox,
            "wall_s": round(run.wall, 2),
            "rows_per_s": round(n / run.wall, 1),
            "cpu_s": run.cpu_s,
            "peak_rss_mb": round(peak_mb, 1),
            "rss_at_half_time_mb": round(half / 1024, 1) if half else None,
            "rss_at_end_mb": round(samples[-1] / 1024, 1) if samples else None,
            "summary": summary,
        }
    )
    result.targets.append(Target(f"peak RSS, reconcile over {n:,} rows", round(peak_mb, 1), 200.0, "<", "MB"))
    if not in_sandbox:
        result.notes.append("orders not created in the sandbox: every status call answered 404 (rows still checked)")
    return result
