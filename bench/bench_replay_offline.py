"""2c. Offline replay against pgbench sending the very same statements on as many connections.

N orders are ``created``; a directory holds 2N signed bodies: every order's pending
notification (status_code 201), then every order's expiry (407). An order's two bodies
land in different batches, and the expiry only applies after the pending body, so
the run proves the bodies of one order kept their order. Then
``midpay replay-webhook DIR --offline --connections C --json`` (C = 1 and 4) must apply
all 2N; its wall is measured from spawn to exit, start-up and reading the files included.

pgbench runs what midpay sends for these bodies, statement for statement: midpay's own
SQL (the constants of ``midpay.db.intake`` and ``midpay.db.payments``), each with the values midpay binds inlined as
literals (psycopg's client-side quoting), in the same batches (crc32(order_id) mod C,
200 bodies each, in the order of the files), as the same two transactions a batch:

    store    BEGIN; INSERT ... FROM unnest(200 rows); COMMIT
    decide   BEGIN; SELECT the payments FOR UPDATE; SELECT the confirmed copies;
             UPDATE the payments FROM unnest; UPDATE the events FROM unnest; COMMIT

One pgbench process per connection (``-n -M simple -c 1 -t 1``, its partition's whole
script), all started together; their wall runs from the first start to the last exit.
Each side gets its own fresh database holding the same rows; pgbench runs right
before and right after midpay, and the mean counts. Both must end the same: every row
``expire``, 2N events applied, the same number of commits.

What still differs: pgbench sends its values as SQL text the server parses (simple
protocol); midpay sends them as binary parameters. midpay's wall includes its own
start-up (about 0.35 s) and its Python work per body (reading, JSON, the signature).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import SERVER_KEY, Lab, Result, Target, copy_rows, log, midpay_env, pgbench_path, run_midpay

from midpay.db import intake as sql
from midpay.db import payments

BATCH = 200  # midpay.intake.runs.BATCH
TARGET = 1.0


def _body(order_id: str, amount: int, code: str, status: str) -> dict[str, Any]:
    from midpay.midtrans.notifications import compute_signature

    gross = f"{amount}.00"
    return {
        "transaction_time": "2026-11-26 10:00:00",
        "transaction_status": status,
        "transaction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, order_id)),
        "status_message": "midtrans payment notification",
        "status_code": code,
        "signature_key": compute_signature(order_id, code, gross, SERVER_KEY),
        "payment_type": "gopay",
        "order_id": order_id,
        "merchant_id": "G000000001",
        "gross_amount": gross,
        "fraud_status": "accept",
        "currency": "IDR",
    }


def _database(lab: Lab, name: str, orders: list[tuple[str, int]]) -> str:
    url = lab.fresh_db(name)
    created = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(url) as conn, conn.transaction():
        copy_rows(
            conn, "payment_transactions",
            ("order_id", "gross_amount", "payment_type", "status", "created_at", "updated_at"),
            ((oid, amount, "gopay", "created", created, created) for oid, amount in orders),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions")
    return url


def _partitions(files: list[Path], connections: int) -> list[list[list[tuple[Path, bytes, dict[str, Any]]]]]:
    """The batches of each connection, as midpay.intake.partitions makes them."""
    buffers: list[list[tuple[Path, bytes, dict[str, Any]]]] = [[] for _ in range(connections)]
    batches: list[list[list[tuple[Path, bytes, dict[str, Any]]]]] = [[] for _ in range(connections)]
    for path in files:
        raw = path.read_bytes()
        body = json.loads(raw)
        index = zlib.crc32(body["order_id"].encode()) % connections
        buffers[index].append((path, raw, body))
        if len(buffers[index]) >= BATCH:
            batches[index].append(buffers[index])
            buffers[index] = []
    for index, buffer in enumerate(buffers):
        if buffer:
            batches[index].append(buffer)
    return batches


def _scripts(url: str, files: list[Path], connections: int, folder: Path) -> list[Path]:
    """One pgbench script per connection: midpay's statements for its batches, values inlined."""
    from psycopg.types.json import Jsonb

    with psycopg.connect(url) as conn:
        ids = dict(conn.execute("SELECT order_id, id FROM payment_transactions").fetchall())
        quote = psycopg.ClientCursor(conn)

        def statement(query: str, params: tuple[Any, ...]) -> str:
            return quote.mogrify(query.replace("%b", "%s"), params) + ";\n"

        scripts = []
        statuses: dict[str, str] = {}
        for index, batches in enumerate(_partitions(files, connections)):
            lines: list[str] = []
            for batch in batches:
                events = [uuid.uuid4() for _ in batch]
                lines += ["BEGIN;\n", statement(sql.STORE, (
                    events, [Jsonb(b) for _, _, b in batch], [raw for _, raw, _ in batch],
                    [str(p) for p, _, _ in batch], [b["order_id"] for _, _, b in batch],
                    [b["transaction_id"] for _, _, b in batch], [b["signature_key"] for _, _, b in batch],
                )), "COMMIT;\n"]
                orders = sorted({b["order_id"] for _, _, b in batch})
                by_order: dict[str, list[uuid.UUID]] = {}
                for event, (_, _, b) in zip(events, batch, strict=True):
                    by_order.setdefault(b["order_id"], []).append(event)
                    statuses[b["order_id"]] = b["transaction_status"]
                finished = [e for o in orders for e in by_order[o]]
                lines += ["BEGIN;\n", statement(payments.LOCK_ORDERS, (orders,)),
                          statement(sql.COPIES_BY_ID, ([b["order_id"] for _, _, b in batch], events)),
                          statement(payments.WRITE_PAYMENTS, payments.write_params(
                              [payments.PaymentWrite(ids[o], statuses[o]) for o in orders])),
                          statement(sql.FINISH, (finished, [True] * len(finished), [True] * len(finished),
                                                 ["applied"] * len(finished), [None] * len(finished),
                                                 [False] * len(finished))),
                          "COMMIT;\n"]
            script = folder / f"offline-c{connections}-{index}.pgbench.sql"
            script.write_text("".join(lines))
            scripts.append(script)
    return scripts


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def _outcome(url: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM payment_transactions GROUP BY 1 ORDER BY 1").fetchall()
        events = conn.execute(
            "SELECT outcome, processed, count(*) FROM payment_webhook_events GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    return tuple(rows), tuple(events)


def _pgbench(lab: Lab, orders: list[tuple[str, int]], files: list[Path], connections: int, name: str
             ) -> tuple[float, tuple[Any, ...], int]:
    url = _database(lab, name, orders)
    scripts = _scripts(url, files, connections, lab.work)
    before = _commits(url)
    log(f"replay (offline): pgbench, {connections} process(es) of -c 1 -t 1, midpay's statements for {len(files)}")
    started = time.perf_counter()
    procs = [
        subprocess.Popen([str(pgbench_path()), "-n", "-M", "simple", "-c", "1", "-t", "1", "-f", str(s), url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in scripts
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    wall = time.perf_counter() - started
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or "number of failed transactions: 0" not in out:
            raise RuntimeError(f"pgbench failed ({proc.returncode}): {err[-1000:]} {out[-1000:]}")
    time.sleep(1.0)  # backends report their statistics when they exit
    return wall, _outcome(url), _commits(url) - before


def _midpay(lab: Lab, orders: list[tuple[str, int]], folder: Path, connections: int, name: str
            ) -> tuple[Any, tuple[Any, ...], int]:
    url = _database(lab, name, orders)
    before = _commits(url)
    log(f"replay (offline): midpay replay-webhook --offline --connections {connections}")
    env = midpay_env(lab, url, None)
    run = run_midpay(lab, env, "replay-webhook", str(folder), "--offline", "--connections", str(connections),
                     "--json", name=name, measure_rss=True)
    if run.returncode != 0:
        raise RuntimeError(f"offline replay exited {run.returncode}: {run.stderr[-2000:]}")
    summary = run.json()["summary"]
    n = 2 * len(orders)
    if summary != {"total": n, "applied": n, "unchanged": 0, "awaiting": 0, "rejected": 0}:
        raise RuntimeError(f"unexpected offline replay summary {summary}")
    time.sleep(1.0)
    return run, _outcome(url), _commits(url) - before


def run(lab: Lab, result: Result, *, quick: bool, orders: int | None = None,
        connection_counts: tuple[int, ...] = (1, 4)) -> None:
    """Add the offline replay's figures and targets (one per connection count) to ``result``."""
    count = orders or (200 if quick else 5000)
    pairs = [(f"bench-of-{i:06d}", 30_000 + i) for i in range(count)]
    folder = lab.work / "offline"
    folder.mkdir()
    number = 0
    for code, status in (("201", "pending"), ("407", "expire")):
        for order_id, amount in pairs:
            text = json.dumps(_body(order_id, amount, code, status), indent=2)
            folder.joinpath(f"{number:06d}.json").write_text(text)
            number += 1
    files = sorted(folder.glob("*.json"))
    result.metrics["offline_bodies"] = len(files)
    result.metrics["offline_orders"] = count
    for c in connection_counts:
        first, first_state, first_commits = _pgbench(lab, pairs, files, c, f"off_pgb1_c{c}")
        run_, state, commits = _midpay(lab, pairs, folder, c, f"off_midpay_c{c}")
        second, second_state, _ = _pgbench(lab, pairs, files, c, f"off_pgb2_c{c}")
        if not (state == first_state == second_state):
            raise RuntimeError(f"midpay and pgbench ended differently: {state} / {first_state} / {second_state}")
        pgbench_eps = len(files) / ((first + second) / 2)
        midpay_eps = len(files) / run_.wall
        result.metrics.update({
            f"offline_c{c}_midpay_wall_s": round(run_.wall, 3),
            f"offline_c{c}_midpay_events_per_s": round(midpay_eps, 1),
            f"offline_c{c}_midpay_cpu_s": run_.cpu_s,
            f"offline_c{c}_pgbench_wall_s": [round(first, 3), round(second, 3)],
            f"offline_c{c}_pgbench_events_per_s": round(pgbench_eps, 1),
            f"offline_c{c}_commits": {"midpay": commits, "pgbench": first_commits},
            f"offline_c{c}_vs_pgbench": round(midpay_eps / pgbench_eps, 3),
        })
        result.targets.append(Target(f"offline replay events/s vs pgbench (same statements), {c} connection(s)",
                                     round(midpay_eps / pgbench_eps, 3), TARGET, ">=", "x"))
    result.notes.append(
        "offline: pgbench runs midpay's own statements (midpay.db.intake, midpay.db.payments) with midpay's values "
        "inlined, same batches, same two transactions per batch, one process per connection; "
        "midpay's wall includes start-up"
    )
