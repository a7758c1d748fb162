"""What the payment tables actually look like in this database, read once per process.

midpay shares its tables with an older backend whose layout may differ from midpay's
own migrations in small ways (a shorter ``varchar``, ``timestamp`` without time zone, a
``numeric`` amount, a ``NOT NULL`` column). Values are checked against these facts
before they are written, so one odd value fails one row with a clear reason instead
of failing a statement.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from midpay.db.core import Connection

TABLES = ("payment_transactions", "payment_webhook_events", "payment_refunds")


@dataclass(frozen=True)
class Column:
    """One column as information_schema describes it."""

    table: str
    name: str
    data_type: str  # e.g. "character varying", "timestamp without time zone", "numeric"
    max_length: int | None  # character_maximum_length, for varchar/char
    nullable: bool
    has_default: bool

    @property
    def required(self) -> bool:
        """NOT NULL without a default: an insert must give it a value."""
        return not self.nullable and not self.has_default

    @property
    def wall_clock(self) -> bool:
        """``timestamp without time zone``: a wall-clock time in the writing session's TimeZone."""
        return self.data_type == "timestamp without time zone"

    @property
    def numeric(self) -> bool:
        """``numeric``/``decimal``: exact, and possibly with a fraction."""
        return self.data_type == "numeric"


@dataclass(frozen=True)
class Layout:
    """The columns of midpay's tables, by table and name."""

    columns: dict[tuple[str, str], Column]

    def column(self, table: str, name: str) -> Column | None:
        """The column, or None when this database has no such column."""
        return self.columns.get((table, name))

    def max_length(self, table: str, name: str) -> int | None:
        """The character limit of a text column, or None when it has none (or does not exist)."""
        found = self.column(table, name)
        return found.max_length if found is not None else None

    def required(self, table: str) -> list[str]:
        """The columns of ``table`` that are NOT NULL without a default, by name."""
        return sorted(c.name for c in self.columns.values() if c.table == table and c.required)


_cache: dict[str, Layout] = {}
_lock = threading.Lock()


def read_layout(conn: Connection) -> Layout:
    """The layout of midpay's tables in the connection's database and schema (no caching)."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable = 'YES', "
        "column_default IS NOT NULL "
        "FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    return Layout({(r[0], r[1]): Column(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5])) for r in rows})


def layout(conn: Connection, key: str) -> Layout:
    """The layout, read once per ``key`` (the database URL) for the life of the process."""
    with _lock:
        found = _cache.get(key)
    if found is None:
        found = read_layout(conn)
        with _lock:
            _cache[key] = found
    return found


def of(conn: Connection) -> Layout:
    """The layout of the database ``conn`` is connected to, read once per process.

    The key is the connection's parameters without the password (libpq's view of them).
    """
    return layout(conn, conn.info.dsn)


def forget() -> None:
    """Drop cached layouts (after ``migrate`` changed them, and in tests)."""
    with _lock:
        _cache.clear()
