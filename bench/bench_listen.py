"""6. Listen: ``midpay listen`` against a bare handler on the same server, 32 senders.

N settled sandbox orders, each with its signed settlement notification, are POSTed by
32 concurrent senders (one kept-alive connection each) to

- ``midpay listen --workers W``: the real receiver (store the exact bytes, verify,
  confirm and apply through the intake, one JSON log line per request);
- ``bench/bare_listen.py --workers W``: the least a confirming receiver does (INSERT
  the body, GET its status, UPDATE the row), served by the very same code
  (``midpay.web.server.serve``: gunicorn, gthread workers, one pool per worker);

with W = 1, 2, 4 (1 with --quick) and 32/W threads per worker (at least listen's
default), against the same PostgreSQL and the same sandbox,
which adds the same confirmation latency to every Get Status. Each run gets a fresh
database and is warmed up first (workers booted, pools opened) with orders of its own.
Figures: notifications per second (N over the wall time from the first send to the
last answer), p50 and p99 of each request's latency as the sender saw it.
Targets: listen's throughput at least 0.7x the bare handler's, listen's p99 under
100 ms plus the confirmation latency, and listen's peak PostgreSQL connections (sampled
from pg_stat_activity every 20 ms during the measured part) at most W x 4 (the fixed
pool of each worker, ``webhook.DB_CONNECTIONS``): 4 workers hold at most 16, whatever
their threads. The bare handler keeps a connection across its Get Status, as before.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
from common import REPO, Lab, Result, SandboxProcess, Target, charge_orders, copy_rows, log, midpay_env
from common import percentile as pct
from rc_lab import ConnectionPeak

SENDERS = 32
WARMUP = 64


def _pay(api_url: str, order_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Settle each order in the sandbox; its signed settlement notification, in order."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    with requests.Session() as session:
        session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16))

        def one(order_id: str) -> dict[str, Any]:
            response = session.post(f"{api_url}/_sandbox/pay/{order_id}", json={"status": "settlement"}, timeout=30)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(one, order_ids))


def _send_all(url: str, bodies: Sequence[bytes], senders: int) -> tuple[list[float], list[int], float]:
    """POST every body with ``senders`` threads; (latencies in s, statuses, wall time in s)."""
    parts = urlsplit(url)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    queue = iter(range(len(bodies)))
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "Veritrans"}

    def sender() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while True:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    conn.request("POST", parts.path, bodies[index], headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                    status = 0
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses.append(status)
        finally:
            conn.close()

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses, time.perf_counter() - started


def _database(lab: Lab, name: str, orders: Sequence[tuple[str, int, str]]) -> str:
    url = lab.fresh_db(name)
    created = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(url) as conn, conn.transaction():
        copy_rows(
            conn,
            "payment_transactions",
            (
                "order_id",
                "gross_amount",
                "payment_type",
                "status",
                "midtrans_transaction_id",
                "created_at",
                "updated_at",
            ),
            ((oid, amount, "gopay", "pending", tid, created, created) for oid, amount, tid in orders),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions")
    return url


def _status_checks(sandbox: SandboxProcess) -> int | None:
    """Get Status calls the sandbox answered so far (None if its statistics say nothing of them)."""
    checks = sandbox.control("GET", "/_sandbox/stats").get("status_checks")
    if isinstance(checks, dict):
        return sum(int(v) for v in checks.values())
    return None


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (gunicorn's master and workers)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    pids.append(int(entry))
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return float("nan")
    return total


def _one_run(
    lab: Lab,
    variant: str,
    workers: int,
    threads: int,
    sandbox: SandboxProcess,
    orders: Sequence[tuple[str, int, str]],
    bodies: Sequence[bytes],
) -> dict[str, Any]:
    from midpay.web.child import LISTEN, start_server

    url = _database(lab, f"{variant}_w{workers}", orders)
    env = {**midpay_env(lab, url, sandbox.url), "PYTHONPATH": str(REPO)}
    program = LISTEN if variant == "listen" else (str(REPO / "bench" / "bare_listen.py"),)
    log_path = lab.work / f"listen-{variant}-w{workers}.log"
    options = ("--port", "0", "--workers", str(workers), "--threads", str(threads))
    server = start_server([*program, *options], env, log_path, cwd=lab.work)
    try:
        _send_all(server.url, bodies[:WARMUP], SENDERS)  # boot the workers, open their pools
        checks_before, cpu_before = _status_checks(sandbox), _tree_cpu_s(server.process.pid)
        with ConnectionPeak(lab.admin_url, url, interval=0.02) as connections:
            latencies, statuses, wall = _send_all(server.url, bodies[WARMUP:], SENDERS)
        checks_after, cpu_after = _status_checks(sandbox), _tree_cpu_s(server.process.pid)
    finally:
        code = server.stop()
    if code != 0:
        raise RuntimeError(f"{variant} --workers {workers} exited {code}; see {log_path}")
    n = len(bodies) - WARMUP
    if statuses.count(200) != n:
        raise RuntimeError(f"{variant} --workers {workers}: {n - statuses.count(200)} of {n} not answered 200")
    with psycopg.connect(url) as conn:
        settled = conn.execute("SELECT count(*) FROM payment_transactions WHERE status = 'settlement'").fetchone()
        stored = conn.execute("SELECT count(*) FROM payment_webhook_events").fetchone()
    if settled != (len(bodies),) or stored != (len(bodies),):
        raise RuntimeError(f"{variant} --workers {workers}: {settled} rows settled and {stored} bodies stored")
    ms = [x * 1000 for x in latencies]
    return {
        "per_s": round(n / wall, 1),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "wall_s": round(wall, 2),
        "peak_connections": connections.peak,
        "server_cpu_ms_per_notification": round((cpu_after - cpu_before) * 1000 / n, 2),
        "status_checks_per_notification": (
            round((checks_after - checks_before) / n, 2)
            if checks_before is not None and checks_after is not None
            else None
        ),
    }


def run(
    lab: Lab,
    *,
    quick: bool,
    notifications: int | None = None,
    latency_ms: int | None = None,
    workers: Sequence[int] | None = None,
    threads: int | None = None,
) -> Result:
    from midpay.web.app import DB_CONNECTIONS
    from midpay.web.server import DEFAULT_THREADS

    n = notifications or (150 if quick else 2000)
    latency = latency_ms if latency_ms is not None else (20 if quick else 50)
    counts = list(workers or ((1,) if quick else (1, 2, 4)))

    # Enough threads in all for the 32 senders (at least listen's default per worker), so
    # that the runs compare handlers rather than queues.
    def per_worker(w: int) -> int:
        return threads or max(DEFAULT_THREADS, -(-SENDERS // w))

    result = Result("listen")
    ids = [f"bench-ls-{i:06d}" for i in range(n + WARMUP)]
    amounts = [25_000 + i for i in range(n + WARMUP)]
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        log(f"listen: {n + WARMUP} orders charged and settled in the sandbox")
        answers = charge_orders(sandbox.url, ids, amounts)
        orders = [(oid, amt, a["transaction_id"]) for oid, amt, a in zip(ids, amounts, answers, strict=True)]
        bodies = [json.dumps(b).encode() for b in _pay(sandbox.url, ids)]
        sandbox.set_latency(latency)
        figures: dict[str, dict[str, Any]] = {}
        for w in counts:
            # Alternate which goes first, so that drift on a shared machine does not favour one.
            variants = ("bare", "listen") if w % 2 else ("listen", "bare")
            for variant in variants:
                log(f"listen: {variant} --workers {w} --threads {per_worker(w)}, {n} notifications, {SENDERS} senders")
                figures[f"{variant}_w{w}"] = _one_run(lab, variant, w, per_worker(w), sandbox, orders, bodies)
    result.metrics.update(
        {
            "notifications": n,
            "senders": SENDERS,
            "confirmation_latency_ms": latency,
            "threads_per_worker": {f"w{w}": per_worker(w) for w in counts},
        }
    )
    for w in counts:
        listen, bare = figures[f"listen_w{w}"], figures[f"bare_w{w}"]
        ratio = round(listen["per_s"] / bare["per_s"], 3)
        result.metrics.update(
            {
                f"listen_per_s_w{w}": listen["per_s"],
                f"listen_p50_ms_w{w}": listen["p50_ms"],
                f"listen_p99_ms_w{w}": listen["p99_ms"],
                f"bare_per_s_w{w}": bare["per_s"],
                f"bare_p50_ms_w{w}": bare["p50_ms"],
                f"bare_p99_ms_w{w}": bare["p99_ms"],
                f"listen_vs_bare_w{w}": ratio,
                f"listen_peak_connections_w{w}": listen["peak_connections"],
                f"bare_peak_connections_w{w}": bare["peak_connections"],
                f"listen_cpu_ms_per_notification_w{w}": listen["server_cpu_ms_per_notification"],
                f"bare_cpu_ms_per_notification_w{w}": bare["server_cpu_ms_per_notification"],
                f"listen_status_checks_per_notification_w{w}": listen["status_checks_per_notification"],
                f"bare_status_checks_per_notification_w{w}": bare["status_checks_per_notification"],
            }
        )
        result.targets.append(Target(f"listen vs bare handler, notifications/s, --workers {w}", ratio, 0.7, ">=", "x"))
        result.targets.append(Target(f"listen p99 latency, --workers {w}", listen["p99_ms"], 100 + latency, "<", "ms"))
        result.targets.append(Target(f"listen peak PostgreSQL connections, --workers {w}",
                                     listen["peak_connections"], w * DB_CONNECTIONS, "<=", ""))
    result.metrics["summary"] = {"runs": len(figures), "answered_200": n * len(figures)}
    if any(figures[f"listen_w{w}"]["status_checks_per_notification"] == 0 for w in counts):
        result.notes.append("listen asked Midtrans nothing: this intake does not confirm, so it is not like for like")
    result.notes.append(
        f"{SENDERS} senders, one kept-alive connection each; the sandbox adds {latency} ms to every Get Status"
    )
    return result
