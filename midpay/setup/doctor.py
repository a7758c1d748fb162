"""``midpay doctor``: is this installation ready to take payments? One check per concern, each with what to do.

    configuration  the settings read (which database, which Midtrans, the key's kind)
    embedded       with DATABASE_URL=embedded: the server's state and who runs it
    database       PostgreSQL reachable with DATABASE_URL
    migrations     every migration applied, none edited, none unknown to this midpay
    midtrans key   a Get Status of an order that cannot exist: 404 means the key is
                   accepted, 401 that it is not (nothing is created at Midtrans)
    clock          this machine against PostgreSQL's clock and the Date of Midtrans' answer

A check is ``ok``, ``warn`` (works, but look), ``fail``, or ``skip`` (an earlier check
failed). Nothing here prints; every message is made of settings, codes and
PostgreSQL's or Midtrans' first line, with secrets redacted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from midpay.errors import MidpayError

if TYPE_CHECKING:
    from midpay.config import Settings
    from midpay.db import Connection

Status = Literal["ok", "warn", "fail", "skip"]
CLOCK_WARN_SECONDS = 5.0
CLOCK_FAIL_SECONDS = 60.0


@dataclass(frozen=True)
class Check:
    """One check's result; ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    secrets: list[str]
    checks: list[Check] = field(default_factory=list)

    def add(
        self, name: str, status: Status, detail: str, fix: str | None = None, facts: dict[str, Any] | None = None
    ) -> None:
        from midpay.config.redaction import redact

        clean = redact(detail, self.secrets)
        self.checks.append(Check(name, status, clean, redact(fix, self.secrets) if fix else None, facts or {}))

    def failed(self, name: str) -> bool:
        return any(c.name == name and c.status in ("fail", "skip") for c in self.checks)


def run(env_file: Path | None = None) -> list[Check]:
    """Every check, in order; a check whose prerequisite failed is skipped."""
    from midpay.config import load_settings

    try:
        settings = load_settings(env_file)
    except MidpayError as exc:
        return [Check("configuration", "fail", str(exc), "fix the variable named above (see README, Configuration)")]
    checks = _Run(settings.secrets())
    _configuration(checks, settings)
    conn = _database(checks, settings)
    local_now = datetime.now(UTC)
    db_now = None
    if conn is not None:
        with conn:
            _migrations(checks, conn)
            from midpay.db import database_now

            db_now = database_now(conn)
    midtrans_date = _midtrans_key(checks, settings)
    _clock(checks, local_now, db_now, midtrans_date)
    return checks.checks


def _configuration(checks: _Run, settings: Settings) -> None:
    database = "embedded" if settings.database_url == "embedded" else ("set" if settings.database_url else "not set")
    key = "not set"
    if settings.server_key:
        key = "sandbox key" if settings.server_key.startswith("SB-") else "production key"
    detail = f"DATABASE_URL {database}; MIDTRANS_SERVER_KEY {key}; Midtrans at {settings.api_url}; home {settings.home}"
    missing = [name for name, value in (("DATABASE_URL", settings.database_url), ("MIDTRANS_SERVER_KEY",
                                                                                 settings.server_key)) if not value]
    if missing:
        checks.add("configuration", "fail", detail, f"set {' and '.join(missing)} (in the environment or .env)")
    else:
        facts = {"api_url": settings.api_url, "production": settings.is_production}
        checks.add("configuration", "ok", detail, facts=facts)


def _database(checks: _Run, settings: Settings) -> Connection | None:
    from midpay import db, embedded

    if settings.database_url == "embedded":
        before = embedded.status(settings.home)
        try:
            url = embedded.resolve_url(settings)
        except MidpayError as exc:
            checks.add("embedded", "fail", f"{before.state}; {exc}", "see the message; `midpay db status` shows more")
            checks.add("database", "skip", "the embedded PostgreSQL is not available")
            return None
        now = embedded.status(settings.home)
        started = " (started now; `midpay db stop` stops it)" if before.state != "running" else ""
        checks.add("embedded", "ok", f"running, pid {now.pid}, data in {now.pgdata}{started}", facts={"pid": now.pid})
    elif not settings.database_url:
        checks.add("database", "skip", "DATABASE_URL is not set")
        return None
    else:
        try:
            url = embedded.resolve_url(settings)
        except MidpayError as exc:
            checks.add("database", "fail", str(exc), "correct DATABASE_URL")
            return None
    try:
        conn = db.connect(url)
    except MidpayError as exc:
        checks.add("database", "fail", str(exc), "check that PostgreSQL runs and that DATABASE_URL's host, port, "
                   "user, password and database are right")
        return None
    version = conn.execute("SHOW server_version").fetchone()
    checks.add("database", "ok", f"reachable, PostgreSQL {version[0] if version else '?'}")
    return conn


def _migrations(checks: _Run, conn: Connection) -> None:
    from midpay.db import migrate

    try:
        ready = migrate.readiness(migrate.load_files(), migrate.read_applied(conn))
        conn.rollback()
    except MidpayError as exc:
        ready = migrate.Readiness(0, [], [], str(exc))
    if ready.refused is not None:
        checks.add("migrations", "fail", ready.refused, "see the message; `midpay migrate --status` lists every file")
    elif ready.unknown:
        unknown = ", ".join(a.name for a in ready.unknown)
        checks.add("migrations", "fail", f"applied but unknown to this midpay: {unknown}",
                   "upgrade midpay to the version that wrote them")
    elif ready.pending:
        names = ", ".join(f.name for f in ready.pending)
        checks.add("migrations", "fail", f"{len(ready.pending)} pending: {names}", "run `midpay migrate`",
                   facts={"pending": [f.name for f in ready.pending]})
    else:
        checks.add("migrations", "ok", f"all {ready.applied} applied", facts={"applied": ready.applied})


def _midtrans_key(checks: _Run, settings: Settings) -> datetime | None:
    from midpay.errors import GatewayAuthError, GatewayError, TransactionNotFound
    from midpay.midtrans.gateway import AUTH_HINT, Gateway

    if not settings.server_key:
        checks.add("midtrans key", "skip", "MIDTRANS_SERVER_KEY is not set")
        return None
    probe = f"midpay-doctor-{uuid.uuid4().hex[:16]}"
    with Gateway(base_url=settings.api_url, server_key=settings.server_key, timeout=settings.timeout,
                 retries=1, pool_size=1) as gateway:
        try:
            gateway.status(probe)
        except TransactionNotFound:
            checks.add("midtrans key", "ok", f"accepted by {settings.api_url} (an order that cannot exist: 404)")
        except GatewayAuthError:
            checks.add("midtrans key", "fail", f"refused by {settings.api_url} (401)", AUTH_HINT)
        except GatewayError as exc:
            checks.add("midtrans key", "fail", str(exc), "check the network, MIDTRANS_API_URL and MIDPAY_TIMEOUT")
        except MidpayError as exc:
            checks.add("midtrans key", "warn", f"an unexpected answer to a status check: {exc}")
        else:
            checks.add("midtrans key", "warn", f"Midtrans answered for the probe order {probe}, which should not exist")
        raw_date = gateway.last_date
    try:
        return parsedate_to_datetime(raw_date) if raw_date else None
    except (TypeError, ValueError):
        return None


def _clock(checks: _Run, local: datetime, database: datetime | None, midtrans: datetime | None) -> None:
    skews = {}
    if database is not None:
        skews["PostgreSQL"] = (local - database).total_seconds()
    if midtrans is not None:
        skews["Midtrans"] = (local - midtrans).total_seconds()
    if not skews:
        checks.add("clock", "skip", "nothing to compare this machine's clock with")
        return
    detail = "; ".join(f"{name} {seconds:+.1f} s" for name, seconds in skews.items())
    worst = max(abs(s) for s in skews.values())
    facts = {f"skew_seconds_{name.lower()}": round(s, 3) for name, s in skews.items()}
    fix = "synchronise the clock (NTP, e.g. systemd-timesyncd or chrony) on this machine or the database server"
    if worst > CLOCK_FAIL_SECONDS:
        checks.add("clock", "fail", f"this machine is off by {detail}", fix, facts)
    elif worst > CLOCK_WARN_SECONDS:
        checks.add("clock", "warn", f"this machine is off by {detail}", fix, facts)
    else:
        checks.add("clock", "ok", f"within {CLOCK_WARN_SECONDS:g} s ({detail})", facts=facts)
