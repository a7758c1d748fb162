"""Every bad flag, bad configuration value and unready database: one line, its exit code, before any work.

Exit 2 for what the operator must fix (a flag, a variable, DATABASE_URL's login, a
database `midpay migrate` has not brought up to date); exit 3 only for a server that
cannot be reached.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from midpay.db import migrate


def _only_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr
    return str(lines[0])


# --- flags ----------------------------------------------------------------------------

RANGE = "is not in the range"
FLAGS = [
    (("reconcile", "--min-age", "inf"), f"'--min-age': inf {RANGE} 0<=x<=1000000000. (see `midpay reconcile --help`)"),
    (("reconcile", "--min-age", "nan"), "'--min-age': nan is not a finite number (see `midpay reconcile --help`)"),
    (("reconcile", "--recheck-after", "nan"), "'--recheck-after': nan is not a finite number"),
    (("reconcile", "--recheck-after", "-1"), f"'--recheck-after': -1.0 {RANGE} 0<=x<=1000000000."),
    (("reconcile", "--refund-recheck-after", "nan"), "'--refund-recheck-after': nan is not a finite number"),
    (("reconcile", "--refund-recheck-after", "-1"), f"'--refund-recheck-after': -1.0 {RANGE} 0<=x<=1000000000."),
    (("reconcile", "--grace", "1e400"), f"'--grace': inf {RANGE} 0<=x<=1000000000."),
    (("reconcile", "--max-rps", "0"), f"'--max-rps': 0.0 {RANGE} 0.01<=x<=100000."),
    (("reconcile", "--max-rps", "nan"), "'--max-rps': nan is not a finite number"),
    (("reconcile", "--lease", "0.5"), f"'--lease': 0.5 {RANGE} 1<=x<=86400."),
    (("reconcile", "--limit", "99999999999999999999"), f"'--limit': 99999999999999999999 {RANGE} 1<=x<=1000000000."),
    (("reconcile", "--concurrency", "0"), f"'--concurrency': 0 {RANGE} 1<=x<=128."),
    (("charge", "--amount", "1000", "--user-id", "9223372036854775808"),
     f"'--user-id': 9223372036854775808 {RANGE} -9223372036854775808<=x<=9223372036854775807."),
    (("charge", "--amount", "1000", "--wait", "--timeout", "nan"), "'--timeout': nan is not a finite number"),
    (("charge", "--amount", "1000", "--wait", "--timeout", "0"), f"'--timeout': 0.0 {RANGE} 1<=x<=691200."),
    (("payments", "--limit", "0"), f"'--limit': 0 {RANGE} 1<=x<=1000000000."),
]


@pytest.mark.parametrize(("args", "message"), FLAGS, ids=[" ".join(a) for a, _ in FLAGS])
def test_a_bad_flag_is_one_line_and_exit_2(cli: Any, sandbox: Any, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result
    assert _only_line(result).startswith(f"Error: Invalid value for {message}")
    assert sandbox.stats()["requests"] == 0


def test_unknown_option_and_missing_argument_are_one_line(cli: Any) -> None:
    unknown = cli("reconcile", "--bogus")
    assert unknown.exit_code == 2
    assert _only_line(unknown) == "Error: No such option: --bogus (see `midpay reconcile --help`)"
    missing = cli("status")
    assert missing.exit_code == 2
    assert _only_line(missing) == "Error: Missing argument 'ORDER_ID'. (see `midpay status --help`)"
    timeout = cli("charge", "--amount", "1000", "--timeout", "5")
    assert timeout.exit_code == 2 and _only_line(timeout) == "Error: --timeout only applies with --wait"


# --- configuration --------------------------------------------------------------------

CONFIG = [
    ({"MIDTRANS_API_URL": "http://[::1"}, "MIDTRANS_API_URL is not a valid URL (Invalid IPv6 URL): 'http://[::1'"),
    ({"MIDTRANS_API_URL": "http://127.0.0.1:99999"},
     "MIDTRANS_API_URL is not a valid URL (Port out of range 0-65535): 'http://127.0.0.1:99999'"),
    ({"MIDTRANS_API_URL": "http://127.0.0.1:0"}, "MIDTRANS_API_URL has port 0, which nothing listens on"),
    ({"MIDTRANS_API_URL": "ftp://127.0.0.1"}, "MIDTRANS_API_URL must be an http:// or https:// URL with a host"),
    ({"MIDTRANS_API_URL": "http://127.0.0.1:8765/?x=1"}, "MIDTRANS_API_URL must be a base URL without ?query"),
    ({"MIDTRANS_API_URL": "http://user:pw@127.0.0.1"}, "MIDTRANS_API_URL must not carry a user name or password"),
    ({"MIDPAY_TIMEOUT": "nan"}, "MIDPAY_TIMEOUT must be between 0 and 600 seconds, not 'nan'"),
    ({"MIDPAY_TIMEOUT": "inf"}, "MIDPAY_TIMEOUT must be between 0 and 600 seconds, not 'inf'"),
    ({"MIDTRANS_IS_PRODUCTION": "perhaps"}, "MIDTRANS_IS_PRODUCTION must be true or false, not 'perhaps'"),
]


@pytest.mark.parametrize(("variables", "message"), CONFIG, ids=[next(iter(v.values())) for v, _ in CONFIG])
@pytest.mark.parametrize("command", [("status", "x"), ("reconcile",)], ids=["status", "reconcile"])
def test_a_malformed_configuration_value_is_one_line_and_exit_2(
    cli: Any, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str, command: tuple[str, ...]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = cli(*command)
    assert result.exit_code == 2, result
    assert _only_line(result).startswith(f"Error: {message}")


def test_midpay_home_that_is_a_file_is_exit_2(cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    monkeypatch.setenv("MIDPAY_HOME", str(home))
    result = cli("status", "x")
    assert result.exit_code == 2
    assert _only_line(result) == f"Error: MIDPAY_HOME must be a directory, but {home} is a file"
    monkeypatch.setenv("MIDPAY_HOME", str(home / "below"))
    below = cli("reconcile")
    assert below.exit_code == 2
    assert _only_line(below) == f"Error: MIDPAY_HOME must be a directory, but {home / 'below'} is under {home}, " \
        "which is a file"


# --- the schema, checked before anything is touched -------------------------------------

COMMANDS = [
    ("status", "x"), ("reconcile", "--min-age", "0"), ("charge", "--amount", "10000"), ("payments",),
    ("events",), ("replay-webhook", "-"), ("cancel", "x", "--yes"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_database_never_migrated_says_run_migrate(
    cli: Any, monkeypatch: pytest.MonkeyPatch, empty_db_url: str, sandbox: Any, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    result = cli(*command, input="{}")
    assert result.exit_code == 2, result
    assert _only_line(result) == "Error: the database has none of midpay's tables yet: run `midpay migrate`"
    assert sandbox.stats()["requests"] == 0
    with psycopg.connect(empty_db_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)  # nothing created, nothing written


def test_a_pending_migration_says_run_migrate_and_migrate_fixes_it(
    cli: Any, monkeypatch: pytest.MonkeyPatch, db_url: str, sandbox: Any
) -> None:
    last = migrate.load_files()[-1]
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM midpay_schema_migrations WHERE version = %s", (last.version,))
    for command in (("status", "x"), ("reconcile", "--min-age", "0", "--json")):
        result = cli(*command)
        assert result.exit_code == 2, result
        assert _only_line(result) == f"Error: 1 migration is pending ({last.name}): run `midpay migrate`"
        if "--json" in command:  # --json: one document on every path (issue 20), the error in it
            assert result.json()["error"] == _only_line(result).removeprefix("Error: ")
            assert result.json()["exit_code"] == 2
        else:
            assert result.stdout == ""
    assert sandbox.stats()["requests"] == 0
    assert cli("migrate").exit_code == 0
    assert cli("reconcile", "--min-age", "0", "--json").exit_code == 0


def test_an_unknown_migration_says_upgrade(cli: Any, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO midpay_schema_migrations (version, name, checksum, execution_ms) "
            "VALUES (999, '999_from_the_future.sql', repeat('0', 64), 1)"
        )
    result = cli("status", "x")
    assert result.exit_code == 2
    assert _only_line(result) == (
        "Error: the database has migrations this midpay does not know (999_from_the_future.sql; a newer midpay "
        "applied them): upgrade midpay, and see `midpay migrate --status`"
    )


# --- DATABASE_URL refused or unreachable ---------------------------------------------------


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A PostgreSQL of this module alone where role `midpay_pw` must log in with a password."""
    from tests.private_postgres import PrivatePostgres

    server = PrivatePostgres("midpay-pw-pg-")
    try:
        hba = server.pgdata / "pg_hba.conf"
        hba.write_text("local all midpay_pw scram-sha-256\n" + hba.read_text())
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE ROLE midpay_pw LOGIN PASSWORD 'right-password'")
            conn.execute("CREATE DATABASE midpay_pw OWNER midpay_pw")
            conn.execute("SELECT pg_reload_conf()")
        yield server.url("midpay_pw")
    finally:
        server.close()


def _as(url: str, **changes: str) -> str:
    params = conninfo_to_dict(url)
    params.update(changes)
    return make_conninfo(**params)


def test_a_wrong_password_is_exit_2_naming_database_url(
    cli: Any, monkeypatch: pytest.MonkeyPatch, password_server: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", _as(password_server, user="midpay_pw", password="wrong-password"))
    result = cli("status", "x")
    assert result.exit_code == 2, result
    line = _only_line(result)
    assert line.startswith("Error: PostgreSQL refused the connection that DATABASE_URL describes: ")
    assert 'password authentication failed for user "midpay_pw"' in line
    assert "wrong-password" not in result.stdout + result.stderr


def test_a_missing_database_is_exit_2_naming_database_url(
    cli: Any, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", _as(db_url, dbname="midpay_no_such_database"))
    for command in (("status", "x"), ("reconcile",), ("migrate",)):
        result = cli(*command)
        assert result.exit_code == 2, result
        line = _only_line(result)
        assert line.startswith("Error: PostgreSQL refused the connection that DATABASE_URL describes: ")
        assert line.endswith('database "midpay_no_such_database" does not exist')


def test_only_an_unreachable_server_is_exit_3(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://someone@127.0.0.1:{port}/x")
    result = cli("status", "x")
    assert result.exit_code == 3
    assert _only_line(result).startswith("Error: cannot connect to PostgreSQL: ")
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@127.0.0.1:abc/x")
    unreadable = cli("status", "x")
    assert unreadable.exit_code == 2
    assert _only_line(unreadable).startswith("Error: DATABASE_URL is not a postgresql:// URL midpay can read")
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@127.0.0.1/x?bogus=1")
    unusable = cli("status", "x")
    assert unusable.exit_code == 2
    assert _only_line(unusable) == (
        'Error: DATABASE_URL is not a usable PostgreSQL URL: invalid URI query parameter: "bogus"'
    )
