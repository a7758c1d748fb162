"""Reconcile at real latency: wall against the concurrency floor, CPU per row, connections held.

N open rows (half settled at Midtrans) against a sandbox answering every call after
``latency`` ms; ``midpay reconcile --concurrency C --min-age 0 --json`` as a subprocess.

* floor: N x latency / C, the time C perfectly overlapped calls would take;
* start-up: the wall of ``midpay reconcile`` over no due rows (imports, connections);
* CPU ms/row: user + system CPU of the midpay process (wait4) / N;
* peak connections: pg_stat_activity rows for the database, polled during the run;
* the sandbox's own floor: a bare threaded requests loop (a Session per thread) over
  the same status calls at the same concurrency, with the sandbox's CPU over that
  loop and over midpay's run, so that a CPU-bound sandbox is seen, not measured as midpay.
"""

from __future__ import annotations

from common import Lab, Result, SandboxProcess, Target, log, midpay_env, run_midpay
from rc_lab import ConnectionPeak, bare_client_floor, open_rows, process_cpu_s, reset_rows, settled_count

WALL_LIMIT = 1.15  # x the floor, plus start-up
CPU_LIMIT_MS = 1.0  # per row


def run(
    lab: Lab, *, quick: bool, rows: int | None = None, latency_ms: int | None = None, concurrency: int = 128
) -> Result:
    n = rows or (400 if quick else 20_000)
    latency = latency_ms if latency_ms is not None else (50 if quick else 200)
    result = Result("latency")
    db_url = lab.fresh_db("latency")
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        order_ids, paid = open_rows(sandbox.url, db_url, n, prefix="bench-lat")
        sandbox.set_latency(latency)
        assert sandbox._proc is not None
        sandbox_pid = sandbox._proc.pid
        env = midpay_env(lab, db_url, sandbox.url)

        log(f"latency: bare requests loop, {n} status calls at concurrency {concurrency}")
        cpu0 = process_cpu_s(sandbox_pid)
        bare = bare_client_floor(sandbox.url, order_ids, concurrency=concurrency)
        bare_sandbox_cpu = process_cpu_s(sandbox_pid) - cpu0

        # Start-up: the same command where nothing is due.
        startup = _startup(lab, env, concurrency)

        reset_rows(db_url)
        log(f"latency: midpay reconcile --concurrency {concurrency} over {n} rows at {latency} ms")
        cpu0 = process_cpu_s(sandbox_pid)
        with ConnectionPeak(lab.admin_url, db_url) as peak:
            proc = run_midpay(
                lab, env, "reconcile", "--concurrency", str(concurrency), "--min-age", "0", "--json",
                name="latency", measure_rss=True, timeout=1800,
            )
        midpay_sandbox_cpu = process_cpu_s(sandbox_pid) - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"midpay reconcile exited {proc.returncode}: {proc.stderr[-2000:]}")
        summary = proc.json()["summary"]
        if summary != {"checked": n, "changed": len(paid), "unchanged": n - len(paid), "errors": 0}:
            raise RuntimeError(f"unexpected reconcile summary {summary}")
        settled = settled_count(db_url)
        if settled != len(paid):
            raise RuntimeError(f"after reconcile {settled} rows are settled, expected {len(paid)}")

    floor = n * latency / 1000 / concurrency
    cpu_ms = (proc.cpu_s or 0.0) * 1000 / n
    allowed = WALL_LIMIT * floor + startup
    result.metrics.update(
        {
            "rows": n,
            "latency_ms": latency,
            "concurrency": concurrency,
            "wall_s": round(proc.wall, 3),
            "floor_s": round(floor, 3),
            "startup_s": round(startup, 3),
            "wall_vs_floor": round(proc.wall / floor, 3),
            "wall_minus_startup_vs_floor": round((proc.wall - startup) / floor, 3),
            "cpu_s": proc.cpu_s,
            "cpu_ms_per_row": round(cpu_ms, 3),
            "peak_rss_mb": round((proc.max_rss_kb or 0) / 1024, 1),
            "peak_pg_connections": peak.peak,
            "max_connections": peak.max_connections,
            "bare_client_wall_s": bare["wall_s"],
            "bare_client_vs_floor": round(bare["wall_s"] / floor, 3),
            "bare_client_cpu_ms_per_row": bare["cpu_ms_per_row"],
            "sandbox_cpu_ms_per_row_bare": round(bare_sandbox_cpu * 1000 / n, 3),
            "sandbox_cpu_ms_per_row_midpay": round(midpay_sandbox_cpu * 1000 / n, 3),
            "summary": summary,
        }
    )
    result.targets.append(
        Target(f"reconcile wall <= {WALL_LIMIT} x floor + start-up ({round(allowed, 2)} s)", round(proc.wall, 3),
               round(allowed, 3), "<=", "s")
    )
    result.targets.append(Target("reconcile CPU per row", round(cpu_ms, 3), CPU_LIMIT_MS, "<=", "ms"))
    result.targets.append(Target("PostgreSQL connections held by one run", float(peak.peak), 4.0, "<=", ""))
    if quick:
        result.notes.append("--quick: a few hundred rows; start-up dominates, the targets say nothing")
    return result


def _startup(lab: Lab, env: dict[str, str], concurrency: int) -> float:
    """Wall of a reconcile run with nothing due: imports, configuration, connections, the empty claim."""
    runs = []
    for attempt in range(3):
        proc = run_midpay(
            lab, env, "reconcile", "--concurrency", str(concurrency), "--min-age", "86400", "--json",
            name=f"latency-startup-{attempt}",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"midpay reconcile (nothing due) exited {proc.returncode}: {proc.stderr[-2000:]}")
        runs.append(proc.wall)
    return sorted(runs)[1]
