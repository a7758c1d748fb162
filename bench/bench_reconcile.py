"""1. Reconcile: midpay against the concurrency floor and against the official client's loop.

N open (pending) orders exist in the sandbox and in payment_transactions (older than
--min-age); half of them are paid in the sandbox first, so half the rows change. The
sandbox answers every API call after ``latency`` ms. Then:

* ``midpay reconcile --concurrency 16 --min-age 0 --json`` as a subprocess, wall clock;
* the floor: N x latency / 16, the time 16 perfectly overlapped calls would take;
* the baseline: a sequential loop with ``midtransclient.CoreApi`` (the official
  client, base URL pointed at the sandbox) doing the status call and one autocommit
  UPDATE per row with psycopg, on the same rows reset to pending.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from common import (
    SERVER_KEY,
    Lab,
    Result,
    SandboxProcess,
    Target,
    charge_orders,
    copy_rows,
    log,
    median,
    midpay_env,
    pay_orders,
    run_midpay,
)
from psycopg.types.json import Jsonb

CONCURRENCY = 16


def _insert_pending(conn: psycopg.Connection[Any], answers: list[dict[str, Any]], amounts: list[int]) -> None:
    columns = (
        "order_id",
        "gross_amount",
        "payment_type",
        "status",
        "midtrans_transaction_id",
        "midtrans_response_json",
        "created_at",
        "updated_at",
    )
    created = datetime.now(UTC) - timedelta(minutes=10)  # older than any --min-age: the cron job's backlog
    with conn.transaction():
        rows = (
            (a["order_id"], amount, "gopay", "pending", a["transaction_id"], Jsonb(a), created, created)
            for a, amount in zip(answers, amounts, strict=True)
        )
        copy_rows(conn, "payment_transactions", columns, rows)


def _loop_with_official_client(api_url: str, db_url: str, order_ids: list[str]) -> float:
    """The straightforward script: one status call, one UPDATE, row after row."""
    import midtransclient

    # midtransclient 1.4.2 has no base-URL option: its config reads a class attribute.
    midtransclient.config.ApiConfig.CORE_SANDBOX_BASE_URL = api_url
    core = midtransclient.CoreApi(is_production=False, server_key=SERVER_KEY)
    started = time.perf_counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for order_id in order_ids:
            answer = core.transactions.status(order_id)
            status = answer["transaction_status"]
            conn.execute(
                "UPDATE payment_transactions SET status = %s, "
                "midtrans_transaction_id = COALESCE(midtrans_transaction_id, %s), "
                "midtrans_response_json = COALESCE(midtrans_response_json, '{}'::jsonb) || %s, "
                "paid_at = CASE WHEN %s IN ('settlement', 'capture') THEN COALESCE(paid_at, now()) ELSE paid_at END, "
                "updated_at = now(), last_checked_at = now() WHERE order_id = %s",
                (status, answer.get("transaction_id"), Jsonb(answer), status, order_id),
            )
    return time.perf_counter() - started


def _reset(db_url: str) -> None:
    """Every row open and never checked again, as before the first run (the sandbox keeps its state)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE payment_transactions SET status = 'pending', paid_at = NULL, last_checked_at = NULL")
        conn.execute("VACUUM ANALYZE payment_transactions")


def run(
    lab: Lab, *, quick: bool, orders: int | None = None, latency_ms: int = 50, repeats: int | None = None
) -> Result:
    n = orders or (100 if quick else 2000)
    repeats = repeats or (1 if quick else 3)
    result = Result("reconcile")
    db_url = lab.fresh_db("reconcile")
    order_ids = [f"bench-rc-{i:06d}" for i in range(n)]
    amounts = [10_000 + i for i in range(n)]
    paid = order_ids[::2]

    with SandboxProcess(lab, latency_ms=0) as sandbox:
        log(f"reconcile: charging {n} orders in the sandbox, paying {len(paid)}")
        answers = charge_orders(sandbox.url, order_ids, amounts)
        with psycopg.connect(db_url) as conn:
            _insert_pending(conn, answers, amounts)
        pay_orders(sandbox.url, paid)
        sandbox.set_latency(latency_ms)

        env = midpay_env(lab, db_url, sandbox.url)
        walls, cpus = [], []
        summary: dict[str, int] = {}
        for attempt in range(repeats):
            if attempt:
                _reset(db_url)
            log(
                f"reconcile: midpay reconcile --concurrency {CONCURRENCY} over {n} rows at {latency_ms} ms "
                f"(run {attempt + 1} of {repeats})"
            )
            run = run_midpay(
                lab,
                env,
                "reconcile",
                "--concurrency",
                str(CONCURRENCY),
                "--min-age",
                "0",
                "--json",
                name=f"reconcile-{attempt}",
                measure_rss=True,
            )
            if run.returncode != 0:
                raise RuntimeError(f"midpay reconcile exited {run.returncode}: {run.stderr[-2000:]}")
            summary = run.json()["summary"]
            with psycopg.connect(db_url) as conn:
                settled = conn.execute(
                    "SELECT count(*) FROM payment_transactions WHERE status = 'settlement'"
                ).fetchone()
            if summary != {"checked": n, "changed": len(paid), "unchanged": n - len(paid), "errors": 0}:
                raise RuntimeError(f"unexpected reconcile summary {summary}")
            if settled is None or settled[0] != len(paid):
                raise RuntimeError(f"after reconcile {settled} rows are settled, expected {len(paid)}")
            walls.append(run.wall)
            cpus.append(run.cpu_s or 0.0)

        wall = median(walls)
        floor = n * latency_ms / 1000 / CONCURRENCY
        result.metrics.update(
            {
                "orders": n,
                "latency_ms": latency_ms,
                "concurrency": CONCURRENCY,
                "midpay_runs": repeats,
                "midpay_wall_s": round(wall, 3),
                "midpay_wall_s_all": [round(w, 3) for w in walls],
                "midpay_cpu_s": round(median(cpus), 2),
                "floor_s": round(floor, 3),
                "midpay_vs_floor": round(wall / floor, 3),
                "midpay_rows_per_s": round(n / wall, 1),
                "summary": summary,
            }
        )
        result.targets.append(Target("reconcile wall / floor (median)", round(wall / floor, 3), 1.3, "<=", "x"))

        loop_wall: float | None = None
        try:
            import midtransclient  # noqa: F401
        except ImportError:
            result.notes.append(
                "midtransclient is not installed (pip install -e '.[bench]'): the official-client loop was skipped"
            )
        else:
            _reset(db_url)
            log(f"reconcile: sequential midtransclient loop over {n} rows (about {n * latency_ms / 1000:.0f} s)")
            loop_wall = _loop_with_official_client(sandbox.url, db_url, order_ids)
            with psycopg.connect(db_url) as conn:
                again = conn.execute("SELECT count(*) FROM payment_transactions WHERE status = 'settlement'").fetchone()
            if again is None or again[0] != len(paid):
                raise RuntimeError(f"after the loop {again} rows are settled, expected {len(paid)}")
        result.metrics["official_loop_wall_s"] = round(loop_wall, 3) if loop_wall is not None else None
        speedup = round(loop_wall / wall, 2) if loop_wall is not None else None
        result.metrics["speedup_vs_official_loop"] = speedup
        result.targets.append(Target("speed-up vs midtransclient loop", speedup, 10.0, ">=", "x"))
    return result
