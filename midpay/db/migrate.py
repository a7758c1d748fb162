"""Applies the numbered SQL files of ``sql/`` in order, each exactly once.

Each file and its row in ``midpay_schema_migrations`` commit in one transaction, so a
failing file leaves nothing behind and stays pending. A session advisory lock, polled
with a timeout, serialises concurrent runs. An applied file that was edited since, or
a new file numbered below the highest applied one, is refused. ``status`` reads only.

Files may call the helpers of ``midpay.db.adoption`` (``pg_temp.midpay_ensure_index``, …),
defined in each file's transaction, so that tables another backend laid out are
taken over without duplicating what they already have; what was found is recorded
with the file's row.

Superseded texts: 001 and 002 were rewritten to recognise indexes and constraints by
what they are instead of by name. A database that applied the earlier text recorded its
checksum, which ``SUPERSEDED`` lists, so that database stays valid (007 removes any
duplicate index the earlier text created). Any other edit of an applied file is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from midpay.db import adoption
from midpay.errors import DatabaseUnavailable, MigrationError, SchemaNotReady

TRACKING_TABLE = "midpay_schema_migrations"
# pg_advisory_lock key: the first 8 bytes of sha256("midpay migrate"), as a signed bigint.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"midpay migrate").digest()[:8], "big", signed=True)
_FILE_NAME = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")

# Checksums of earlier texts of a file that a database may have recorded, by version.
# Add one only when a file's new text leaves every database that applied the old one
# in a state the later files expect (say why next to it).
SUPERSEDED: dict[int, frozenset[str]] = {
    # 001 and 002 before they recognised indexes and constraints by what they are: same
    # tables and columns; their name-checked indexes are either there or duplicates 007 drops.
    1: frozenset({"a3134650b3aaff201ea77e18e6f7156da70497a44f731b3fcbb435ac7969a487"}),
    2: frozenset({"f4874da6c17a48dce33367de3877d2eebfe4736a7278dccc90d167b7b1831bb7"}),
}


@dataclass(frozen=True)
class MigrationFile:
    """One file of ``sql/``."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the tracking table."""

    version: int
    name: str
    checksum: str
    applied_at: datetime
    execution_ms: int
    found: adoption.Found | None = None  # None for files applied before midpay recorded findings


@dataclass(frozen=True)
class MigrationStatus:
    """Applied and pending migrations, as ``migrate --status`` shows them."""

    applied: list[AppliedMigration]
    pending: list[MigrationFile]
    found: adoption.Found = field(default_factory=adoption.Found)  # every applied file's findings merged


def sql_dir() -> Path:
    """The migrations: ``midpay/sql`` of an installed wheel, or ``sql/`` of a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the midpay package
    for candidate in (here / "sql", here.parent / "sql"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise MigrationError(f"no migration files found next to {here} (looked in midpay/sql and sql/)")


def load_files(directory: Path | None = None) -> list[MigrationFile]:
    """The migration files in version order; a malformed name or a repeated number is refused."""
    directory = directory or sql_dir()
    files: list[MigrationFile] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_description.sql")
        data = path.read_bytes()
        files.append(
            MigrationFile(
                version=int(match.group(1)),
                name=path.name,
                path=path,
                sql=data.decode("utf-8"),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    if not files:
        raise MigrationError(f"no migration files in {directory}")
    files.sort(key=lambda f: f.version)
    for before, after in itertools.pairwise(files):
        if before.version == after.version:
            raise MigrationError(f"{before.name} and {after.name} share version {before.version}")
    return files


def read_applied(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """Rows of the tracking table; none when it does not exist yet."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TRACKING_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return []
    # to_jsonb(m) -> 'found' reads a tracking table made before the column existed too.
    rows = conn.execute(
        f"SELECT version, name, checksum, applied_at, execution_ms, to_jsonb(m) -> 'found' "
        f"FROM {TRACKING_TABLE} AS m ORDER BY version"
    ).fetchall()
    return [
        AppliedMigration(
            version=row[0], name=row[1], checksum=row[2], applied_at=row[3], execution_ms=row[4],
            found=adoption.Found.from_json(row[5]) if row[5] is not None else None,
        )
        for row in rows
    ]


def plan(files: list[MigrationFile], applied: list[AppliedMigration]) -> list[MigrationFile]:
    """The pending files, after refusing edited applied files and out-of-order new ones."""
    by_version = {a.version: a for a in applied}
    for f in files:
        done = by_version.get(f.version)
        if done is not None and done.checksum != f.checksum and done.checksum not in SUPERSEDED.get(f.version, ()):
            raise MigrationError(
                f"{f.name} was edited after it was applied: applied checksum {done.checksum}, "
                f"file checksum now {f.checksum}; add a new migration instead of editing this one"
            )
    pending = [f for f in files if f.version not in by_version]
    highest = max(by_version, default=0)
    for f in pending:
        if f.version < highest:
            raise MigrationError(
                f"{f.name} is numbered below the highest applied migration ({highest}): "
                "renumber it above, migrations apply in order"
            )
    return pending


@dataclass(frozen=True)
class Readiness:
    """How a database's applied migrations compare with this midpay's files (``readiness``)."""

    applied: int  # rows of the tracking table
    pending: list[MigrationFile]  # empty when ``refused``
    unknown: list[AppliedMigration]  # applied by a newer midpay
    refused: str | None  # an applied file edited since, or a new one numbered below (``plan``'s refusal)

    @property
    def problems(self) -> list[str]:
        """What keeps the database from being exactly the schema these files make; empty when none."""
        if self.refused is not None:
            return [self.refused]
        return [f"pending {f.name}" for f in self.pending] + [
            f"unknown to this midpay: {a.name}" for a in self.unknown
        ]


def readiness(files: list[MigrationFile], applied: list[AppliedMigration]) -> Readiness:
    """THE migration-order check: pending, unknown, edited or out-of-order files. Every command,
    ``listen``'s start and ``/healthz``, and ``doctor`` ask this; it reads nothing itself."""
    known = {f.version for f in files}
    unknown = [a for a in applied if a.version not in known]
    try:
        return Readiness(len(applied), plan(files, applied), unknown, None)
    except MigrationError as exc:
        return Readiness(len(applied), [], unknown, str(exc))


def require_migrated(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaNotReady (exit 2) unless the applied migrations are exactly this midpay's files.

    Checked once, before a command touches anything: a command against a database that
    ``midpay migrate`` has not brought up to date would otherwise fail half-way with
    PostgreSQL's own words (``relation … does not exist``). Two small queries.
    """
    files = load_files()
    try:
        ready = readiness(files, read_applied(conn))
    finally:
        conn.rollback()  # leave no transaction open behind the command's own work
    if not ready.applied:
        raise SchemaNotReady("the database has none of midpay's tables yet: run `midpay migrate`")
    if ready.unknown:
        names = ", ".join(a.name for a in ready.unknown[:3]) + (", …" if len(ready.unknown) > 3 else "")
        raise SchemaNotReady(
            f"the database has migrations this midpay does not know ({names}; a newer midpay applied them): "
            "upgrade midpay, and see `midpay migrate --status`"
        )
    if ready.refused is not None:
        raise SchemaNotReady(f"{ready.refused}; see `midpay migrate --status`")
    if ready.pending:
        pending = ready.pending
        names = ", ".join(f.name for f in pending[:3]) + (", …" if len(pending) > 3 else "")
        count = f"{len(pending)} migration{'s are' if len(pending) > 1 else ' is'} pending"
        raise SchemaNotReady(f"{count} ({names}): run `midpay migrate`")


def status(conn: psycopg.Connection[Any], directory: Path | None = None) -> MigrationStatus:
    """Applied and pending files; changes nothing."""
    files = load_files(directory)
    applied = read_applied(conn)
    by_version = {a.version for a in applied}
    found = adoption.merge([(a.version, a.found) for a in applied if a.found is not None])
    return MigrationStatus(applied=applied, pending=[f for f in files if f.version not in by_version], found=found)


def migrate(
    conn: psycopg.Connection[Any],
    directory: Path | None = None,
    *,
    dry_run: bool = False,
    lock_timeout: float = 60.0,
    on_apply: Callable[[MigrationFile], None] | None = None,
) -> list[MigrationFile]:
    """Apply every pending file in order (or, with ``dry_run``, only say which)."""
    conn.autocommit = True
    files = load_files(directory)
    _acquire_lock(conn, lock_timeout)
    try:
        if dry_run:
            return plan(files, read_applied(conn))
        _ensure_tracking_table(conn)
        applied = read_applied(conn)
        pending = plan(files, applied)
        adopted = set(adoption.merge([(a.version, a.found) for a in applied if a.found]).tables_adopted)
        for f in pending:
            if on_apply is not None:
                on_apply(f)
            found = _apply_one(conn, f, adopted, first=not applied and f is pending[0])
            adopted |= set(found.tables_adopted)
        return pending
    finally:
        from midpay.db import schema

        schema.forget()  # the tables' layout may have changed
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        except psycopg.Error:
            pass  # the session is gone; PostgreSQL released the lock with it


def _acquire_lock(conn: psycopg.Connection[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise DatabaseUnavailable(
                f"another midpay migrate has held the migration lock for over {timeout:.0f} s; try again later"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _ensure_tracking_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (
            version      integer PRIMARY KEY,
            name         text NOT NULL,
            checksum     char(64) NOT NULL,
            applied_at   timestamptz NOT NULL DEFAULT now(),
            execution_ms integer NOT NULL
        )
        """
    )
    conn.execute(f"ALTER TABLE {TRACKING_TABLE} ADD COLUMN IF NOT EXISTS found jsonb")


def _apply_one(conn: psycopg.Connection[Any], f: MigrationFile, adopted: set[str], *, first: bool) -> adoption.Found:
    from psycopg.types.json import Jsonb

    started = time.perf_counter()
    try:
        with conn.transaction():
            adoption.prepare(conn)
            before = adoption.columns(conn)
            conn.execute(f.sql.encode("utf-8"))
            found = adoption.collect(conn, before, adopted, first=first)
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            conn.execute(
                f"INSERT INTO {TRACKING_TABLE} (version, name, checksum, execution_ms, found) "
                "VALUES (%s, %s, %s, %s, %s)",
                (f.version, f.name, f.checksum, elapsed_ms, Jsonb(found.as_json())),
            )
        return found
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        message = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
        raise MigrationError(f"{f.name} failed and was rolled back: {message}") from exc
