"""``midpay demo``: the whole lifecycle on embedded parts, with no configuration at all.

An embedded PostgreSQL under ``<MIDPAY_HOME>/demo`` and an in-process sandbox stand
in for the real ones; every step runs the same use-case code as the commands do
(migrate, charge, status, replay-webhook, reconcile). Each run starts from a fresh
demo database, so it can be repeated at will; the data stays until the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from midpay.config import Settings


@dataclass(frozen=True)
class DemoReport:
    """What the demo did, for its closing account."""

    order_id: str
    amount: int
    final_status: str
    paid_at: str | None
    notification_file: Path
    reconciled: int
    seconds: float
    home: Path


def demo_home(settings: Settings) -> Path:
    """The demo's own place, apart from the user's real midpay data."""
    return settings.home / "demo"


def _fresh_database(home: Path) -> str:
    import psycopg
    from psycopg import sql

    from midpay import embedded
    from midpay.errors import DatabaseUnavailable

    admin = embedded.ensure_server(home, database="postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(embedded.DATABASE)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(embedded.DATABASE)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"the demo database could not be prepared: {str(exc).strip()}") from exc
    return embedded.ensure_server(home)


def run(settings: Settings, con: Console, step: Callable[[str], None]) -> DemoReport:
    """Walk one payment from charge to settlement through the real code paths."""
    from midpay import bodies, charges, db, intake, migrate, output, refresh
    from midpay import reconcile as reconciling
    from midpay.gateway import Gateway
    from midpay.sandbox import DEV_SERVER_KEY, SandboxServer

    started = time.monotonic()
    home = demo_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    notify_dir = home / "notifications"

    step("Starting the embedded PostgreSQL and a fresh demo database")
    url = _fresh_database(home)
    con.print(f"  database: embedded PostgreSQL in {home / 'pgdata'}")

    step("midpay migrate")
    with db.connect(url) as conn:
        applied = migrate.migrate(conn)
    con.print(f"  applied {len(applied)} migration(s): " + ", ".join(f.name for f in applied))

    with SandboxServer(server_key=DEV_SERVER_KEY, notify_dir=notify_dir) as sandbox:
        con.print(f"  Midtrans sandbox listening on {sandbox.url} (development key, in-process)")
        with Gateway(base_url=sandbox.url, server_key=DEV_SERVER_KEY, timeout=10.0) as gateway, db.connect(url) as conn:
            amount = 154_600
            step(f"midpay charge --amount {amount} --qris")
            charged = charges.charge(conn, gateway, amount=amount, qris=True, user_id=1)
            order_id = charged.payment.order_id
            output.render_payment(con, charged.payment, title="Charge created", show_qr=True)

            step(f"midpay status {order_id}")
            outcome = refresh.refresh(conn, gateway, order_id)
            con.print(f"  Midtrans says: {output.status_text(outcome.payment.status)} (the customer has not paid yet)")

            step("The customer scans the QR and pays (midpay sandbox pay)")
            sandbox.pay(order_id, "settlement")
            files = sorted(notify_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
            notification = next(p for p in reversed(files) if "settlement" in p.name)
            con.print(f"  Midtrans sent a signed notification; saved as {notification}")

            step(f"midpay replay-webhook {notification.name}")
            received = list(bodies.iter_bodies([str(notification)]))
            results = [intake.process_notification(conn, body, DEV_SERVER_KEY) for body in received]
            output.render_notifications(con, results, dry_run=False)

            step(f"midpay status {order_id}")
            final = refresh.refresh(conn, gateway, order_id).payment
            output.render_payment(con, final, title="Paid")

        step("midpay reconcile --min-age 0")
        with Gateway(base_url=sandbox.url, server_key=DEV_SERVER_KEY, timeout=10.0) as gateway:
            summary = reconciling.reconcile(url, gateway, min_age=0, concurrency=4)
        output.render_reconcile(con, [], summary, dry_run=False)

    return DemoReport(
        order_id=order_id,
        amount=amount,
        final_status=final.status,
        paid_at=output.iso(final.paid_at),
        notification_file=notification,
        reconciled=summary.checked,
        seconds=time.monotonic() - started,
        home=home,
    )


def render_account(con: Console, report: DemoReport) -> None:
    """What happened, and the commands to try next."""
    from rich.panel import Panel

    from midpay.output import rupiah
    from midpay.sandbox import DEV_SERVER_KEY

    ok = report.final_status == "settlement" and report.paid_at is not None
    lines = [
        f"Order {report.order_id} for {rupiah(report.amount)} went created → pending → {report.final_status}"
        + (f", paid at {report.paid_at}." if report.paid_at else "."),
        "The notification was stored, its signature verified, its amount checked, and applied once;",
        f"reconcile then found {report.reconciled} open payment(s) to check. Took {report.seconds:.1f} s.",
        "",
        "Try it yourself against a sandbox that keeps running:",
        f"  export MIDPAY_HOME={report.home}",
        "  export DATABASE_URL=embedded",
        f"  export MIDTRANS_SERVER_KEY={DEV_SERVER_KEY}",
        "  export MIDTRANS_API_URL=http://127.0.0.1:8765",
        "  midpay sandbox serve &                      # a local Midtrans",
        "  midpay charge --amount 25000 --qris        # note the order id it prints",
        "  midpay sandbox pay ORDER_ID > paid.json     # the customer pays",
        "  midpay replay-webhook paid.json             # the notification arrives",
        "  midpay status ORDER_ID",
        "  midpay reconcile --min-age 0",
    ]
    title, style = ("Demo complete", "green") if ok else ("Demo finished", "red")
    con.print(Panel("\n".join(lines), title=title, border_style=style))
