"""Scale-out: 1, 4 and 8 reconcile processes started together over the same open rows.

N open rows (half settled at Midtrans), a sandbox answering after ``latency`` ms; for
each process count P, every row is reset to never checked, the sandbox's counters are
zeroed, and P ``midpay reconcile --concurrency C --min-age 0 --json`` processes start at
once. Wall is from the first spawn to the last exit; throughput is N / wall.

* each row checked exactly once: the sandbox counted one status call per order, and
  the processes' summaries add up to N checked, N/2 changed;
* peak PostgreSQL connections to the database while they run (pg_stat_activity);
* then P_max processes at --concurrency 128: the peak against max_connections.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from common import MIDPAY, Lab, Result, SandboxProcess, Target, log, midpay_env
from rc_lab import ConnectionPeak, open_rows, reset_rows, settled_count

SCALE_LIMIT = 6.4  # x one process's throughput, with 8
BIG_CONCURRENCY = 128


def run(
    lab: Lab, *, quick: bool, rows: int | None = None, latency_ms: int | None = None,
    processes: list[int] | None = None, concurrency: int = 16,
) -> Result:
    n = rows or (192 if quick else 8000)
    latency = latency_ms if latency_ms is not None else (50 if quick else 400)
    counts = processes or ([1, 4] if quick else [1, 4, 8])
    result = Result("scaleout")
    db_url = lab.fresh_db("scaleout")
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        _, paid = open_rows(sandbox.url, db_url, n, prefix="bench-so")
        sandbox.set_latency(latency)
        env = midpay_env(lab, db_url, sandbox.url)
        throughput: dict[int, float] = {}
        for count in counts:
            log(f"scaleout: {count} x midpay reconcile --concurrency {concurrency} over {n} rows at {latency} ms")
            figures = _together(lab, sandbox, env, db_url, n, len(paid), count, concurrency)
            throughput[count] = figures["rows_per_s"]
            for key, value in figures.items():
                result.metrics[f"{key}_p{count}"] = value
        big = max(counts)
        log(f"scaleout: {big} x midpay reconcile --concurrency {BIG_CONCURRENCY} (connections)")
        figures = _together(lab, sandbox, env, db_url, n, len(paid), big, BIG_CONCURRENCY)
        result.metrics[f"peak_pg_connections_p{big}_c{BIG_CONCURRENCY}"] = figures["peak_pg_connections"]
        result.metrics[f"wall_s_p{big}_c{BIG_CONCURRENCY}"] = figures["wall_s"]
        result.metrics["max_connections"] = figures["max_connections"]

    result.metrics.update({"rows": n, "latency_ms": latency, "concurrency": concurrency, "processes": counts})
    one = throughput[counts[0]]
    for count in counts[1:]:
        result.metrics[f"speedup_p{count}"] = round(throughput[count] / one, 2)
    speedup = round(throughput[big] / one, 2)
    limit = SCALE_LIMIT if big == 8 else round(SCALE_LIMIT * big / 8, 2)
    result.targets.append(Target(f"throughput, {big} processes / 1", speedup, limit, ">=", "x"))
    result.targets.append(
        Target(f"peak PG connections, {big} processes at --concurrency {BIG_CONCURRENCY}",
               float(result.metrics[f"peak_pg_connections_p{big}_c{BIG_CONCURRENCY}"]), 4.0 * big, "<=")
    )
    if quick:
        result.notes.append("--quick: a few hundred rows, 1 and 4 processes; start-up dominates, targets say nothing")
    return result


def _together(
    lab: Lab, sandbox: SandboxProcess, env: dict[str, str], db_url: str, n: int, paid: int, count: int,
    concurrency: int,
) -> dict[str, Any]:
    """Start ``count`` runs at once; check each row was asked about exactly once; wall, throughput, peak connections."""
    reset_rows(db_url)
    sandbox.control("POST", "/_sandbox/reset")
    outs = [lab.work / f"scaleout-p{count}-c{concurrency}-{i}.stdout" for i in range(count)]
    errs = [lab.work / f"scaleout-p{count}-c{concurrency}-{i}.stderr" for i in range(count)]
    # --recheck-after longer than any run: a row another process checked more than 30 s ago
    # (the default) is legitimately due again, so at 8,000 rows x 400 ms (50 s with 4
    # processes) "asked exactly once" would fail for the recheck, not for the leases.
    args = ("reconcile", "--concurrency", str(concurrency), "--min-age", "0", "--recheck-after", "3600", "--json")
    with ConnectionPeak(lab.admin_url, db_url) as peak:
        started = time.perf_counter()
        procs = [
            subprocess.Popen((*MIDPAY, *args), stdout=out.open("wb"), stderr=err.open("wb"), env=env, cwd=lab.work)
            for out, err in zip(outs, errs, strict=True)
        ]
        codes = [p.wait(1800) for p in procs]
        wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"reconcile exit codes {codes}: {errs[codes.index(max(codes))].read_text()[-2000:]}")
    import json

    summaries = [json.loads(out.read_text())["summary"] for out in outs]
    checked = sum(s["checked"] for s in summaries)
    changed = sum(s["changed"] for s in summaries)
    calls = sandbox.control("GET", "/_sandbox/stats")["status_checks"]
    twice = sum(1 for c in calls.values() if c != 1)
    if checked != n or changed != paid or len(calls) != n or twice:
        raise RuntimeError(f"{count} runs: checked {checked}, changed {changed}, {len(calls)} orders asked, "
                           f"{twice} asked more than once (expected {n}, {paid}, {n}, 0)")
    if settled_count(db_url) != paid:
        raise RuntimeError(f"{count} runs left {settled_count(db_url)} rows settled, expected {paid}")
    return {
        "wall_s": round(wall, 3),
        "rows_per_s": round(n / wall, 1),
        "checked_per_process": [s["checked"] for s in summaries],
        "peak_pg_connections": peak.peak,
        "max_connections": peak.max_connections,
    }
