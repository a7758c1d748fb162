"""Indexes and constraints recognised by what they are, on tables another backend laid out.

These run on the embedded PostgreSQL with hand-made layouts (no Node needed); the
layout the real node-pg-migrate builds is tested in tests/node_backend.
"""

from __future__ import annotations

from typing import Any

import psycopg

from midpay.db import migrate

BACKEND = """
CREATE TABLE users (id bigserial PRIMARY KEY);
CREATE TABLE payment_transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id bigint REFERENCES users (id),
    order_id varchar(255) NOT NULL,
    gross_amount integer NOT NULL,
    payment_type varchar(50) NOT NULL,
    status varchar(50) NOT NULL,
    midtrans_transaction_id varchar(255),
    midtrans_response_json jsonb,
    created_at timestamp NOT NULL DEFAULT current_timestamp,
    updated_at timestamp NOT NULL DEFAULT current_timestamp,
    paid_at timestamp
);
-- unique where midpay wants it plain: reusable; a partial one: not the same index
CREATE UNIQUE INDEX their_user_unique ON payment_transactions (user_id);
CREATE INDEX their_partial_status ON payment_transactions (status) WHERE status <> 'x';
-- plain where midpay wants it unique: not enough
CREATE INDEX their_order ON payment_transactions (order_id);
ALTER TABLE payment_transactions RENAME CONSTRAINT payment_transactions_user_id_fkey TO their_user_fk;
"""


def _indexes(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass",
        (table,),
    ).fetchall()
    return dict(rows)


def test_equivalent_indexes_and_keys_are_reused_and_only_those(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(BACKEND.encode())
        conn.commit()
        migrate.migrate(conn)
        found = migrate.status(conn).found
        indexes = _indexes(conn, "payment_transactions")
        now = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'payment_transactions'"
        ).fetchall()}
        fks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = 'payment_transactions'::regclass"
        ).fetchall()
    reused = {e["name"]: e["existing"] for e in found.indexes_reused}
    assert reused == {"payment_transactions_user_id_idx": "their_user_unique"}
    assert "payment_transactions_user_id_idx" not in indexes
    assert "payment_transactions_status_idx" in indexes, "a partial index is not the same as a whole one"
    assert "payment_transactions_order_id_key" in indexes, "a plain index does not make order ids unique"
    assert [e["existing"] for e in found.constraints_reused] == ["their_user_fk"]
    assert fks == [("their_user_fk",)]
    assert found.tables_adopted == ["payment_transactions"]
    laid_out = {"id", "user_id", "order_id", "gross_amount", "payment_type", "status", "midtrans_transaction_id",
                "midtrans_response_json", "created_at", "updated_at", "paid_at"}
    added = {e["column"] for e in found.columns_added if e["table"] == "payment_transactions"}
    assert added == now - laid_out and "last_checked_at" in added


def test_a_fresh_database_adopts_nothing(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        found = migrate.status(conn).found
    assert found.is_empty()


OLD_001_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS payment_transactions_order_id_key ON payment_transactions (order_id);
CREATE INDEX IF NOT EXISTS payment_transactions_status_idx ON payment_transactions (status);
CREATE INDEX IF NOT EXISTS payment_webhook_events_order_id_idx ON payment_webhook_events (order_id);
"""


def test_a_database_that_applied_the_earlier_texts_stays_valid_and_loses_the_duplicates(empty_db_url: str) -> None:
    """Earlier 001/002 built name-checked copies of the backend's indexes; their checksums are still accepted."""
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(BACKEND.encode())
        conn.execute("CREATE UNIQUE INDEX their_order_unique ON payment_transactions (order_id)")
        conn.execute(
            "CREATE TABLE payment_webhook_events (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "received_at timestamp NOT NULL DEFAULT current_timestamp, order_id varchar(255), "
            "midtrans_transaction_id varchar(255), raw_body jsonb NOT NULL, signature_key varchar(255), "
            "is_verified boolean NOT NULL DEFAULT false, processed boolean NOT NULL DEFAULT false, "
            "processing_error text)"
        )
        conn.execute("CREATE INDEX their_event_order ON payment_webhook_events (order_id)")
        conn.commit()
        files = migrate.load_files()
        migrate.migrate(conn)  # then pretend 001 and 002 had been applied from their earlier text
        conn.autocommit = True
        conn.execute(OLD_001_INDEXES.encode())
        for version in (1, 2):
            (old,) = migrate.SUPERSEDED[version]
            conn.execute(
                "UPDATE midpay_schema_migrations SET checksum = %s, found = NULL WHERE version = %s", (old, version)
            )
        conn.execute("DELETE FROM midpay_schema_migrations WHERE version >= 7")  # 007 and what followed it
        assert migrate.plan(files, migrate.read_applied(conn)) == [f for f in files if f.version >= 7]
        applied = migrate.migrate(conn)
        found = migrate.status(conn).found
        indexes = _indexes(conn, "payment_transactions") | _indexes(conn, "payment_webhook_events")
    assert [f.version for f in applied] == [f.version for f in files if f.version >= 7]
    dropped = {e["name"]: e["existing"] for e in found.indexes_dropped}
    assert dropped == {
        "payment_transactions_order_id_key": "their_order_unique",
        "payment_webhook_events_order_id_idx": "their_event_order",
    }
    assert "payment_transactions_status_idx" in indexes, "the only whole index on status stays"
    assert "their_order_unique" in indexes and "payment_transactions_order_id_key" not in indexes
