"""The embedded server and the doctor's checks, for people and as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midpay.output.text import iso, join, text, when

if TYPE_CHECKING:
    from rich.console import Console

    from midpay.embedded import ServerStatus
    from midpay.setup.doctor import Check

_STATE_STYLE = {"running": "green", "stopped": "yellow", "absent": "yellow"}
_CHECK_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def server_document(server: ServerStatus, runs_as: str | None, url: str | None) -> dict[str, Any]:
    """``midpay db status --json``; ``url``: the server's, while it runs."""
    return {
        "home": str(server.home),
        "data_dir": str(server.pgdata),
        "state": server.state,
        "pid": server.pid,
        "started_at": iso(server.started_at),
        "socket_dir": str(server.socket_dir) if server.socket_dir else None,
        "postgresql_major": server.major_version,
        "runs_as": runs_as,
        "log": str(server.log) if server.state != "absent" else None,
        "url": url,
    }


def render_server(con: Console, server: ServerStatus, runs_as: str | None, *, configured: bool) -> None:
    """The embedded server of one home: its state, where it lives, how to start or stop it."""
    state = text(server.state, _STATE_STYLE.get(server.state, ""))
    if server.state == "running":
        state = join(state, f" (pid {server.pid}, since {when(server.started_at, zone=True)})")
    con.print(join("Embedded PostgreSQL of ", text(server.home)))
    rows: list[tuple[str, Any]] = [("state", state), ("data", text(server.pgdata))]
    if server.major_version:
        rows.append(("version", text(f"PostgreSQL {server.major_version}")))
    if server.socket_dir:
        rows.append(("socket", text(server.socket_dir)))
    rows.append(("runs as", text(runs_as)))
    if server.state != "absent":
        rows.append(("log", text(server.log)))
    for label, value in rows:
        con.print(join(f"  {label:<8} ", value), soft_wrap=True)
    if server.state == "running":
        con.print(text("Stop it with: midpay db stop"))
    else:
        con.print(text("Any command with DATABASE_URL=embedded starts it (or: midpay db start)."))
    if not configured:
        con.print(text("Note: DATABASE_URL is not `embedded`, so midpay's other commands use another server."))


def doctor_document(checks: list[Check]) -> dict[str, Any]:
    """``midpay doctor --json``."""
    return {
        "ok": all(c.status != "fail" for c in checks),
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix, "facts": c.facts} for c in checks
        ],
    }


def render_doctor(con: Console, checks: list[Check]) -> None:
    """One line per check, with what to do under each one that is not ok."""
    width = max(len(c.name) for c in checks) if checks else 0
    for c in checks:
        mark = text(f"{c.status:<4}", _CHECK_STYLE.get(c.status, ""))
        con.print(join(mark, "  ", text(f"{c.name:<{width}}"), "  ", text(c.detail)), soft_wrap=True)
        if c.fix and c.status != "ok":
            con.print(join(" " * (width + 8), text("→ " + c.fix)), soft_wrap=True)
    failed = [c.name for c in checks if c.status == "fail"]
    con.print(text(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "All checks passed.",
                   "bold red" if failed else "bold green"))
