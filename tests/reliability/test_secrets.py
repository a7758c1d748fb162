"""Scenario 6: the server key and the database password never show, whatever the command and however it fails.

Every command runs against a sandbox that knows the canary server key, with a
database URL that carries the canary password (a role created with that password;
the embedded server trusts local connections, so the URL still carries it), once
succeeding and once forced to fail: database unreachable or its URL malformed,
Midtrans unreachable, Midtrans refusing the key (401), malformed input. Neither
canary (nor the Basic-auth token built from the key) may appear on stdout or stderr.
The quick variant runs the commands in-process; the slow one as real processes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from midpay.midtrans.gateway import Gateway
from midpay.payments import charge as charges
from midpay.payments import refresh
from midpay.sandbox import SandboxServer

from .conftest import Figures, process_env

KEY = "SB-Mid-server-S3CRET-canary-9f8e"
PASSWORD = "pw-canary-7d6c"
ROLE = "midpay_canary"
FORBIDDEN = (KEY, PASSWORD, base64.b64encode(f"{KEY}:".encode()).decode())
NOWHERE = "http://127.0.0.1:1"
BAD_DB = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:1/x"

# Malformed URLs that libpq quotes back whole in its error message, and that Python's
# urlsplit cannot parse, so config.Settings.secrets() finds no password to redact.


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    exits: frozenset[int]
    env: dict[str, str | None] = field(default_factory=dict)
    leaks: bool = False  # set for a case whose output may quote a secret on purpose (none today)


def _c(
    name: str, args: str | tuple[str, ...], exits: int | tuple[int, ...], leaks: bool = False, **env: str | None
) -> Case:
    argv = tuple(args.split()) if isinstance(args, str) else args
    codes = frozenset((exits,) if isinstance(exits, int) else exits)
    return Case(name, argv, codes, dict(env), leaks)


@dataclass
class World:
    env: dict[str, str]  # the canary environment
    empty_url: str
    wrong_key_url: str
    folder: Path


def _canary_url(url: str) -> str:
    """``url`` as a postgresql:// URL that logs in as the canary role with its password."""
    params = conninfo_to_dict(url)
    host = quote(str(params.get("host", "")), safe="")
    port = f"&port={params['port']}" if params.get("port") else ""
    return f"postgresql://{ROLE}:{PASSWORD}@/{params['dbname']}?host={host}{port}"


@pytest.fixture(scope="session")
def canary_role(pg_admin_url: str) -> Iterator[str]:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        try:
            conn.execute(f"{verb} ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the secrets scenario needs a test server whose admin role may create a superuser")
    yield ROLE
    try:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
    except psycopg.Error:
        pass  # still owns objects in a database another test keeps: left for the server's cleanup


@pytest.fixture
def world(
    canary_role: str, env: dict[str, str], db_url: str, empty_db_url: str, tmp_path: Path
) -> Iterator[World]:
    url = _canary_url(db_url)
    with (
        SandboxServer(server_key=KEY, seed=3) as sandbox,
        SandboxServer(server_key="SB-Mid-server-someone-else", seed=4) as wrong,
        Gateway(base_url=sandbox.url, server_key=KEY, timeout=5.0, backoff=0.01) as gateway,
        psycopg.connect(url) as conn,
    ):
        for order_id in ("sec-pending", "sec-cancel", "sec-expire", "sec-paid", "sec-pay-me", "sec-notify"):
            charges.charge(conn, gateway, amount=25000, order_id=order_id)
        sandbox.pay("sec-paid", "settlement")
        refresh.refresh(conn, gateway, "sec-paid")
        folder = tmp_path / "files"
        folder.mkdir()
        notification = sandbox.pay("sec-notify", "settlement")
        (folder / "valid.json").write_text(json.dumps(notification))
        (folder / "forged.json").write_text(json.dumps({**notification, "signature_key": "0" * 128}))
        (folder / "garbage.json").write_bytes(b"\xff{not json")
        (folder / "broken.env").write_text(f"MIDTRANS_SERVER_KEY={KEY}\nthis line is = 'broken\nDATABASE_URL={url}\n")
        canary = {
            **env, "DATABASE_URL": url, "MIDTRANS_SERVER_KEY": KEY, "MIDTRANS_API_URL": sandbox.url,
            "MIDPAY_TIMEOUT": "3",
        }
        yield World(canary, _canary_url(empty_db_url), wrong.url, folder)


def _cases(world: World, *, include_slow: bool) -> list[Case]:
    f = world.folder
    wrong = world.wrong_key_url
    cases = [
        # database unreachable, the password in its URL
        *(
            _c(f"db-down:{' '.join(args)}", args, 3, DATABASE_URL=BAD_DB)
            for args in (
                ("migrate",), ("migrate", "--status", "--json"), ("charge", "--amount", "10000", "--json"),
                ("status", "sec-pending"), ("replay-webhook", str(f / "valid.json"), "--json"), ("payments",),
                ("events", "--json"), ("events", "reprocess"), ("cancel", "sec-cancel", "--yes"),
                ("expire", "sec-expire", "--yes"), ("refund", "sec-paid", "--yes"),
                *((("reconcile", "--min-age", "0", "--json"),) if include_slow else ()),
            )
        ),
        # database URL malformed, the password inside it: refused as configuration (2) when
        # midpay or libpq cannot read it; a URL both read that points nowhere is unreachable (3)
        _c("db-bad-port", "status sec-pending", 2, DATABASE_URL=f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:abc/x"),
        _c("db-bad-escape", "status sec-pending", 3, DATABASE_URL=f"postgresql://{ROLE}:{PASSWORD}%zz@127.0.0.1/x"),
        _c("db-bad-param", "status sec-pending", 2, DATABASE_URL=f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1/x?bogus=1"),
        _c("db-keyword-form", "status sec-pending", 3,
           DATABASE_URL=f"host=127.0.0.1 port=1 user={ROLE} password={PASSWORD} dbname=x"),
        _c("db-unbalanced-ipv6", "status sec-pending", 2,
           DATABASE_URL=f"postgresql://{ROLE}:{PASSWORD}@[::1/x"),
        _c("db-empty-ipv6", "migrate", 2, DATABASE_URL=f"postgresql://{ROLE}:{PASSWORD}@[]/x"),
        _c("db-not-a-url", "status sec-pending", 2, DATABASE_URL=f"mysql://{ROLE}:{PASSWORD}@127.0.0.1/x"),
        # Midtrans unreachable
        _c("mt-down:charge", "charge --amount 10000 --json", 3, MIDTRANS_API_URL=NOWHERE),
        _c("mt-down:status", "status sec-pending --json", 3, MIDTRANS_API_URL=NOWHERE),
        *(
            (
                _c("mt-down:reconcile", "reconcile --min-age 0 --json", (1, 3), MIDTRANS_API_URL=NOWHERE),
                _c("mt-down:cancel", "cancel sec-cancel --yes", 3, MIDTRANS_API_URL=NOWHERE),
                _c("mt-down:expire", "expire sec-expire --yes --json", 3, MIDTRANS_API_URL=NOWHERE),
                _c("mt-down:refund", "refund sec-paid --yes", 3, MIDTRANS_API_URL=NOWHERE),
                _c("mt-down:sandbox-pay", "sandbox pay sec-pay-me", 3, MIDTRANS_API_URL=NOWHERE),
            )
            if include_slow
            else ()
        ),
        # Midtrans refusing the key: 401
        _c("401:charge", "charge --amount 10000 --json", 2, MIDTRANS_API_URL=wrong),
        _c("401:status", "status sec-pending", 2, MIDTRANS_API_URL=wrong),
        _c("401:reconcile", "reconcile --min-age 0 --recheck-after 0 --json", (1, 2), MIDTRANS_API_URL=wrong),
        _c("401:cancel", "cancel sec-cancel --yes", (1, 2), MIDTRANS_API_URL=wrong),
        _c("401:refund", "refund sec-paid --yes --json", (1, 2), MIDTRANS_API_URL=wrong),
        # malformed input and configuration
        _c("bad-amount", "charge --amount 0", 2),
        _c("bad-amount-text", "charge --amount lots", 2),
        _c("bad-order-id", ("charge", "--amount", "1000", "--order-id", "bad id/../x"), 2),
        _c("unknown-order", "status no-such-order --json", 1),
        _c("forged-body", ("replay-webhook", str(f / "forged.json"), "--json"), 1),
        _c("garbage-body", ("replay-webhook", str(f / "garbage.json")), 1),
        _c("missing-file", ("replay-webhook", str(f / "missing.json")), 2),
        _c("bad-flag", "reconcile --concurrency 0", 2),
        _c("bad-timeout", "status sec-pending", 2, MIDPAY_TIMEOUT="soon"),
        _c("bad-production", "status sec-pending", 2, MIDTRANS_IS_PRODUCTION="maybe"),
        _c("sandbox-key-in-production", "charge --amount 1000", 2, MIDTRANS_IS_PRODUCTION="true"),
        _c("missing-env-file", ("--env-file", str(f / "nope.env"), "status", "sec-pending"), 2),
        _c("broken-env-file", ("--env-file", str(f / "broken.env"), "payments", "--json"), 0,
           MIDTRANS_SERVER_KEY=None, DATABASE_URL=None),
        _c("no-key", "replay-webhook -", 2, MIDTRANS_SERVER_KEY=None),
        # succeeding
        _c("migrate", "migrate", 0),
        _c("migrate-empty-db", "migrate --json", 0, DATABASE_URL=world.empty_url),
        _c("migrate-status", "migrate --status", 0),
        _c("migrate-status-json", "migrate --status --json", 0),
        _c("migrate-dry-run", "migrate --dry-run --json", 0),
        _c("charge", "charge --amount 15000 --json", 0),
        _c("charge-qris-human", "charge --amount 16000 --qris", 0),
        _c("status", "status sec-pending --json", 0),
        _c("status-human", "status sec-pending", 0),
        _c("reconcile", "reconcile --min-age 0 --recheck-after 0 --json", 0),
        _c("reconcile-human", "reconcile --min-age 0 --recheck-after 0", 0),
        _c("replay", ("replay-webhook", str(f / "valid.json"), "--json"), 0),
        _c("replay-human", ("replay-webhook", str(f / "valid.json")), 0),
        _c("sandbox-pay", "sandbox pay sec-pay-me", 0),
        _c("payments", "payments --json", 0),
        _c("payments-human", "payments", 0),
        _c("events", "events --json", 0),
        _c("events-human", "events", 0),
        _c("events-reprocess", "events reprocess --json", (0, 1)),
        _c("cancel", "cancel sec-cancel --yes --json", 0),
        _c("expire", "expire sec-expire --yes", 0),
        _c("refund", "refund sec-paid --yes --json", 0),
        _c("version", "--version", 0),
        _c("help", "--help", 0),
    ]
    return cases


def _run_in_process(case: Case, base: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from midpay.cli import app

    result = CliRunner().invoke(app, list(case.args), env={**base, **case.env}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _run_process(case: Case, base: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "midpay", *case.args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env=process_env(base, **case.env), stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _leaks(output: str) -> list[str]:
    return [name for name, secret in zip(("server key", "db password", "basic token"), FORBIDDEN, strict=True)
            if secret in output]


def _matrix(world: World, runner: Any, figures: Figures, *, include_slow: bool) -> None:
    cases = [c for c in _cases(world, include_slow=include_slow) if not c.leaks]
    problems: list[str] = []
    for case in cases:
        code, out, err = runner(case, world.env, world.folder)
        leaked = _leaks(out + err)
        if leaked:
            problems.append(f"{case.name}: {', '.join(leaked)} in the output")
        if "Traceback" in err:
            problems.append(f"{case.name}: traceback")
        if code not in case.exits:
            problems.append(f"{case.name}: exit {code}, expected {sorted(case.exits)}: {err.strip()[-300:]}")
        figures.events += 1
    figures.processes = len(cases) if runner is _run_process else 0
    figures.faults_injected = sum(1 for c in cases if 0 not in c.exits)
    figures.wrongly_applied = sum(1 for p in problems if "in the output" in p)
    figures.lost = 0
    figures.notes = {"commands": len(cases), "failing_on_purpose": sum(1 for c in cases if 0 not in c.exits),
                     "problems": problems}
    assert problems == []


def test_no_secret_in_any_output_in_process(world: World, figures: Figures) -> None:
    _matrix(world, _run_in_process, figures, include_slow=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_secret_in_any_output_real_processes(world: World, figures: Figures) -> None:
    _matrix(world, _run_process, figures, include_slow=True)


@pytest.mark.parametrize("name", ["db-unbalanced-ipv6", "db-empty-ipv6"])
def test_malformed_database_url_does_not_echo_the_password(world: World, name: str) -> None:
    (case,) = [c for c in _cases(world, include_slow=False) if c.name == name]
    code, out, err = _run_process(case, world.env, world.folder)
    assert code == 2 and "Traceback" not in err
    assert _leaks(out + err) == [], err
