"""2. Replay: one ``midpay replay-webhook DIR`` against pgbench's durable-commit floor, and confirmed.

N signed settlement notifications (two in three GoPay, one in three QRIS, shaped like
the sandbox's) for N pending orders, one file each, go through one
``midpay replay-webhook DIR --json`` process. Every one is stored, verified, confirmed
with the sandbox (no latency: this part measures midpay's own cost) and applied.

The floor is pgbench with one client running the same number of transactions of an
equivalent shape: INSERT a webhook event with a jsonb body of the same size, UPDATE
one random payment's status and updated_at (found by order_id through its unique
index, as midpay finds it), COMMIT. That is the cost of a durable per-event commit
on this server, with no Python at all.

Also: one ``midpay replay-webhook FILE`` process per file, measured over a sample of
files and extrapolated to N (the start-up cost a per-event cron or hook would pay).

Confirmed replay (10,000 bodies for 2,000 orders at 50 ms a call) is in
``bench_replay_confirmed``, offline replay against pgbench in ``bench_replay_offline``;
both report under this benchmark's name.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_replay_confirmed
import bench_replay_offline
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
    midpay_env,
    pay_orders,
    pgbench_path,
    run_midpay,
)
from psycopg.types.json import Jsonb

MERCHANT_ID = "G000000001"


def notification(order_id: str, amount: int, *, qris: bool) -> dict[str, Any]:
    """A settlement notification as Midtrans (and midpay's sandbox) sends it."""
    from midpay.midtrans.notifications import compute_signature

    gross = f"{amount}.00"
    body: dict[str, Any] = {"transaction_type": "on-us"} if qris else {}
    body.update(
        {
            "transaction_time": "2026-11-26 10:00:00",
            "transaction_status": "settlement",
            "transaction_id": str(uuid.uuid4()),
            "status_message": "midtrans payment notification",
            "status_code": "200",
            "signature_key": compute_signature(order_id, "200", gross, SERVER_KEY),
            "settlement_time": "2026-11-26 10:01:07",
            "payment_type": "qris" if qris else "gopay",
            "order_id": order_id,
            "merchant_id": MERCHANT_ID,
        }
    )
    if qris:
        body["issuer"] = "gopay"
    body.update({"gross_amount": gross, "fraud_status": "accept", "currency": "IDR"})
    if qris:
        body["acquirer"] = "gopay"
    return body


def _pgbench_script(body: dict[str, Any], n: int) -> str:
    # pgbench substitutes :name only for variables it knows (here only :i), so the
    # colons of the JSON's times stay as they are.
    literal = json.dumps(body).replace("'", "''")
    order = "'bench-rp-' || lpad(:i::text, 6, '0')"
    return (
        f"\\set i random(0, {n - 1})\n"
        "BEGIN;\n"
        "INSERT INTO payment_webhook_events (raw_body, source, order_id, midtrans_transaction_id, signature_key, "
        f"is_verified, processed, outcome, processed_at) VALUES ('{literal}'::jsonb, 'pgbench', {order}, "
        f"'{body['transaction_id']}', '{body['signature_key']}', true, true, 'applied', now());\n"
        # 'pending' rather than 'settlement' so that pgbench can run before midpay too
        # without turning its notifications into no-ops; the write is the same size.
        f"UPDATE payment_transactions SET status = 'pending', updated_at = now() WHERE order_id = {order};\n"
        "COMMIT;\n"
    )


def _pgbench(script: Path, n: int, db_url: str) -> float:
    """tps of ``pgbench -n -c 1 -t n -f script`` on the benchmark's database."""
    log(f"replay: pgbench -n -c 1 -t {n}, one insert-plus-update transaction each")
    proc = subprocess.run(
        [str(pgbench_path()), "-n", "-c", "1", "-t", str(n), "-f", str(script), db_url],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", proc.stdout)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stderr[-1000:]} {proc.stdout[-1000:]}")
    return float(found.group(1))


def _psycopg_same_shape(db_url: str, body: dict[str, Any], n: int) -> float:
    """tps of pgbench's transaction sent from Python with psycopg: the floor for any Python client."""
    log(f"replay: the same {n} transactions from a Python loop with psycopg")
    rng = random.Random(3)
    with psycopg.connect(db_url) as conn:
        started = time.perf_counter()
        for _ in range(n):
            order_id = f"bench-rp-{rng.randrange(n):06d}"
            with conn.transaction():
                conn.execute(
                    "INSERT INTO payment_webhook_events (raw_body, source, order_id, midtrans_transaction_id, "
                    "signature_key, is_verified, processed, outcome, processed_at) "
                    "VALUES (%s, 'psycopg', %s, %s, %s, true, true, 'applied', now())",
                    (Jsonb(body), order_id, body["transaction_id"], body["signature_key"]),
                )
                conn.execute(
                    "UPDATE payment_transactions SET status = 'pending', updated_at = now() WHERE order_id = %s",
                    (order_id,),
                )
        return n / (time.perf_counter() - started)


def run(
    lab: Lab, *, quick: bool, events: int | None = None, confirmed_orders: int | None = None,
    offline_orders: int | None = None,
) -> Result:
    n = events or (200 if quick else 10_000)
    sample = 5 if quick else 50
    result = Result("replay")
    db_url = lab.fresh_db("replay")
    ids = [f"bench-rp-{i:06d}" for i in range(n + sample)]
    amounts = [25_000 + i for i in range(n + sample)]
    created = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(db_url) as conn, conn.transaction():
        copy_rows(
            conn,
            "payment_transactions",
            ("order_id", "gross_amount", "payment_type", "status", "created_at", "updated_at"),
            (
                (oid, amt, "qris" if i % 3 == 2 else "gopay", "pending", created, created)
                for i, (oid, amt) in enumerate(zip(ids, amounts, strict=True))
            ),
        )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions")

    with SandboxProcess(lab, latency_ms=0) as sandbox:
        log(f"replay: charging and settling {n + sample} orders in the sandbox (what confirmation will find)")
        charge_orders(sandbox.url, ids, amounts)
        pay_orders(sandbox.url, ids)
        _pgbench_part(lab, result, db_url, ids, amounts, n, sample, sandbox.url)
    bench_replay_confirmed.run(lab, result, quick=quick, orders=confirmed_orders)
    bench_replay_offline.run(lab, result, quick=quick, orders=offline_orders)
    return result


def _pgbench_part(
    lab: Lab, result: Result, db_url: str, ids: list[str], amounts: list[int], n: int, sample: int, api_url: str
) -> None:
    folder = lab.work / "notifications"
    single = lab.work / "notifications-single"
    folder.mkdir()
    single.mkdir()
    sizes = []
    for i, (oid, amt) in enumerate(zip(ids, amounts, strict=True)):
        text = json.dumps(notification(oid, amt, qris=i % 3 == 2), indent=2)
        sizes.append(len(text))
        (folder if i < n else single).joinpath(f"{oid}.json").write_text(text)
    script = lab.work / "replay.pgbench.sql"
    script.write_text(_pgbench_script(notification(ids[0], amounts[0], qris=False), n))
    # Disk flush latency on a shared machine drifts: the floor is measured right before
    # and right after midpay's run, and their mean is used.
    before = _pgbench(script, n, db_url)
    log(f"replay: midpay replay-webhook over {n} files")
    env = midpay_env(lab, db_url, api_url)
    run = run_midpay(lab, env, "replay-webhook", str(folder), "--json", name="replay", measure_rss=True)
    if run.returncode != 0:
        raise RuntimeError(f"midpay replay-webhook exited {run.returncode}: {run.stderr[-2000:]}")
    summary = run.json()["summary"]
    if summary != {"total": n, "applied": n, "unchanged": 0, "awaiting": 0, "rejected": 0}:
        raise RuntimeError(f"unexpected replay summary {summary}")
    midpay_eps = n / run.wall
    after = _pgbench(script, n, db_url)
    pgbench_tps = (before + after) / 2
    psycopg_tps = _psycopg_same_shape(db_url, notification(ids[0], amounts[0], qris=False), n)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM payment_webhook_events WHERE source = 'pgbench'").fetchone()
    if stored is None or stored[0] != 2 * n:
        raise RuntimeError(f"pgbench stored {stored} events, expected {2 * n}")

    log(f"replay: {sample} separate midpay replay-webhook FILE processes")
    walls = []
    for i, path in enumerate(sorted(single.glob("*.json"))):
        one = run_midpay(lab, env, "replay-webhook", str(path), "--json", name=f"replay-single-{i}")
        if one.returncode != 0 or one.json()["summary"]["applied"] != 1:
            raise RuntimeError(f"replay-webhook {path.name} exited {one.returncode}: {one.stderr[-1000:]}")
        walls.append(one.wall)
    per_file = sum(walls) / len(walls)

    result.metrics.update(
        {
            "events": n,
            "body_bytes_median": sorted(sizes)[len(sizes) // 2],
            "midpay_wall_s": round(run.wall, 3),
            "midpay_events_per_s": round(midpay_eps, 1),
            "midpay_cpu_s": run.cpu_s,
            "midpay_peak_rss_mb": round((run.max_rss_kb or 0) / 1024, 1),
            "pgbench_tps_before": round(before, 1),
            "pgbench_tps_after": round(after, 1),
            "pgbench_tps": round(pgbench_tps, 1),
            "psycopg_same_shape_tps": round(psycopg_tps, 1),
            "psycopg_same_shape_vs_pgbench": round(psycopg_tps / pgbench_tps, 3),
            "midpay_vs_pgbench": round(midpay_eps / pgbench_tps, 3),
            "per_file_sample": sample,
            "per_file_mean_s": round(per_file, 3),
            "per_file_events_per_s": round(1 / per_file, 2),
            "per_file_extrapolated_s": round(per_file * n, 1),
            "one_process_speedup_vs_per_file": round(per_file * n / run.wall, 1),
            "summary": summary,
        }
    )
    result.targets.append(Target("replay events/s vs pgbench tps", round(midpay_eps / pgbench_tps, 3), 0.5, ">=", "x"))
    result.notes.append(f"per-file figure: {sample} processes measured, extrapolated to {n} files (mean x {n})")
    result.notes.append("every body is confirmed with a 0-latency sandbox: one Get Status call per order")
