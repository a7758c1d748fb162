"""7. Payment events (issue 21): ``midpay deliver`` against a bare client, two processes, latency, the trigger's cost.

One database, one endpoint on a cheap receiver (``python bench/bench_deliver.py receive``:
a raw asyncio HTTP/1.1 server in its own process answering 204 at once, keep-alive, which
notes each ``webhook-id`` and when it arrived). Measured in one run:

- throughput: N events (20,000; 200 with --quick) written by the outbox trigger, sent by
  one ``midpay deliver --once --concurrency 16``: deliveries per second (N over the
  process's wall time, start-up included) and its CPU per delivery (wait4); beside it the
  floor: 16 threads of one ``requests`` session POSTing the same bodies, signed beforehand,
  to the same receiver;
- two processes: every delivery made pending again (bodies and attempts cleared), then two
  ``deliver --once`` processes at once: the speed-up over the one process above, and every
  webhook-id counted at the receiver (each sent exactly once);
- latency: a running ``midpay deliver --concurrency 16`` while one connection commits
  ``rate`` status changes a second (200/s for 30 s; 10 s with --short, 50/s for 3 s with
  --quick): from the moment each commit returned to the receiver's arrival, p50 and p99;
- the change path: ``midpay reconcile --concurrency 16`` settling M orders in the sandbox
  (no added latency, every row changes: two events each), with the outbox trigger enabled
  and disabled (``ALTER TABLE … DISABLE TRIGGER`` in the bench database), alternating, the
  median of each; the cost is 1 − rate(on) / rate(off).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TRIGGER = "payment_transactions_events"
CONCURRENCY = 16


# --- the receiver (its own process) ---------------------------------------------------------


class _Http(asyncio.Protocol):
    """Just enough HTTP/1.1: read a request (Content-Length bodies), note its webhook-id, answer 204."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self._answer(lines[0].split(" ")[1] if " " in lines[0] else "/", headers)

    def _answer(self, path: str, headers: dict[str, str]) -> None:
        assert self.transport is not None
        if path.startswith("/_log"):
            text = "".join(self.seen).encode()
            if "clear" in path:
                self.seen.clear()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            return
        self.seen.append(f"{headers.get('webhook-id', '')} {time.time():.6f}\n")
        self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def _serve() -> None:
    async def main() -> None:
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Http(seen), "127.0.0.1", 0, backlog=256)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"listening on http://127.0.0.1:{port}\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:] == ["receive"]:
    _serve()
    sys.exit(0)


import psycopg  # noqa: E402 - the receiver above starts without the bench's imports
from common import (  # noqa: E402
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
    percentile,
    run_midpay,
)
from psycopg.types.json import Jsonb  # noqa: E402


class Receiver:
    """The receiver process; ``log`` is what arrived since the last clear: [(webhook-id, unix time)]."""

    def __init__(self, lab: Lab) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
        self.proc = subprocess.Popen(
            (sys.executable, __file__, "receive"), stdout=subprocess.PIPE, text=True, env=env, cwd=lab.work
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError("the bench receiver did not start")
        self.url = line.split("listening on ", 1)[1].strip()

    def log(self, *, clear: bool = False) -> list[tuple[str, float]]:
        with urllib.request.urlopen(f"{self.url}/_log{'?clear' if clear else ''}", timeout=30) as answer:  # noqa: S310
            text = answer.read().decode()
        pairs = (line.split(" ") for line in text.splitlines() if line)
        return [(i, float(t)) for i, t in pairs]

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- fixtures --------------------------------------------------------------------------------


def _add_endpoint(lab: Lab, env: dict[str, str], url: str) -> dict[str, Any]:
    run = run_midpay(lab, env, "endpoints", "add", url, "--json", name="endpoints-add", timeout=60)
    if run.returncode != 0:
        raise RuntimeError(f"midpay endpoints add exited {run.returncode}: {run.stderr[-2000:]}")
    document: dict[str, Any] = run.json()
    return document


def _insert_payments(db_url: str, prefix: str, n: int, status: str) -> list[str]:
    """``n`` payment rows with ``status`` (the trigger writes one event each unless it is 'created')."""
    order_ids = [f"{prefix}-{i:06d}" for i in range(n)]
    now = datetime.now(UTC)
    with psycopg.connect(db_url) as conn, conn.transaction():
        rows = ((o, 10_000 + i, "gopay", status, now, now) for i, o in enumerate(order_ids))
        copy_rows(conn, "payment_transactions", ("order_id", "gross_amount", "payment_type", "status",
                                                 "created_at", "updated_at"), rows)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions, payment_events, webhook_deliveries")
    return order_ids


def _delivered(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").fetchone()
    return int(row[0]) if row else 0


def _make_pending_again(db_url: str) -> None:
    """Every delivery as the trigger left it: pending, never tried, no body rendered."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM webhook_attempts")
        conn.execute("UPDATE webhook_deliveries SET status = 'pending', attempts = 0, leased_until = NULL,"
                     " next_attempt_at = clock_timestamp(), delivered_at = NULL, last_status_code = NULL,"
                     " last_error = NULL")
        conn.execute("UPDATE payment_events SET body = NULL")
        conn.execute("VACUUM ANALYZE webhook_deliveries, payment_events, webhook_attempts")


def _deliver_processes(lab: Lab, env: dict[str, str], count: int, name: str) -> tuple[float, list[float], list[int]]:
    """``count`` × ``deliver --once --concurrency 16 --json`` at once: (wall s, CPU s each, delivered each)."""
    args = (sys.executable, "-m", "midpay", "deliver", "--once", "--concurrency", str(CONCURRENCY), "--json")
    outs = [lab.work / f"{name}-{i}.json" for i in range(count)]
    started = time.perf_counter()
    procs = []
    for i, out in enumerate(outs):
        with out.open("wb") as fout, (lab.work / f"{name}-{i}.stderr").open("wb") as ferr:
            procs.append(subprocess.Popen(args, stdout=fout, stderr=ferr, env=env, cwd=lab.work))
    cpus, delivered = [], []
    for i, proc in enumerate(procs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"deliver exited {proc.returncode}: {(lab.work / f'{name}-{i}.stderr').read_text()}")
        cpus.append(usage.ru_utime + usage.ru_stime)
        delivered.append(int(json.loads(outs[i].read_text())["summary"]["delivered"]))
    return time.perf_counter() - started, cpus, delivered


def _bare_client(db_url: str, url: str, secret: str) -> tuple[float, float, int]:
    """The floor: the same bodies, signed beforehand, POSTed by 16 threads over one requests session.

    (wall s, CPU s of this process while sending, requests answered 2xx).
    """
    import requests

    from midpay.outbox import signing

    with psycopg.connect(db_url) as conn:
        events = conn.execute("SELECT id, body FROM payment_events WHERE body IS NOT NULL ORDER BY id").fetchall()
    now = int(time.time())
    prepared = [(signing.headers((secret,), i, now, b), b.encode()) for i, b in events]
    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=CONCURRENCY, pool_maxsize=CONCURRENCY, max_retries=0)
    session.mount("http://", adapter)
    queue = iter(prepared)
    lock = threading.Lock()
    ok = [0] * CONCURRENCY

    def sender(slot: int) -> None:
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            answer = session.post(url, data=item[1], headers=item[0], timeout=30, allow_redirects=False)
            ok[slot] += 200 <= answer.status_code < 300

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(CONCURRENCY)]
    cpu0, started = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    session.close()
    return wall, cpu, sum(ok)


# --- the figures ---------------------------------------------------------------------------------


def _throughput(lab: Lab, env: dict[str, str], db_url: str, receiver: Receiver, secret: str, n: int,
                result: Result) -> None:
    _insert_payments(db_url, "bench-dl", n, "pending")
    receiver.log(clear=True)
    log(f"deliver: one process, --once --concurrency {CONCURRENCY}, {n} events")
    r_cpu0 = receiver.cpu_s()
    wall1, cpus1, sent1 = _deliver_processes(lab, env, 1, "deliver-p1")
    receiver_cpu = receiver.cpu_s() - r_cpu0
    arrived = receiver.log(clear=True)
    if sent1 != [n] or len({i for i, _ in arrived}) != n or _delivered(db_url) != n:
        raise RuntimeError(f"one process delivered {sent1}, the receiver saw {len(arrived)}, expected {n}")
    log(f"deliver: the floor, {CONCURRENCY} threads of one requests session, {n} signed bodies")
    floor_wall, floor_cpu, floor_ok = _bare_client(db_url, receiver.url, secret)
    receiver.log(clear=True)
    if floor_ok != n:
        raise RuntimeError(f"the bare client got {floor_ok} 2xx answers of {n}")

    _make_pending_again(db_url)
    log(f"deliver: two processes at once over the same {n} events")
    wall2, cpus2, sent2 = _deliver_processes(lab, env, 2, "deliver-p2")
    arrived2 = [i for i, _ in receiver.log(clear=True)]
    duplicates = len(arrived2) - len(set(arrived2))
    if sum(sent2) != n or len(set(arrived2)) != n or duplicates or _delivered(db_url) != n:
        raise RuntimeError(f"two processes delivered {sent2}; the receiver saw {len(arrived2)} "
                           f"({duplicates} twice), expected {n} once each")
    rate1, rate2, floor_rate = n / wall1, n / wall2, n / floor_wall
    result.metrics.update({
        "events": n, "concurrency": CONCURRENCY,
        "deliver_wall_s": round(wall1, 3), "deliveries_per_s": round(rate1, 1),
        "cpu_ms_per_delivery": round(cpus1[0] * 1000 / n, 3),
        "receiver_cpu_ms_per_request": round(receiver_cpu * 1000 / n, 3),
        "floor_per_s": round(floor_rate, 1), "floor_cpu_ms_per_request": round(floor_cpu * 1000 / n, 3),
        "deliver_vs_floor": round(rate1 / floor_rate, 3),
        "two_processes_per_s": round(rate2, 1), "two_processes_delivered_each": sent2,
        "two_processes_cpu_ms_per_delivery": round(sum(cpus2) * 1000 / n, 3),
        "two_vs_one": round(rate2 / rate1, 3), "two_processes_duplicates": duplicates,
    })
    result.targets += [
        Target("deliveries/s, one process, concurrency 16", round(rate1, 1), 1500, ">=", "/s"),
        Target("deliver CPU per delivery", round(cpus1[0] * 1000 / n, 3), 0.5, "<=", "ms"),
        Target("two processes / one", round(rate2 / rate1, 3), 1.7, ">=", "x"),
        Target("deliveries sent twice by two processes", duplicates, 0, "<=", ""),
    ]


def _latency(lab: Lab, env: dict[str, str], db_url: str, receiver: Receiver, rate: int, seconds: float,
             result: Result) -> None:
    total = int(rate * seconds)
    warm = 20
    order_ids = _insert_payments(db_url, "bench-lat", total + warm, "created")  # 'created' makes no event
    args = (sys.executable, "-m", "midpay", "deliver", "--concurrency", str(CONCURRENCY))
    with (lab.work / "deliver-latency.stderr").open("wb") as ferr:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=ferr, env=env, cwd=lab.work)
    committed: dict[str, float] = {}
    try:
        receiver.log(clear=True)
        with psycopg.connect(db_url, autocommit=True) as conn:
            change = "UPDATE payment_transactions SET status = 'pending', updated_at = now() WHERE order_id = %s"
            for order_id in order_ids[:warm]:  # the process is up, its pools open, its plans made
                conn.execute(change, (order_id,))
            _wait_for(receiver, warm, 60)
            receiver.log(clear=True)
            log(f"deliver: latency at {rate} changes/s for {seconds:g} s, one running deliver")
            started = time.perf_counter()
            for k, order_id in enumerate(order_ids[warm:]):
                pause = started + k / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                conn.execute(change, (order_id,))
                committed[order_id] = time.time()
            writing = time.perf_counter() - started
        arrived = _wait_for(receiver, total, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    with psycopg.connect(db_url) as conn:
        orders = dict(conn.execute("SELECT id, order_id FROM payment_events WHERE id = ANY(%s)",
                                   ([i for i, _ in arrived],)).fetchall())
    latencies = [(t - committed[orders[i]]) * 1000 for i, t in arrived if orders.get(i) in committed]
    if len(latencies) != total:
        raise RuntimeError(f"{len(latencies)} of {total} changes reached the receiver")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    result.metrics.update({
        "latency_changes": total, "latency_rate_per_s": rate, "latency_achieved_rate_per_s": round(total / writing, 1),
        "latency_p50_ms": round(p50, 1), "latency_p99_ms": round(p99, 1),
        "latency_max_ms": round(max(latencies), 1),
    })
    result.targets += [
        Target(f"commit → receiver p50 at {rate}/s", round(p50, 1), 50, "<=", "ms"),
        Target(f"commit → receiver p99 at {rate}/s", round(p99, 1), 250, "<=", "ms"),
    ]


def _wait_for(receiver: Receiver, count: int, timeout: float) -> list[tuple[str, float]]:
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, float]] = []
    while True:
        seen = receiver.log()
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def _trigger_cost(lab: Lab, m: int, repeats: int, result: Result) -> None:
    """Reconcile settling ``m`` orders, the outbox trigger enabled and disabled, alternating.

    A database of its own (reconcile checks every open row), with one endpoint taking every
    event, so each change also writes its deliveries; nobody sends them.
    """
    db_url = lab.fresh_db("deliver_trigger")
    _add_endpoint(lab, midpay_env(lab, db_url, None), "http://127.0.0.1:9/hooks")
    order_ids = [f"bench-tc-{i:06d}" for i in range(m)]
    amounts = [20_000 + i for i in range(m)]
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        log(f"deliver: charging and paying {m} orders in the sandbox (the trigger's cost)")
        answers = charge_orders(sandbox.url, order_ids, amounts)
        pay_orders(sandbox.url, order_ids)
        created = datetime.now(UTC) - timedelta(minutes=10)
        with psycopg.connect(db_url) as conn:
            _set_trigger(conn, enabled=False)
            with conn.transaction():
                rows = ((a["order_id"], amount, "gopay", "pending", a["transaction_id"], Jsonb(a), created, created)
                        for a, amount in zip(answers, amounts, strict=True))
                copy_rows(conn, "payment_transactions", ("order_id", "gross_amount", "payment_type", "status",
                                                         "midtrans_transaction_id", "midtrans_response_json",
                                                         "created_at", "updated_at"), rows)
            _set_trigger(conn, enabled=True)
        env = midpay_env(lab, db_url, sandbox.url)
        walls: dict[bool, list[float]] = {True: [], False: []}
        for k in range(repeats):
            for enabled in (True, False) if k % 2 == 0 else (False, True):
                _reset_open(db_url)
                with psycopg.connect(db_url, autocommit=True) as conn:
                    _set_trigger(conn, enabled=enabled)
                log(f"deliver: reconcile of {m} orders, trigger {'enabled' if enabled else 'disabled'}")
                run = run_midpay(lab, env, "reconcile", "--concurrency", str(CONCURRENCY), "--min-age", "0",
                                 "--json", name=f"reconcile-trigger-{enabled}-{k}")
                if run.returncode != 0 or run.json()["summary"]["changed"] != m:
                    raise RuntimeError(f"reconcile exited {run.returncode}: {run.stderr[-2000:]}")
                walls[enabled].append(run.wall)
        with psycopg.connect(db_url, autocommit=True) as conn:
            _set_trigger(conn, enabled=True)
    on, off = m / median(walls[True]), m / median(walls[False])
    cost = (1 - on / off) * 100
    result.metrics.update({
        "trigger_orders": m, "reconcile_per_s_trigger_on": round(on, 1), "reconcile_per_s_trigger_off": round(off, 1),
        "reconcile_walls_on_s": [round(w, 3) for w in walls[True]],
        "reconcile_walls_off_s": [round(w, 3) for w in walls[False]],
        "trigger_cost_pct": round(cost, 1),
    })
    result.targets.append(Target("reconcile throughput lost to the outbox", round(cost, 1), 10, "<=", "%"))


def _set_trigger(conn: psycopg.Connection[Any], *, enabled: bool) -> None:
    conn.execute(f"ALTER TABLE payment_transactions {'ENABLE' if enabled else 'DISABLE'} TRIGGER {TRIGGER}")


def _reset_open(db_url: str) -> None:
    """The orders open and never checked, written with the trigger off (the reset is no change to announce)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _set_trigger(conn, enabled=False)
        conn.execute("UPDATE payment_transactions SET status = 'pending', paid_at = NULL, last_checked_at = NULL")
        conn.execute("VACUUM ANALYZE payment_transactions, payment_events, webhook_deliveries")


PARTS = ("throughput", "latency", "trigger")


def run(lab: Lab, *, quick: bool, short: bool = False, events: int | None = None, rate: int | None = None,
        seconds: float | None = None, trigger_orders: int | None = None, parts: Sequence[str] = PARTS) -> Result:
    n = events or (200 if quick else 20_000)
    rate = rate or (50 if quick else 200)
    seconds = seconds or (3.0 if quick else 10.0 if short else 30.0)
    m = trigger_orders or (50 if quick else 1000)
    result = Result("deliver")
    if {"throughput", "latency"} & set(parts):
        db_url = lab.fresh_db("deliver")
        receiver = Receiver(lab)
        try:
            env = midpay_env(lab, db_url, None)
            endpoint = _add_endpoint(lab, env, receiver.url + "/hooks")
            if "throughput" in parts:
                _throughput(lab, env, db_url, receiver, endpoint["secret"], n, result)
            if "latency" in parts:
                _latency(lab, env, db_url, receiver, rate, seconds, result)
        finally:
            receiver.stop()
    if "trigger" in parts:
        _trigger_cost(lab, m, 1 if quick else 2, result)
    result.notes.append(f"load average at the end: {os.getloadavg()[0]:.2f} (2 shared cores: other work adds noise)")
    return result
