"""Reliability scenarios: load, faults, crashes and hostile input, proven against real processes.

Every scenario records its figures through the ``figures`` fixture. When the environment
names a directory in ``MIDPAY_RELIABILITY_REPORT``, each scenario writes one JSON file
there (events, orders, processes, faults injected, lost, wrongly applied, duration,
outcome); docs/RELIABILITY.md is written from such a run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay import states
from midpay.midtrans.notifications import parse_time

from ..conftest import REPO

REPORT_ENV = "MIDPAY_RELIABILITY_REPORT"
# Read at import: the `env` fixture clears every MIDPAY_* variable while a test runs.
REPORT_DIR = os.environ.get(REPORT_ENV)


# --- figures ---------------------------------------------------------------------------


@dataclass
class Figures:
    """What one scenario did and found; ``lost`` and ``wrongly_applied`` must end at 0."""

    scenario: str
    events: int = 0
    orders: int = 0
    processes: int = 0
    faults_injected: int = 0
    lost: int | None = None
    wrongly_applied: int | None = None
    duration_s: float = 0.0
    outcome: str = "unknown"
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _outcome(item: pytest.Item) -> str:
    report = getattr(item, "rep_call", None) or getattr(item, "rep_setup", None)
    if report is None:
        return "unknown"
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else "xfailed"
    return str(report.outcome)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The scenario's figures, written to $MIDPAY_RELIABILITY_REPORT/<test id>.json afterwards."""
    fig = Figures(scenario=request.node.nodeid.split("::", 1)[-1])
    started = time.monotonic()
    yield fig
    fig.duration_s = round(time.monotonic() - started, 2)
    fig.outcome = _outcome(request.node)
    if REPORT_DIR:
        path = Path(REPORT_DIR)
        path.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.replace("tests/reliability/", ""))
        (path / f"{name}.json").write_text(json.dumps(asdict(fig), indent=2, default=str) + "\n")


# --- processes -------------------------------------------------------------------------


def process_env(env: dict[str, str], **overrides: str | None) -> dict[str, str]:
    """The environment of a real midpay process: the test's, plus overrides (None removes)."""
    merged = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    for name, value in overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


@dataclass
class Proc:
    """A running ``python -m midpay`` whose output goes to files (no pipe can fill up)."""

    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    started: float
    returncode: int | None = None
    elapsed: float | None = None

    def wait(self, timeout: float) -> int:
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"midpay {' '.join(self.args)} still running after {timeout} s (deadlock?)") from None
        self.elapsed = time.monotonic() - self.started
        return self.returncode

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return (
            f"Proc({' '.join(self.args)!r}, rc={self.returncode}, stdout={self.stdout[-1500:]!r}, "
            f"stderr={self.stderr[-1500:]!r})"
        )


def spawn(args: Sequence[str], env: dict[str, str], workdir: Path, *, name: str | None = None) -> Proc:
    """Start ``python -m midpay ARGS`` with exactly ``env``; output lands in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = name or f"p{time.monotonic_ns()}"
    out_path, err_path = workdir / f"{stem}.out", workdir / f"{stem}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        popen = subprocess.Popen(
            [sys.executable, "-m", "midpay", *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            cwd=workdir,
        )
    return Proc(tuple(args), popen, out_path, err_path, time.monotonic())


def run(
    args: Sequence[str], env: dict[str, str], workdir: Path, *, timeout: float = 120, name: str | None = None
) -> Proc:
    proc = spawn(args, env, workdir, name=name)
    proc.wait(timeout)
    return proc


def assert_clean_failure(proc: Proc | Any, code: int) -> None:
    """Exit ``code``, exactly one ``Error: …`` line on stderr, no traceback."""
    returncode = proc.returncode if hasattr(proc, "returncode") else proc.exit_code
    assert returncode == code, proc
    stderr = proc.stderr
    assert "Traceback" not in stderr, proc
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc


# --- database and sandbox helpers ------------------------------------------------------


def rows(url: str) -> dict[str, dict[str, Any]]:
    """Every payment row by order id."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT order_id, status, paid_at, gross_amount, midtrans_transaction_id, updated_at "
            "FROM payment_transactions"
        )
        names = [d.name for d in cur.description or ()]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def count(url: str, query: str, params: Sequence[Any] = ()) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def insert_rows(url: str, orders: dict[str, int], *, status: str = "pending", age_seconds: int = 120) -> None:
    """Payment rows for ``orders`` (order id -> amount), as the charge command leaves them."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES (%s, %s, 'gopay', %s, now() - make_interval(secs => %s))",
            [(order_id, amount, status, age_seconds) for order_id, amount in orders.items()],
        )


def charge_in_sandbox(gateway: Any, orders: dict[str, int]) -> None:
    """Make the sandbox know ``orders`` (pending there), as if each charge had reached Midtrans."""
    for order_id, amount in orders.items():
        gateway.charge(order_id=order_id, gross_amount=amount, idempotency_key=f"seed-{order_id}"[:46])


def sandbox_states(sandbox: Any) -> dict[str, dict[str, Any]]:
    return {o["order_id"]: o for o in sandbox.orders()}


def disagreeing(url: str, sandbox: Any) -> list[str]:
    """Orders whose row says other than Midtrans (the sandbox): another status, or another paid_at.

    paid_at is Midtrans' settlement_time (its transaction_time when it gives none) for a
    state where money was received, and nothing otherwise. Rows of orders the sandbox
    never heard of are not compared.
    """
    truth = sandbox_states(sandbox)
    wrong = []
    for order_id, row in rows(url).items():
        said = truth.get(order_id)
        if said is None:
            continue
        paid_at = None
        if said["transaction_status"] in states.MONEY_STATES:
            when = "settlement_time" if said.get("settlement_time") else "transaction_time"
            paid_at = parse_time(said[when], when)
        if (row["status"], row["paid_at"]) != (said["transaction_status"], paid_at):
            wrong.append(order_id)
    return sorted(wrong)


def total_faults(sandbox: Any) -> int:
    return int(sum(sandbox.stats()["faults"].values()))
