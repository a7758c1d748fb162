"""The benchmarks still run, and the start-up path stays light.

`python bench/run.py --quick` runs every benchmark at tiny sizes (seconds) against its
own embedded PostgreSQL and sandbox process; this only checks that each completes and
reports the figures docs/BENCHMARKS.md talks about. No timing is asserted here: timings
on a shared CI machine say nothing. The import test is a behaviour: `midpay --help` and
`--version` must not import the database or HTTP stacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

EXPECTED_METRICS = {
    "reconcile": {
        "orders",
        "latency_ms",
        "concurrency",
        "midpay_wall_s",
        "floor_s",
        "midpay_vs_floor",
        "official_loop_wall_s",
        "speedup_vs_official_loop",
        "summary",
    },
    "latency": {
        "rows",
        "latency_ms",
        "concurrency",
        "wall_s",
        "floor_s",
        "startup_s",
        "wall_vs_floor",
        "cpu_ms_per_row",
        "peak_pg_connections",
        "max_connections",
        "bare_client_wall_s",
        "sandbox_cpu_ms_per_row_midpay",
        "summary",
    },
    "scaleout": {
        "rows",
        "latency_ms",
        "processes",
        "rows_per_s_p1",
        "rows_per_s_p4",
        "speedup_p4",
        "peak_pg_connections_p4",
        "peak_pg_connections_p4_c128",
        "max_connections",
    },
    "replay": {
        "events",
        "midpay_wall_s",
        "midpay_events_per_s",
        "pgbench_tps",
        "midpay_vs_pgbench",
        "per_file_mean_s",
        "per_file_extrapolated_s",
        "summary",
        "confirmed_vs_floor",
        "offline_c1_vs_pgbench",
        "offline_c4_vs_pgbench",
    },
    "startup": {
        "midpay --help median_ms",
        "midpay --version median_ms",
        "minimal --help median_ms",
        "minimal --version median_ms",
        "help_ratio",
        "version_ratio",
        "heavy_modules_on_help",
        "heavy_modules_on_version",
        "importtime_top_self",
    },
    "scale": {
        "payments",
        "open",
        "select_due_seq_scans",
        "select_due_execution_ms",
        "claim_due_seq_scans",
        "claim_due_execution_ms",
        "get_payment_ms_median",
        "get_payment_ms_p99",
        "select_due_plan",
    },
    "memory": {"open_rows", "peak_rss_mb", "wall_s", "summary"},
    "listen": {
        "notifications",
        "senders",
        "confirmation_latency_ms",
        "listen_per_s_w1",
        "listen_p50_ms_w1",
        "listen_p99_ms_w1",
        "bare_per_s_w1",
        "listen_vs_bare_w1",
        "listen_peak_connections_w1",
        "summary",
    },
    "deliver": {
        "events",
        "deliveries_per_s",
        "cpu_ms_per_delivery",
        "floor_per_s",
        "deliver_vs_floor",
        "two_vs_one",
        "two_processes_duplicates",
        "latency_p50_ms",
        "latency_p99_ms",
        "trigger_cost_pct",
    },
}
HEAVY = ("psycopg", "psycopg_pool", "requests", "urllib3", "rich")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.timeout(900)
def test_quick_benchmarks_complete_and_report_their_figures(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=850,
        cwd=tmp_path,
        env={**_clean_env(), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "midpay benchmarks" in proc.stdout
    document: dict[str, Any] = json.loads(out.read_text())
    assert document["quick"] is True
    assert document["failures"] == {}
    assert set(document["benchmarks"]) == set(EXPECTED_METRICS)
    for name, keys in EXPECTED_METRICS.items():
        bench = document["benchmarks"][name]
        assert keys <= set(bench["metrics"]), (name, keys - set(bench["metrics"]))
        assert bench["targets"], name
        for target in bench["targets"]:
            assert {"name", "measured", "limit", "op", "met"} <= set(target)
    # What the runs did, not how fast: every row was checked, every notification applied.
    assert document["benchmarks"]["reconcile"]["metrics"]["summary"]["errors"] == 0
    latency = document["benchmarks"]["latency"]["metrics"]
    assert latency["summary"]["checked"] == latency["rows"] and latency["summary"]["errors"] == 0
    scaleout = document["benchmarks"]["scaleout"]["metrics"]
    assert sum(scaleout["checked_per_process_p4"]) == scaleout["rows"]  # each row checked once (the bench verifies)
    replay = document["benchmarks"]["replay"]["metrics"]
    assert replay["summary"]["applied"] == replay["events"]
    memory = document["benchmarks"]["memory"]["metrics"]
    assert memory["summary"]["checked"] == memory["open_rows"]
    listen = document["benchmarks"]["listen"]["metrics"]
    assert listen["summary"] == {"runs": 2, "answered_200": 2 * listen["notifications"]}
    deliver = document["benchmarks"]["deliver"]["metrics"]
    assert sum(deliver["two_processes_delivered_each"]) == deliver["events"]  # the bench checks each arrived once
    assert deliver["two_processes_duplicates"] == 0


_PROBE = """
import json, runpy, sys
heavy = set(json.loads(sys.argv[2]))
sys.argv = ["midpay", *json.loads(sys.argv[1])]
try:
    runpy.run_module("midpay", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
sys.stderr.write("LOADED=" + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & heavy)) + "\\n")
"""


def _heavy_modules_after(*args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=REPO,
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("LOADED=")]
    assert lines, proc.stderr[-2000:]
    loaded: list[str] = json.loads(lines[-1].removeprefix("LOADED="))
    return loaded


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("reconcile", "--help")])
def test_help_and_version_import_neither_the_database_nor_the_http_stack(args: tuple[str, ...]) -> None:
    assert _heavy_modules_after(*args) == []


def test_the_import_probe_sees_heavy_modules_when_they_are_imported() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, midpay.db, midpay.midtrans.gateway; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=REPO,
        check=True,
    )
    assert {"psycopg", "requests"} <= set(json.loads(proc.stdout))
