"""Whether a database is ready for midpay's commands: every migration applied, none unknown, none edited.

Checked once, before a command touches anything: a command against a database that
``midpay migrate`` has not brought up to date would otherwise fail half-way with
PostgreSQL's own words (``relation … does not exist``). Two small queries.
"""

from __future__ import annotations

from midpay.db import migrate
from midpay.db.core import Connection
from midpay.errors import MigrationError, SchemaNotReady


def require_migrated(conn: Connection) -> None:
    """Raise SchemaNotReady (exit 2) unless the applied migrations are exactly this midpay's files."""
    files = migrate.load_files()
    try:
        applied = migrate.read_applied(conn)
    finally:
        conn.rollback()  # leave no transaction open behind the command's own work
    if not applied:
        raise SchemaNotReady("the database has none of midpay's tables yet: run `midpay migrate`")
    by_version = {f.version: f for f in files}
    unknown = [a for a in applied if a.version not in by_version]
    if unknown:
        names = ", ".join(a.name for a in unknown[:3]) + (", …" if len(unknown) > 3 else "")
        raise SchemaNotReady(
            f"the database has migrations this midpay does not know ({names}; a newer midpay applied them): "
            "upgrade midpay, and see `midpay migrate --status`"
        )
    try:
        pending = migrate.plan(files, applied)  # refuses edited files (the rule lives with migrate)
    except MigrationError as exc:
        raise SchemaNotReady(f"{exc}; see `midpay migrate --status`") from exc
    if pending:
        names = ", ".join(f.name for f in pending[:3]) + (", …" if len(pending) > 3 else "")
        count = f"{len(pending)} migration{'s are' if len(pending) > 1 else ' is'} pending"
        raise SchemaNotReady(f"{count} ({names}): run `midpay migrate`")
