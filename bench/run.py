"""Run midpay's benchmarks and print one table: ``python bench/run.py [--quick]``.

    python bench/run.py                  the full run (about 8 to 9 minutes on 2 cores)
    python bench/run.py --quick          tiny sizes, seconds: the CI smoke version
    python bench/run.py --only replay,startup
    python bench/run.py --only listen --listen-workers 1,2
    python bench/run.py --memory-rows 20000
    python bench/run.py --only latency --latency-rows 4000
    python bench/run.py --only scaleout --scaleout-rows 2000 --scaleout-processes 1,8
    python bench/run.py --only deliver --deliver-short

Each run starts its own embedded PostgreSQL under a temporary MIDPAY_HOME, a fresh
database per benchmark and its own sandbox process, and removes all of it at the end.
The results also go to bench/results/latest.json (latest-quick.json with --quick)
and a timestamped copy, or to --json-out. See docs/BENCHMARKS.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, Lab, Result, log

BENCHES = ("reconcile", "latency", "scaleout", "replay", "startup", "scale", "memory", "listen", "deliver")


def _run_one(name: str, lab: Lab, args: argparse.Namespace) -> Result:
    if name == "reconcile":
        import bench_reconcile

        return bench_reconcile.run(lab, quick=args.quick, orders=args.reconcile_orders, repeats=args.reconcile_repeats)
    if name == "latency":
        import bench_latency

        return bench_latency.run(
            lab, quick=args.quick, rows=args.latency_rows, latency_ms=args.latency_ms,
            concurrency=args.latency_concurrency,
        )
    if name == "scaleout":
        import bench_scaleout

        processes = [int(p) for p in args.scaleout_processes.split(",")] if args.scaleout_processes else None
        return bench_scaleout.run(
            lab, quick=args.quick, rows=args.scaleout_rows, latency_ms=args.scaleout_latency_ms, processes=processes,
            concurrency=args.scaleout_concurrency,
        )
    if name == "replay":
        import bench_replay

        return bench_replay.run(
            lab, quick=args.quick, events=args.replay_events, confirmed_orders=args.replay_confirmed_orders,
            offline_orders=args.replay_offline_orders,
        )
    if name == "startup":
        import bench_startup

        return bench_startup.run(lab, quick=args.quick, runs=args.startup_runs)
    if name == "scale":
        import bench_scale

        return bench_scale.run(lab, quick=args.quick, rows=args.scale_rows)
    if name == "memory":
        import bench_memory

        return bench_memory.run(lab, quick=args.quick, rows=args.memory_rows, in_sandbox=args.memory_in_sandbox)
    if name == "listen":
        import bench_listen

        workers = [int(w) for w in args.listen_workers.split(",")] if args.listen_workers else None
        return bench_listen.run(
            lab,
            quick=args.quick,
            notifications=args.listen_notifications,
            latency_ms=args.listen_latency_ms,
            workers=workers,
            threads=args.listen_threads,
        )
    if name == "deliver":
        import bench_deliver

        return bench_deliver.run(
            lab, quick=args.quick, short=args.deliver_short, events=args.deliver_events, rate=args.deliver_rate,
            seconds=args.deliver_seconds, trigger_orders=args.deliver_trigger_orders,
            parts=[p.strip() for p in args.deliver_parts.split(",")] if args.deliver_parts else bench_deliver.PARTS,
        )
    raise ValueError(name)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _compact(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) and "module" in v for v in value):
        return ", ".join(f"{v['module']} {v['self_ms']} ms" for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return _fmt(value)


def render(results: list[Result], *, quick: bool) -> None:
    """The targets table, then the other figures of each benchmark."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    title = "midpay benchmarks" + (" (--quick: tiny sizes, targets not meaningful)" if quick else "")
    table = Table(title=title)
    for column in ("benchmark", "target", "measured", "limit", "met"):
        table.add_column(column)
    for r in results:
        for t in r.targets:
            met = {True: "yes", False: "NO", None: "n/a"}[t.met]
            table.add_row(
                r.bench, t.name, f"{_fmt(t.measured)} {t.unit}".strip(), f"{t.op} {_fmt(t.limit)} {t.unit}", met
            )
    console.print(table)
    figures = Table(title="figures")
    figures.add_column("benchmark")
    figures.add_column("figure")
    figures.add_column("value", overflow="fold")
    for r in results:
        for key, value in r.metrics.items():
            if key.endswith("_plan"):
                continue  # the full EXPLAIN text is in the JSON document
            figures.add_row(r.bench, key, _compact(value))
        for note in r.notes:
            figures.add_row(r.bench, "note", note)
    console.print(figures)


def _revision() -> dict[str, Any]:
    """The commit measured, and whether midpay/ or sql/ differ from it."""
    import subprocess

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "midpay_modified": bool(git("status", "--porcelain", "midpay", "sql")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: completes in seconds (CI smoke)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--json-out", type=Path, help="write the results document here")
    parser.add_argument("--json", action="store_true", help="print the results document instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    parser.add_argument("--database-url", help="use this PostgreSQL server (needs CREATEDB) instead of a private one")
    parser.add_argument("--reconcile-orders", type=int, help="orders for the reconcile benchmark (default 2000)")
    parser.add_argument(
        "--reconcile-repeats", type=int, help="midpay reconcile runs, median reported (default 3; 1 with --quick)"
    )
    parser.add_argument("--latency-rows", type=int, help="open rows for the latency benchmark (default 20000)")
    parser.add_argument("--latency-ms", type=int, help="sandbox latency for the latency benchmark (default 200)")
    parser.add_argument(
        "--latency-concurrency", type=int, default=128, help="reconcile --concurrency in the latency benchmark"
    )
    parser.add_argument("--scaleout-rows", type=int, help="open rows for the scale-out benchmark (default 8000)")
    parser.add_argument("--scaleout-latency-ms", type=int, help="sandbox latency for scale-out (default 400)")
    parser.add_argument("--scaleout-processes", help="comma-separated process counts for scale-out (default 1,4,8)")
    parser.add_argument(
        "--scaleout-concurrency", type=int, default=16, help="reconcile --concurrency of each scale-out process"
    )
    parser.add_argument("--replay-events", type=int, help="notifications for the replay benchmark (default 10000)")
    parser.add_argument(
        "--replay-confirmed-orders", type=int, help="orders (5 bodies each) for the confirmed replay (default 2000)"
    )
    parser.add_argument(
        "--replay-offline-orders", type=int, help="orders (2 bodies each) for the offline replay (default 5000)"
    )
    parser.add_argument("--startup-runs", type=int, help="runs per command for the start-up benchmark (default 20)")
    parser.add_argument("--scale-rows", type=int, help="payments for the scale benchmark (default 1000000)")
    parser.add_argument("--memory-rows", type=int, help="open rows for the memory benchmark (default 100000)")
    parser.add_argument(
        "--memory-in-sandbox",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="charge the memory benchmark's orders in the sandbox first (default: they answer 404)",
    )
    parser.add_argument("--listen-notifications", type=int, help="notifications per listen run (default 2000)")
    parser.add_argument("--listen-workers", help="comma-separated --workers values for listen (default 1,2,4)")
    parser.add_argument("--listen-latency-ms", type=int, help="confirmation latency the sandbox adds (default 50)")
    parser.add_argument("--listen-threads", type=int, help="threads per listen worker (default: listen's default)")
    parser.add_argument("--deliver-events", type=int, help="events for deliver's throughput (default 20000)")
    parser.add_argument("--deliver-rate", type=int, help="changes per second for deliver's latency (default 200)")
    parser.add_argument("--deliver-seconds", type=float, help="seconds of changes for deliver's latency (default 30)")
    parser.add_argument("--deliver-short", action="store_true", help="deliver's latency for 10 s instead of 30")
    parser.add_argument(
        "--deliver-trigger-orders", type=int, help="orders reconciled with the outbox trigger on and off (default 1000)"
    )
    parser.add_argument("--deliver-parts", help="comma-separated subset of throughput,latency,trigger (default all)")
    args = parser.parse_args(argv)
    wanted = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(wanted) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    started = time.time()
    results: list[Result] = []
    failures: dict[str, str] = {}
    document: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "revision": _revision(),
    }
    with Lab(keep=args.keep, database_url=args.database_url) as lab:
        document["machine"]["postgresql"] = lab.server_settings()
        for name in [b for b in BENCHES if b in wanted]:
            t0 = time.perf_counter()
            try:
                result = _run_one(name, lab, args)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the other benchmarks
                traceback.print_exc()
                failures[name] = f"{exc.__class__.__name__}: {exc}"
                log(f"{name}: FAILED: {failures[name]}")
                continue
            result.metrics["bench_seconds"] = round(time.perf_counter() - t0, 1)
            log(f"{name}: done in {result.metrics['bench_seconds']} s")
            results.append(result)
    document["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["total_seconds"] = round(time.time() - started, 1)
    document["benchmarks"] = {r.bench: r.as_dict() for r in results}
    document["failures"] = failures

    text = json.dumps(document, indent=2)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        (RESULTS / f"{'quick' if args.quick else 'full'}-{stamp}.json").write_text(text + "\n")
        (RESULTS / ("latest-quick.json" if args.quick else "latest.json")).write_text(text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        render(results, quick=args.quick)
        log(
            f"total {document['total_seconds']} s; load average {document['machine']['loadavg_at_start']} at start, "
            f"{document['machine']['loadavg_at_end']} at end (other work on this 2-core machine adds noise)"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
