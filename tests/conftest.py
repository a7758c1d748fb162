"""Shared fixtures: a real PostgreSQL, a fresh database per test, the sandbox over HTTP.

The server is midpay's embedded one (midpay.embedded) unless MIDPAY_TEST_DATABASE_URL
names another; that role needs CREATEDB. A template database is migrated once per
session and every test gets its own copy, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
SERVER_KEY = "SB-Mid-server-test-key-0123456789"
TEMPLATE = "midpay_test_template"


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL of the server's maintenance database.

    The embedded server lives in its own temporary directory, outside pytest's
    rotating basetemp (a concurrent pytest session may prune old basetemps), and is
    stopped and deleted when the session ends.
    """
    external = os.environ.get("MIDPAY_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import shutil
    import tempfile

    from midpay import embedded

    home = Path(tempfile.mkdtemp(prefix="midpay-test-pg-"))
    home.chmod(0o711)  # as root the server runs as nobody, who must pass through
    try:
        server = embedded.start(home)
        yield embedded.url(server, "postgres")
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    """A database with every migration applied, copied for each test."""
    from midpay.db import migrate

    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _with_db(pg_admin_url, TEMPLATE)
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    return url


def _create_database(admin_url: str, template: str | None) -> tuple[str, str]:
    name = f"midpay_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, _with_db(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh, fully migrated database for this test."""
    name, url = _create_database(pg_admin_url, TEMPLATE)
    yield url
    _drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with no tables at all."""
    name, url = _create_database(pg_admin_url, None)
    yield url
    _drop_database(pg_admin_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as c:
        yield c


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """Where the ``sandbox`` writes every notification it sends (a test can replay them)."""
    return tmp_path / "notes"


@pytest.fixture
def sandbox_key() -> str | None:
    """The server key the ``sandbox`` starts with; None is the sandbox's development key.

    A folder or module whose tests need another key overrides this fixture, never
    ``sandbox`` itself: the sandbox is started in one place.
    """
    return SERVER_KEY


@pytest.fixture
def sandbox(sandbox_key: str | None, notes: Path) -> Iterator[Any]:
    """The local Midtrans, in-process, over real HTTP on loopback, writing its notifications into ``notes``."""
    from midpay.sandbox import SandboxServer

    with SandboxServer(server_key=sandbox_key, seed=1, notify_dir=notes) as server:
        yield server


@pytest.fixture
def gateway(sandbox: Any) -> Iterator[Any]:
    from midpay.midtrans.gateway import Gateway

    with Gateway(base_url=sandbox.url, server_key=SERVER_KEY, timeout=5.0, backoff=0.01) as gw:
        yield gw


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str, sandbox: Any) -> dict[str, str]:
    """A clean environment pointing midpay at this test's database and sandbox."""
    for name in list(os.environ):
        if name.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL")):
            monkeypatch.delenv(name, raising=False)
    values = {
        "DATABASE_URL": db_url,
        "MIDTRANS_SERVER_KEY": SERVER_KEY,
        "MIDTRANS_API_URL": sandbox.url,
        "MIDPAY_HOME": str(tmp_path / "home"),
        "MIDPAY_TIMEOUT": "5",
        "COLUMNS": "120",
        "NO_COLOR": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return values


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.exit_code = code
        self.stdout = stdout
        self.stderr = stderr

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"CliResult(exit={self.exit_code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def cli(env: dict[str, str]) -> Any:
    """Run midpay in-process with the test environment; returns exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from midpay.cli import app

    def run(*args: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def cli_process(env: dict[str, str]) -> Any:
    """Run midpay as a real process (python -m midpay) with the test environment."""
    import subprocess

    def run(*args: str, input: str | None = None, timeout: float = 60) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "midpay", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
