"""PostgreSQL connections: single connections, the pool, and error mapping.

With ``migrate``, the ``db`` package is the only psycopg user. Callers own transaction
boundaries (``with conn.transaction():``); every query takes parameters as ``%s`` and
returns dataclasses, never cursors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import class_row

from midpay.errors import DatabaseRefused, DatabaseUnavailable, MidpayError

if TYPE_CHECKING:
    from psycopg.abc import Params
    from psycopg_pool import ConnectionPool

Connection = psycopg.Connection[Any]
T = TypeVar("T")
# The URL to connect to comes from midpay.embedded.resolve_url (it may start the embedded
# server): the database layer imports nothing above it.

# psycopg logs what it ignores while cleaning up after a lost connection ("error ignored
# terminating <Pipeline>", "error ignored in rollback") as warnings on stderr; midpay
# reports the loss itself, as the one `Error:` line.
logging.getLogger("psycopg").setLevel(logging.ERROR)
CONNECT_TIMEOUT = 10


def _server_timezone() -> None:
    """Leave the session's TimeZone at the server's default, as the other backend's sessions have it.

    ``timestamp`` columns written by the older backend hold wall-clock times in its
    sessions' TimeZone, which is the server's (or the database's, or the role's)
    default: node-postgres sends none. libpq would send ``PGTZ`` from the environment,
    so it is dropped. A ``TimeZone`` given in DATABASE_URL's ``options`` is kept: that
    is how an operator says the other backend's sessions used another zone.
    """
    os.environ.pop("PGTZ", None)


# PostgreSQL answered, and refused who or what DATABASE_URL names: fixing the URL (or
# the server's pg_hba.conf) is the cure, retrying is not (exit 2, not 3).
_REFUSED = re.compile(
    r"password authentication failed|authentication failed|no password supplied|no pg_hba\.conf entry"
    r"|role \S+ does not exist|database \S+ does not exist|permission denied for database"
    r"|is not permitted to log in|server does not support SSL|SSL off",
    re.IGNORECASE,
)
# libpq could not make sense of DATABASE_URL at all.
_MALFORMED = re.compile(r"invalid integer value|invalid port number|invalid sslmode|invalid connection option")


def connect_error(exc: psycopg.Error) -> MidpayError:
    """The midpay error for a failed connection attempt: refused or malformed (exit 2), unreachable (exit 3)."""
    line = first_line(exc)
    if isinstance(exc, psycopg.ProgrammingError) or _MALFORMED.search(line):
        return DatabaseRefused(f"DATABASE_URL is not a usable PostgreSQL URL: {line}")
    if _REFUSED.search(line):
        return DatabaseRefused(f"PostgreSQL refused the connection that DATABASE_URL describes: {line}")
    return DatabaseUnavailable(f"cannot connect to PostgreSQL: {line}")


def connect(url: str, *, autocommit: bool = False) -> Connection:
    """Open one connection; failures become ``DatabaseRefused`` or ``DatabaseUnavailable``, without the password."""
    _server_timezone()
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise connect_error(exc) from exc


def open_pool(url: str, size: int) -> ConnectionPool[Connection]:
    """A pool of ``size`` connections, opened and checked before it is returned."""
    import logging

    from psycopg_pool import ConnectionPool, PoolTimeout

    # One plain connection first: an unreachable server fails at once, with libpq's
    # reason, instead of after the pool's timeout. (It also drops PGTZ: see connect.)
    connect(url).close()
    # The pool logs every failed reconnection as a warning; midpay reports failures itself.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    pool: ConnectionPool[Connection] = ConnectionPool(
        url, min_size=1, max_size=max(1, size), open=False, timeout=CONNECT_TIMEOUT,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailable("cannot connect to PostgreSQL: no connection within the timeout") from exc
    return pool


def serving_pool(url: str, size: int, *, timeout: float) -> ConnectionPool[Connection]:
    """A pool for a long-running server: up to ``size`` connections, opened lazily.

    Unlike ``open_pool`` it does not wait for PostgreSQL: a server that is down now is
    reconnected to in the background, and a caller that finds no working connection
    within ``timeout`` seconds gets ``PoolTimeout`` (``map_error`` turns it into
    ``DatabaseUnavailable``). Each connection is checked before it is handed out, so
    one that died with a restarted server is replaced instead of failing a request.
    """
    import logging

    from psycopg_pool import ConnectionPool

    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    pool: ConnectionPool[Connection] = ConnectionPool(
        url,
        min_size=1,
        max_size=max(1, size),
        open=False,
        timeout=timeout,
        check=ConnectionPool.check_connection,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
    )
    pool.open(wait=False)
    return pool


def map_error(exc: BaseException) -> MidpayError | None:
    """The midpay error for a psycopg failure that escaped a use case, if it is one."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(f"PostgreSQL connection failed: {first_line(exc)}")
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg_pool is a dependency
        return None
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailable("PostgreSQL connection failed: no pooled connection within the timeout")
    return None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection-level psycopg failures raised inside the block into midpay errors."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        mapped = map_error(exc)
        assert mapped is not None
        raise mapped from exc


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def first_line(exc: BaseException) -> str:
    """The first line of a psycopg error, with any password in a quoted URL masked."""
    text = str(exc).strip() or exc.__class__.__name__
    line = text.splitlines()[0]
    line = _URL_PASSWORD.sub(r"\1***@", line)
    return _KEYWORD_PASSWORD.sub(r"\1***", line)



def database_now(conn: Connection) -> datetime:
    """The database server's clock (reconcile measures every age with it)."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def fetch_all(conn: Connection, row: type[T], query: str, params: Params) -> list[T]:
    """Every row ``query`` returns, each made a ``row`` (a dataclass whose fields are its columns)."""
    with conn.cursor(row_factory=class_row(row)) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def columns(rows: Iterable[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Rows turned into one list a column: the arrays a statement reading ``unnest(...)`` takes."""
    return tuple(list(column) for column in zip(*rows, strict=True))


def execute_rows(conn: Connection, query: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Send ``query`` once for all ``rows``, one array a column (see ``columns``); nothing at all for no rows."""
    if rows:
        conn.execute(query, columns(rows))
