"""The sandbox's own CPU per Get Status request, measured with a bare client.

    python bench/bench_sandbox.py [--latency-ms 200] [--threads 64] [--seconds 10] [--orders 20000]

Starts ``midpay sandbox serve --quiet`` in its own process, seeds ``--orders`` orders
(a tenth settled) through ``/_sandbox/seed`` (or charges them over HTTP when the
sandbox has no seed endpoint: an older one, with ``--pythonpath``), then ``--threads``
threads, each with its own keep-alive ``requests.Session``, ask Get Status of random
orders for ``--seconds``. The sandbox's CPU time (user + system, from /proc) over that
window, divided by the answers, is the figure; the client's own CPU is reported beside
it. Standalone: no database, not part of bench/run.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
KEY = "SB-Mid-server-bench-sandbox-cpu"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _seed(url: str, session: requests.Session, count: int) -> list[str]:
    ids = [f"cpu-{i}" for i in range(count)]
    seeded = session.post(f"{url}/_sandbox/seed", json={"order_ids": ids, "settle_fraction": 0.1}, timeout=120)
    if seeded.status_code == 200:
        return ids
    for order_id in ids:  # an older sandbox: charge one by one
        body = {"payment_type": "gopay", "transaction_details": {"order_id": order_id, "gross_amount": 10000}}
        session.post(f"{url}/v2/charge", json=body, timeout=30).raise_for_status()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--pythonpath", default=str(REPO), help="Where the midpay under test lives.")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"MIDTRANS_SERVER_KEY": KEY, "PYTHONPATH": args.pythonpath})
    command = [sys.executable, "-m", "midpay", "sandbox", "serve", "--port", "0", "--latency-ms", "0"]
    if "--quiet" in subprocess.run([*command[:5], "--help"], capture_output=True, text=True, env=env).stdout:
        command.append("--quiet")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = ""
        while not url:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("the sandbox did not start")
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else ""
        auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        with requests.Session() as setup:
            setup.headers["Authorization"] = auth
            ids = _seed(url, setup, args.orders)
            setup.post(f"{url}/_sandbox/faults", json={"latency_ms": args.latency_ms}, timeout=10).raise_for_status()

        counts = [0] * args.threads
        stop = threading.Event()
        started = threading.Barrier(args.threads + 1)

        def worker(n: int) -> None:
            session = requests.Session()
            session.headers["Authorization"] = auth
            pick = random.Random(n).choice
            started.wait()
            while not stop.is_set():
                response = session.get(f"{url}/v2/{pick(ids)}/status", timeout=30)
                if response.status_code == 200:
                    counts[n] += 1
            session.close()

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        started.wait()
        time.sleep(min(2.0, args.seconds / 4))  # connections open, threads warmed up
        base_counts, cpu0, own0, wall0 = sum(counts), _cpu_seconds(proc.pid), time.process_time(), time.monotonic()
        time.sleep(args.seconds)
        answers, cpu1, own1, wall1 = sum(counts), _cpu_seconds(proc.pid), time.process_time(), time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        n = answers - base_counts
        wall = wall1 - wall0
        print(json.dumps({
            "latency_ms": args.latency_ms,
            "threads": args.threads,
            "orders": args.orders,
            "answers": n,
            "answers_per_second": round(n / wall, 1),
            "sandbox_cpu_us_per_request": round((cpu1 - cpu0) / n * 1e6, 1) if n else None,
            "sandbox_cpu_share_of_one_core": round((cpu1 - cpu0) / wall, 3),
            "client_cpu_us_per_request": round((own1 - own0) / n * 1e6, 1) if n else None,
        }, indent=2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
