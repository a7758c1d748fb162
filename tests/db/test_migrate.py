"""midpay migrate on a real PostgreSQL: order, atomicity, locking, checksums, adoption."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.db import migrate
from midpay.errors import MigrationError
from tests.conftest import REPO


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    return {r[0] for r in rows}


def test_files_are_numbered_and_ordered() -> None:
    files = migrate.load_files()
    assert [f.version for f in files] == sorted(f.version for f in files)
    assert files[0].name == "001_payment_tables.sql"
    assert all(len(f.checksum) == 64 for f in files)


def test_migrate_applies_everything_then_nothing(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        applied = migrate.migrate(conn)
        assert [f.version for f in applied] == [f.version for f in migrate.load_files()]
        assert migrate.migrate(conn) == []
        st = migrate.status(conn)
    assert st.pending == []
    assert [a.version for a in st.applied] == [f.version for f in migrate.load_files()]
    assert {"payment_transactions", "payment_webhook_events", migrate.TRACKING_TABLE} <= _tables(empty_db_url)


def test_status_is_read_only(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        st = migrate.status(conn)
    assert st.applied == []
    assert len(st.pending) == len(migrate.load_files())
    assert _tables(empty_db_url) == set()


def test_dry_run_changes_nothing(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        would = migrate.migrate(conn, dry_run=True)
    assert len(would) == len(migrate.load_files())
    assert _tables(empty_db_url) == set()


def _copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(REPO / "sql", target)
    return target


def test_failing_file_is_rolled_back_and_stays_pending(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy_sql(tmp_path)
    (directory / "900_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    with psycopg.connect(empty_db_url) as conn:
        with pytest.raises(MigrationError, match=r"900_broken\.sql.*no_such_table"):
            migrate.migrate(conn, directory)
        st = migrate.status(conn, directory)
    assert [f.name for f in st.pending] == ["900_broken.sql"]
    assert len(st.applied) == len(migrate.load_files())
    assert "half_done" not in _tables(empty_db_url)


def test_edited_applied_file_is_refused_with_both_checksums(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy_sql(tmp_path)
    with psycopg.connect(empty_db_url) as conn:
        migrate.migrate(conn, directory)
        first = directory / "001_payment_tables.sql"
        old = migrate.load_files(directory)[0].checksum
        first.write_text(first.read_text() + "\n-- edited\n")
        new = migrate.load_files(directory)[0].checksum
        with pytest.raises(MigrationError) as info:
            migrate.migrate(conn, directory)
    assert old in str(info.value) and new in str(info.value)


def test_new_file_below_highest_applied_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    directory = _copy_sql(tmp_path)
    (directory / "900_late.sql").write_text("SELECT 1;\n")
    with psycopg.connect(empty_db_url) as conn:
        migrate.migrate(conn, directory)
        (directory / "500_sneaky.sql").write_text("SELECT 1;\n")
        with pytest.raises(MigrationError, match=r"500_sneaky\.sql is numbered below"):
            migrate.migrate(conn, directory)


NODE_BACKEND_SCHEMA = """
CREATE TABLE pgmigrations (id serial PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL);
INSERT INTO pgmigrations (name, run_on) VALUES ('1700000000000_create-users', now()),
    ('1700000000001_create-payment-tables', now());
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
INSERT INTO users (email) VALUES ('budi@example.com');
CREATE TABLE payment_transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id bigint REFERENCES users(id),
    order_id varchar(255) NOT NULL UNIQUE,
    gross_amount integer NOT NULL,
    payment_type varchar(50) NOT NULL,
    status varchar(50) NOT NULL,
    midtrans_transaction_id varchar(255) UNIQUE,
    midtrans_response_json jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    paid_at timestamptz
);
CREATE INDEX payment_transactions_user_id_index ON payment_transactions (user_id);
CREATE INDEX payment_transactions_status_index ON payment_transactions (status);
CREATE TABLE payment_webhook_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    received_at timestamptz NOT NULL DEFAULT now(),
    order_id varchar(255),
    midtrans_transaction_id varchar(255),
    raw_body jsonb NOT NULL,
    signature_key varchar(255),
    is_verified boolean NOT NULL DEFAULT false,
    processed boolean NOT NULL DEFAULT false,
    processing_error text
);
INSERT INTO payment_transactions
    (user_id, order_id, gross_amount, payment_type, status, midtrans_transaction_id, paid_at)
    VALUES (1, 'node-1', 154600, 'gopay', 'settlement', 'tx-1', now()),
           (1, 'node-2', 5000, 'qris', 'pending', 'tx-2', NULL);
INSERT INTO payment_webhook_events (order_id, raw_body, is_verified, processed)
    VALUES ('node-1', '{"order_id": "node-1", "transaction_status": "settlement"}', true, true);
"""


def test_adopts_the_node_backend_database_without_losing_rows(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(NODE_BACKEND_SCHEMA.encode())
        conn.commit()
        applied = migrate.migrate(conn)
        assert len(applied) == len(migrate.load_files())
        conn.autocommit = False
        payments = conn.execute("SELECT order_id, status, gross_amount FROM payment_transactions ORDER BY 1").fetchall()
        events = conn.execute("SELECT count(*) FROM payment_webhook_events").fetchone()
        node = conn.execute("SELECT count(*) FROM pgmigrations").fetchone()
    assert payments == [("node-1", "settlement", 154600), ("node-2", "pending", 5000)]
    assert events == (1,)
    assert node == (2,)


def _migrate_process(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"DATABASE_URL": url, "PYTHONPATH": str(REPO)})
    return subprocess.run(
        [sys.executable, "-m", "midpay", "migrate", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_concurrent_runs_apply_each_file_once(empty_db_url: str) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({"DATABASE_URL": empty_db_url, "PYTHONPATH": str(REPO)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "midpay", "migrate", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    import json

    applied = [json.loads(out)["applied"] for out, _ in outputs]
    names = sorted(m["name"] for run in applied for m in run)
    assert names == sorted(f.name for f in migrate.load_files())


def test_cli_status_json_lists_every_file_applied(empty_db_url: str) -> None:
    first = _migrate_process(empty_db_url)
    assert first.returncode == 0, first.stderr
    second = _migrate_process(empty_db_url)
    assert second.returncode == 0 and "nothing to apply" in second.stdout
    listing = _migrate_process(empty_db_url, "--status", "--json")
    assert listing.returncode == 0
    import json

    doc: dict[str, Any] = json.loads(listing.stdout)
    assert doc["pending"] == []
    assert [a["name"] for a in doc["applied"]] == [f.name for f in migrate.load_files()]
    assert set(doc["applied"][0]) == {"version", "name", "checksum", "applied_at"}


def test_unreachable_database_is_exit_3_one_line(tmp_path: Path) -> None:
    result = _migrate_process("postgresql://midpay:s3cr3t-pw@127.0.0.1:1/none?connect_timeout=2")
    assert result.returncode == 3
    assert result.stderr.startswith("Error: cannot connect to PostgreSQL")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
