"""The rows of webhook_endpoints: where the shop's own app takes payment events, and the secrets that sign them.

The signing secrets are written here and read back only by the statements that make
one (``insert_endpoint``, ``rotate_secret``) and by ``signing_secrets``, which the
command line uses to redact them; ``Endpoint`` never holds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from midpay.db.core import Connection


@dataclass(frozen=True)
class Endpoint:
    """One row of webhook_endpoints, without its secrets."""

    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    previous_secret_until: datetime | None
    created_at: datetime


_COLUMNS = "id, url, events, description, enabled, disabled_reason, previous_secret_until, created_at"


def insert_endpoint(
    conn: Connection, *, endpoint_id: str, url: str, events: list[str], description: str | None, secret: str
) -> Endpoint:
    """A new, enabled endpoint."""
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        cur.execute(
            "INSERT INTO webhook_endpoints (id, url, events, description, secret) VALUES (%s, %s, %s, %s, %s) "
            f"RETURNING {_COLUMNS}",
            (endpoint_id, url, events, description, secret),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def list_endpoints(conn: Connection) -> list[Endpoint]:
    """Every endpoint, oldest first."""
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
        return cur.fetchall()


def get_endpoint(conn: Connection, endpoint_id: str) -> Endpoint | None:
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = %s", (endpoint_id,))
        return cur.fetchone()


def delete_endpoint(conn: Connection, endpoint_id: str) -> Endpoint | None:
    """Remove the endpoint (its deliveries and their attempts go with it); None when there was none."""
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        cur.execute(f"DELETE FROM webhook_endpoints WHERE id = %s RETURNING {_COLUMNS}", (endpoint_id,))
        return cur.fetchone()


def set_enabled(conn: Connection, endpoint_id: str, *, enabled: bool, reason: str | None) -> Endpoint | None:
    """Enable (the reason cleared) or disable (with ``reason``) the endpoint; None when there is none."""
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        cur.execute(
            f"UPDATE webhook_endpoints SET enabled = %s, disabled_reason = %s WHERE id = %s RETURNING {_COLUMNS}",
            (enabled, None if enabled else reason, endpoint_id),
        )
        return cur.fetchone()


def rotate_secret(conn: Connection, endpoint_id: str, secret: str, *, overlap_seconds: float) -> Endpoint | None:
    """``secret`` signs from now on; the one it replaces keeps signing beside it for ``overlap_seconds``.

    A secret replaced before that is dropped: at most two sign at once.
    """
    with conn.cursor(row_factory=class_row(Endpoint)) as cur:
        # In SET, `secret` on the right is the row's value before this UPDATE.
        cur.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, "
            "previous_secret_until = now() + make_interval(secs => %s), secret = %s "
            f"WHERE id = %s RETURNING {_COLUMNS}",
            (overlap_seconds, secret, endpoint_id),
        )
        return cur.fetchone()


def signing_secrets(conn: Connection) -> list[str]:
    """Every secret that signs, or may still sign, for any endpoint (for redaction, never for display)."""
    rows = conn.execute("SELECT secret, previous_secret FROM webhook_endpoints").fetchall()
    return [value for row in rows for value in row if value]
