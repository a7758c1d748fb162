"""Fixtures and probes shared by the reconcile-at-scale benchmarks (latency, scale-out).

* ``open_rows``: N pending orders in the sandbox and in payment_transactions, half
  of them paid in the sandbox (charged at latency 0: the fixture is not measured);
* ``ConnectionPeak``: polls pg_stat_activity for one database and keeps the peak;
* ``bare_client_floor``: a plain threaded ``requests`` loop doing the same status
  calls, so that what the sandbox itself can serve is measured, not assumed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from bench_reconcile import _insert_pending
from common import SERVER_KEY, charge_orders, log, pay_orders
from psycopg.conninfo import conninfo_to_dict


def open_rows(sandbox_url: str, db_url: str, n: int, *, prefix: str) -> tuple[list[str], list[str]]:
    """(order ids, the paid half): N open rows, every other one settled at Midtrans."""
    order_ids = [f"{prefix}-{i:06d}" for i in range(n)]
    amounts = [10_000 + i for i in range(n)]
    paid = order_ids[::2]
    log(f"{prefix}: charging {n} orders in the sandbox, paying {len(paid)}")
    answers = charge_orders(sandbox_url, order_ids, amounts, workers=32)
    with psycopg.connect(db_url) as conn:
        _insert_pending(conn, answers, amounts)
    pay_orders(sandbox_url, paid, workers=32)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions")
    return order_ids, paid


def reset_rows(db_url: str) -> None:
    """Every row open and never checked, as before the first run (the sandbox keeps its state)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE payment_transactions SET status = 'pending', paid_at = NULL, last_checked_at = NULL, "
            "check_lease_owner = NULL, check_lease_until = NULL, check_claimed_at = NULL, check_attempts = 0, "
            "check_error = NULL, check_retry_at = NULL"
        )
        conn.execute("VACUUM ANALYZE payment_transactions")


def settled_count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM payment_transactions WHERE status = 'settlement'").fetchone()
    return int(row[0]) if row else 0


class ConnectionPeak:
    """The most connections to one database seen at once (pg_stat_activity, every ``interval`` s)."""

    def __init__(self, admin_url: str, db_url: str, *, interval: float = 0.05) -> None:
        self.admin_url = admin_url
        self.dbname = str(conninfo_to_dict(db_url)["dbname"])
        self.interval = interval
        self.peak = 0
        self.max_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="pg-peak", daemon=True)

    def _poll(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
            self.max_connections = int(row[0]) if row else 0
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.dbname,),
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def bare_client_floor(sandbox_url: str, order_ids: list[str], *, concurrency: int) -> dict[str, Any]:
    """Wall and CPU of a plain threaded requests loop (a Session per thread) over the same status calls."""
    import requests
    from requests.adapters import HTTPAdapter

    local = threading.local()

    def session() -> requests.Session:
        s = getattr(local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False
            s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            s.auth = (SERVER_KEY, "")
            local.session = s
        return s

    def one(order_id: str) -> None:
        response = session().get(f"{sandbox_url}/v2/{order_id}/status", timeout=30)
        response.raise_for_status()
        response.json()

    cpu0 = time.process_time()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, order_ids))
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "cpu_ms_per_row": round((time.process_time() - cpu0) * 1000 / len(order_ids), 3)}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
