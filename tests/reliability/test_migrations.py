"""Scenario 7: migrations under contention, failure, edits and a killed run.

`midpay migrate` reads the packaged sql/, so the command-line runs prove the
concurrency of the real files; failing, edited and slow files are tested at the
library level, `migrate.migrate(conn, directory)`, with several connections at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.db import migrate
from midpay.errors import DatabaseUnavailable, MigrationError

from ..conftest import REPO
from ..helpers import wait_until
from .conftest import Figures, spawn

FILES = [f.name for f in migrate.load_files()]


def _tracking(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('midpay_schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT version, name, checksum FROM midpay_schema_migrations ORDER BY version"
        ).fetchall()]


def _table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(REPO / "sql", target)
    return target


def _in_threads(count: int, work: Any) -> list[Any]:
    """Run ``work()`` in ``count`` threads released together; their results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_five_concurrent_cli_migrations_apply_each_file_once(
    empty_db_url: str, env: dict[str, str], tmp_path: Path, figures: Figures
) -> None:
    penv = {**os.environ, **env, "DATABASE_URL": empty_db_url, "PYTHONPATH": str(REPO)}
    rounds = []
    for label, count in (("empty", 5), ("up-to-date", 1)):
        procs = [spawn(["migrate", "--json"], penv, tmp_path / label, name=f"m{k}") for k in range(count)]
        for proc in procs:
            proc.wait(120)
        rounds.append(procs)
    applied = [json.loads(p.stdout)["applied"] if p.stdout.strip() else None for p in rounds[0]]
    again = [json.loads(p.stdout)["applied"] if p.stdout.strip() else None for p in rounds[1]]
    names = sorted(m["name"] for run in applied if run for m in run)
    tracked = _tracking(empty_db_url)
    figures.processes = 6
    figures.events = len(names)
    figures.lost = len(FILES) - len({n for n in names})
    figures.wrongly_applied = len(names) - len(set(names))
    figures.notes = {"applied_per_process": [len(a) if a is not None else None for a in applied]}

    for proc in rounds[0] + rounds[1]:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc
    assert names == sorted(FILES), "each file applied exactly once, by one of the five"
    assert again == [[]]
    assert [name for _, name, _ in tracked] == FILES
    assert figures.lost == 0 and figures.wrongly_applied == 0


def test_a_failing_file_under_contention_leaves_nothing_behind(
    empty_db_url: str, tmp_path: Path, figures: Figures
) -> None:
    directory = _copy_sql(tmp_path)
    broken = directory / "900_broken.sql"
    broken.write_text("CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\nSELECT 1 / 0;\n")

    def attempt() -> Any:
        with psycopg.connect(empty_db_url) as conn:
            return migrate.migrate(conn, directory, lock_timeout=60)

    results = _in_threads(4, attempt)
    failures = [r for r in results if isinstance(r, MigrationError)]
    tracked = _tracking(empty_db_url)
    half = _table_exists(empty_db_url, "half_done")
    broken.write_text("CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n")  # the fix
    fixed = attempt()
    figures.processes = 0
    figures.events = len(results) + 1
    figures.faults_injected = len(failures)
    figures.wrongly_applied = int(half) + sum(1 for v, *_ in tracked if v == 900)
    figures.lost = 0

    assert len(failures) == 4, results
    assert all("900_broken.sql failed and was rolled back" in str(f) for f in failures)
    assert [name for _, name, _ in tracked] == FILES, "the good files applied once, the broken one not"
    assert not half, "nothing of the failing file was left behind"
    assert [f.name for f in fixed] == ["900_broken.sql"]
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM half_done").fetchone() == (1,)


def test_an_edited_applied_file_is_refused_by_every_concurrent_run(
    empty_db_url: str, tmp_path: Path, figures: Figures
) -> None:
    directory = _copy_sql(tmp_path)
    with psycopg.connect(empty_db_url) as conn:
        migrate.migrate(conn, directory)
    before = _tracking(empty_db_url)
    first = directory / FILES[0]
    first.write_text(first.read_text() + "\nCREATE TABLE sneaky (id int);\n")
    (directory / "900_new.sql").write_text("CREATE TABLE brand_new (id int);\n")

    def attempt() -> Any:
        with psycopg.connect(empty_db_url) as conn:
            return migrate.migrate(conn, directory)

    results = _in_threads(3, attempt)
    figures.events = len(results)
    figures.wrongly_applied = int(_table_exists(empty_db_url, "sneaky")) + int(
        _table_exists(empty_db_url, "brand_new")
    )
    figures.lost = 0
    assert all(isinstance(r, MigrationError) and "edited after it was applied" in str(r) for r in results), results
    assert _tracking(empty_db_url) == before
    assert figures.wrongly_applied == 0, "a refused run applies nothing, not even the new file"


def test_a_killed_migration_rolls_back_and_the_next_run_applies_it(
    empty_db_url: str, tmp_path: Path, figures: Figures
) -> None:
    directory = _copy_sql(tmp_path)
    (directory / "900_slow.sql").write_text(
        "CREATE TABLE slow_half (id int);\nINSERT INTO slow_half VALUES (1);\nSELECT pg_sleep(1.5);\n"
    )
    script = textwrap.dedent(
        f"""
        import psycopg
        from pathlib import Path
        from midpay.db import migrate
        with psycopg.connect({empty_db_url!r}) as conn:
            migrate.migrate(conn, Path({str(directory)!r}))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(empty_db_url, autocommit=True) as probe:

        def slow_file_running() -> bool:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE %s",
                ("%pg_sleep(1.5)%",),
            ).fetchone()
            assert proc.poll() is None, "the migration ended before its slow file ran"
            return bool(row and row[0])

        wait_until(slow_file_running, 60, what="the slow file to start")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # The orphaned backend may still hold the advisory lock until its statement ends:
    # the next run waits for it instead of failing, and the listing never waits.
    with psycopg.connect(empty_db_url) as conn:
        listed = migrate.status(conn, directory)
    with psycopg.connect(empty_db_url) as conn:
        started = time.monotonic()
        applied = migrate.migrate(conn, directory, lock_timeout=30)
        waited = time.monotonic() - started
    tracked = _tracking(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT count(*) FROM slow_half").fetchone()
    figures.processes = 1
    figures.faults_injected = 1
    figures.events = len(tracked)
    figures.wrongly_applied = (rows[0] - 1) if rows else 1
    figures.lost = 0
    figures.notes = {"rerun_seconds": round(waited, 2)}
    assert "900_slow.sql" in [f.name for f in listed.pending]
    assert [f.name for f in applied] == ["900_slow.sql"]
    assert [name for _, name, _ in tracked] == [*FILES, "900_slow.sql"]
    assert rows == (1,), "the killed run left nothing; the rerun applied the file once"


def test_a_held_lock_times_out_with_a_clear_error(empty_db_url: str, figures: Figures) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        with psycopg.connect(empty_db_url) as conn:
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="another midpay migrate has held the migration lock"):
                migrate.migrate(conn, lock_timeout=1)
            waited = time.monotonic() - started
    figures.events = 1
    figures.faults_injected = 1
    figures.lost = 0
    figures.wrongly_applied = len(_tracking(empty_db_url))
    figures.notes = {"waited_s": round(waited, 2)}
    assert 1 <= waited < 5
    assert _tracking(empty_db_url) == []
