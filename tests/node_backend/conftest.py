"""The older Node backend's database, built by the real node-pg-migrate from npm.

This directory is a small Node project (package.json pins node-pg-migrate, pg and
Midtrans' official client midtrans-client; the lock file is committed) with the
backend's two migrations, its create route and webhook handler (backend.js), a seed, a
traffic script and the official client's calls (official_client.js). Once per session:

- ``npm ci`` installs it into ./node_modules (not committed);
- a private PostgreSQL cluster from Debian's server packages starts on a Unix socket,
  with ``TimeZone`` America/New_York: neither UTC nor Jakarta, so a time read in the
  wrong zone is off by hours. (Debian's build has pgcrypto, which the migrations
  create; the embedded server of the other tests has no contrib modules.)
- ``npx node-pg-migrate up`` builds a template database from ./migrations, and another
  from ./migrations-sibling (a backend of the same lineage: numeric amounts, shorter
  order ids, upper-case statuses).

Each test gets a copy of a template, seeded by ``node seed.js`` against its own sandbox.
Without Node, npm or Debian's PostgreSQL these tests skip, saying what to install
(``.ci/run`` installs them, and under CI their absence fails); they skip when npm
cannot reach the registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ..conftest import REPO, SERVER_KEY, CliResult
from ..helpers import missing_prerequisite, npm_ci

NODE_DIR = Path(__file__).resolve().parent
SERVER_TIMEZONE = "America/New_York"
MIGRATION_DIRS = {"node": "migrations", "sibling": "migrations-sibling"}


def _missing(what: str) -> None:
    missing_prerequisite(f"the node-pg-migrate tests need {what}")


@pytest.fixture(scope="session")
def node_project() -> Path:
    """This directory with its node_modules installed by ``npm ci`` (once per lock file)."""
    return npm_ci(NODE_DIR, "the node-pg-migrate tests")


def _server_bindir() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True
    ) if Path("/usr/lib/postgresql").is_dir() else []
    return candidates[0].parent if candidates else None


@pytest.fixture(scope="session")
def node_pg() -> Iterator[str]:
    """A private PostgreSQL cluster (Debian's server) on a Unix socket; its maintenance database's URL."""
    bindir = _server_bindir()
    if bindir is None:
        _missing("Debian's PostgreSQL server (apt-get install postgresql)")
    assert bindir is not None
    home = Path(tempfile.mkdtemp(prefix="midpay-node-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(home, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = home / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )
    options = (
        f"-c listen_addresses='' -c unix_socket_directories={home} -c timezone={SERVER_TIMEZONE} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "server.log"), "-o", options,
         "start"],
        check=True, capture_output=True, timeout=120,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={home}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )
        shutil.rmtree(home, ignore_errors=True)


def with_db(url: str, name: str) -> str:
    return re.sub(r"/[^/?]*\?", f"/{name}?", url, count=1)


def node_pg_migrate(url: str, migrations: str = "migrations") -> subprocess.CompletedProcess[str]:
    """``npx node-pg-migrate up`` against ``url``, as the backend's deploy runs it."""
    return subprocess.run(
        ["npx", "--no", "node-pg-migrate", "up", "-m", migrations],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DATABASE_URL": url},
    )


@pytest.fixture(scope="session")
def node_templates(node_project: Path, node_pg: str) -> dict[str, str]:
    """Template databases as node-pg-migrate builds them, one per migrations directory."""
    names: dict[str, str] = {}
    for kind, directory in MIGRATION_DIRS.items():
        name = f"node_template_{kind}"
        with psycopg.connect(node_pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        proc = node_pg_migrate(with_db(node_pg, name), directory)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        names[kind] = name
    return names


@dataclass
class NodeDb:
    """One test's copy of a database node-pg-migrate built."""

    url: str
    migrations: str
    sandbox_url: str
    server_key: str = SERVER_KEY

    def node(self, script: str, *args: str, extra: dict[str, str] | None = None) -> Any:
        """Run ``node SCRIPT ARGS`` of the backend against this database and the sandbox; its JSON output."""
        proc = subprocess.run(
            ["node", script, *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
            env=self.node_env(extra),
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def node_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ, "DATABASE_URL": self.url, "MIDTRANS_API_URL": self.sandbox_url,
            "MIDTRANS_SERVER_KEY": self.server_key, **(extra or {}),
        }

    def migrate_up(self) -> subprocess.CompletedProcess[str]:
        return node_pg_migrate(self.url, self.migrations)


def _copy(admin: str, template: str) -> tuple[str, str]:
    name = f"node_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name, with_db(admin, name)


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def node_db(node_pg: str, node_templates: dict[str, str], sandbox: Any) -> Iterator[NodeDb]:
    """A fresh copy of the Node backend's database (no rows yet), beside this test's sandbox."""
    name, url = _copy(node_pg, node_templates["node"])
    yield NodeDb(url, MIGRATION_DIRS["node"], sandbox.url)
    _drop(node_pg, name)


@pytest.fixture
def sibling_db(node_pg: str, node_templates: dict[str, str], sandbox: Any) -> Iterator[NodeDb]:
    """A fresh copy of the sibling backend's database (numeric amounts, varchar(32) order ids)."""
    name, url = _copy(node_pg, node_templates["sibling"])
    yield NodeDb(url, MIGRATION_DIRS["sibling"], sandbox.url)
    _drop(node_pg, name)


def _midpay_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, sandbox: Any) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL", "PGTZ")):
            monkeypatch.delenv(name, raising=False)
    values = {
        "DATABASE_URL": url, "MIDTRANS_SERVER_KEY": SERVER_KEY, "MIDTRANS_API_URL": sandbox.url,
        "MIDPAY_HOME": str(tmp_path / "home"), "MIDPAY_TIMEOUT": "5", "COLUMNS": "160", "NO_COLOR": "1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return values


def _runner() -> Any:
    from typer.testing import CliRunner

    from midpay.cli import app

    def run(*args: str, input: str | None = None) -> CliResult:
        result = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def node_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, node_db: NodeDb, sandbox: Any) -> Any:
    """midpay in-process, pointed at the Node backend's database and the sandbox."""
    _midpay_env(monkeypatch, tmp_path, node_db.url, sandbox)
    return _runner()


@pytest.fixture
def sibling_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sibling_db: NodeDb, sandbox: Any) -> Any:
    """midpay in-process, pointed at the sibling backend's database and the sandbox."""
    _midpay_env(monkeypatch, tmp_path, sibling_db.url, sandbox)
    return _runner()


def midpay_process(args: list[str], url: str, sandbox_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m midpay ARGS`` as a real process against ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_", "DATABASE_URL"))}
    env.update({
        "DATABASE_URL": url, "MIDTRANS_SERVER_KEY": SERVER_KEY, "MIDTRANS_API_URL": sandbox_url,
        "MIDPAY_TIMEOUT": "5", "PYTHONPATH": str(REPO), **extra,
    })
    import sys

    return subprocess.run(
        [sys.executable, "-m", "midpay", *args], capture_output=True, text=True, env=env, timeout=300,
    )
