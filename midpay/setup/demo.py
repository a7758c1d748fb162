"""``midpay demo``: the whole lifecycle on embedded parts, with no configuration at all.

An embedded PostgreSQL under ``<MIDPAY_HOME>/demo`` and an in-process sandbox stand
in for the real ones; every step runs the same use-case code as the commands do
(migrate, charge, status, replay-webhook, reconcile, endpoints add, deliver --once),
and a local receiver in the demo's process stands for the shop's own app, taking the
payment events (demo_events.py). Each run starts from a fresh demo database, so it
can be repeated at will; the data stays until the next run.
The demo stops the PostgreSQL it started, so nothing is left running; the home it
suggests for trying things by hand (``<MIDPAY_HOME>/try``) is never touched by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midpay import db, output
from midpay.db import migrate
from midpay.intake import bodies, online
from midpay.midtrans.gateway import Gateway
from midpay.payments import charge as charges
from midpay.payments import refresh
from midpay.reconcile import job as reconciling
from midpay.sandbox import DEV_SERVER_KEY, SandboxServer
from midpay.setup import demo_events
from midpay.web import child
from midpay.web.app import DEFAULT_PATH

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
    try_home: Path
    events: tuple[demo_events.Arrival, ...]  # what the shop's app received, in arrival order
    left_running: bool  # the demo's PostgreSQL was running before the demo, and still is

    @property
    def ok(self) -> bool:
        """Paid, and the shop's app told so: its ``payment.paid`` event arrived, signature verified."""
        paid = self.final_status == "settlement" and self.paid_at is not None
        return paid and demo_events.paid_event_arrived(list(self.events), self.order_id)


def try_home(settings: Settings) -> Path:
    """The home the demo suggests for trying commands by hand; no demo run touches it."""
    return settings.home / "try"


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
    from midpay import embedded
    from midpay.embedded import access as embedded_access

    started = time.monotonic()
    home = demo_home(settings)
    embedded_access.prepare_home(home, embedded_access.runner())
    was_running = embedded.status(home).state == "running"
    try:
        report = _walk(settings, con, step, home)
    finally:
        if not was_running:
            embedded.stop(home)
    return DemoReport(**{**report, "seconds": time.monotonic() - started, "left_running": was_running})


def _walk(settings: Settings, con: Console, step: Callable[[str], None], home: Path) -> dict[str, Any]:
    step("Starting the embedded PostgreSQL and a fresh demo database")
    url = _fresh_database(home)
    con.print(output.join("  database: embedded PostgreSQL in ", output.text(home / "pgdata")))

    step("midpay migrate")
    with db.connect(url) as conn:
        applied = migrate.migrate(conn)
    con.print(output.text(f"  applied {len(applied)} migration(s): " + ", ".join(f.name for f in applied)))

    with demo_events.ShopApp() as shop:
        # Before the charge: an endpoint gets the events written after it exists.
        step(f"midpay endpoints add {shop.url} --events {demo_events.PATTERNS}")
        with db.connect(url) as conn:
            endpoint = demo_events.add_endpoint(conn, shop)
        demo_events.show_endpoint(con, shop, endpoint)

        walked = _pay(con, step, home, url)

        step("midpay deliver --once")
        delivered = demo_events.deliver_once(url)
        arrivals = shop.arrivals()
        demo_events.show_arrivals(con, delivered, arrivals)

    return {**walked, "events": tuple(arrivals), "try_home": try_home(settings)}


def _pay(con: Console, step: Callable[[str], None], home: Path, url: str) -> dict[str, Any]:
    """Charge, pay, notify, replay, check and reconcile one payment, against an in-process sandbox."""
    notify_dir = home / "notifications"
    receiver = _Receiver(home, url)
    with SandboxServer(server_key=DEV_SERVER_KEY, notify_dir=notify_dir, notify_url=receiver.notify_url) as sandbox:
        con.print(f"  Midtrans sandbox listening on {sandbox.url} (development key, in-process)")
        with Gateway(base_url=sandbox.url, server_key=DEV_SERVER_KEY, timeout=10.0) as gateway, db.connect(url) as conn:
            amount = 154_600
            step(f"midpay charge --amount {amount} --qris")
            charged = charges.charge(conn, gateway, amount=amount, qris=True, user_id=1)
            order_id = charged.payment.order_id
            output.render_payment(con, charged.payment, title="Charge created", show_qr=True)

            step(f"midpay status {order_id}")
            outcome = refresh.refresh(conn, gateway, order_id)
            says = output.status_text(outcome.payment.status)
            con.print(output.join("  Midtrans says: ", says, " (the customer has not paid yet)"))

            receiver.pay(con, step, sandbox, order_id)
            files = sorted(notify_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
            notification = next(p for p in reversed(files) if "settlement" in p.name)
            con.print(output.join("  Midtrans sent a signed notification; saved as ", output.text(notification)))

            step(f"midpay replay-webhook {notification.name}")
            received = bodies.iter_bodies([str(notification)], lambda: "")
            replayed = online.replay(url, gateway, received, DEV_SERVER_KEY)  # what replay-webhook runs
            if replayed.fatal is not None:
                raise replayed.fatal
            output.render_notifications(con, replayed.results, dry_run=False)

            step(f"midpay status {order_id}")
            final = refresh.refresh(conn, gateway, order_id).payment
            output.render_payment(con, final, title="Paid")

        step("midpay reconcile --min-age 0")
        with Gateway(base_url=sandbox.url, server_key=DEV_SERVER_KEY, timeout=10.0) as gateway:
            summary = reconciling.reconcile(url, gateway, min_age=0, concurrency=4)
        output.render_reconcile(con, [], summary, dry_run=False)

    return {
        "order_id": order_id,
        "amount": amount,
        "final_status": final.status,
        "paid_at": output.iso(final.paid_at),
        "notification_file": notification,
        "reconciled": summary.checked,
        "home": home,
    }


class _Receiver:
    """Where the sandbox POSTs each notification, as Midtrans would: a ``midpay listen`` child.

    Unless this Python cannot start one (its interpreter out of this user's reach): then
    the notification is only written to a file, and the demo replays that.
    """

    def __init__(self, home: Path, database_url: str) -> None:
        self.home = home
        self.database_url = database_url
        self.cannot = child.cannot_start_process()
        self.port = child.free_port()
        self.notify_url = None if self.cannot else f"http://127.0.0.1:{self.port}{DEFAULT_PATH}"

    def pay(self, con: Console, step: Callable[[str], None], sandbox: SandboxServer, order_id: str) -> None:
        """The customer pays ``order_id``; ``midpay listen`` receives Midtrans' notification, where it runs."""
        if self.cannot is not None:
            step("The customer scans the QR and pays (midpay sandbox pay)")
            sandbox.pay(order_id, "settlement")
            con.print(output.text(f"  (no midpay listen here: {self.cannot}; the file is replayed instead)"))
            return
        step("midpay listen; the customer scans the QR and pays (midpay sandbox pay)")
        env = child.child_env(
            database_url=self.database_url, server_key=DEV_SERVER_KEY, api_url=sandbox.url, home=self.home
        )
        with child.start_listen(env, self.home / "listen.log", port=self.port, cwd=self.home) as listener:
            con.print(output.text(f"  midpay listen receives notifications on {listener.url}"))
            sandbox.pay(order_id, "settlement")
            arrived = child.describe(listener.wait_for(order_id))
            con.print(output.text(f"  Midtrans notified it over HTTP: {arrived}"))


def render_account(con: Console, report: DemoReport) -> None:
    """What happened, what is left running, and the commands to try next (outside any border, to copy)."""
    from rich.panel import Panel
    from rich.text import Text

    from midpay.output import rupiah, text

    verified = sum(1 for event in report.events if event.verified)
    told = "payment.paid among them" if report.ok else "but no payment.paid it could verify"
    summary = [
        f"Order {report.order_id} for {rupiah(report.amount)} went created → pending → {report.final_status}"
        + (f", paid at {report.paid_at}." if report.paid_at else "."),
        "The notification was stored, its signature verified, its amount checked, and applied once;",
        f"reconcile then found {report.reconciled} open payment(s) to check.",
        f"The shop's app received {len(report.events)} event(s), {verified} with a verified signature, {told}.",
        f"Took {report.seconds:.1f} s.",
    ]
    title, style = ("Demo complete", "green") if report.ok else ("Demo finished", "red")
    con.print(Panel(Text("\n").join(text(line) for line in summary), title=title, border_style=style))
    for line in [*_left_running(report), *_try_lines(report)]:
        con.print(text(line), soft_wrap=True)


def _left_running(report: DemoReport) -> list[str]:
    if report.left_running:
        return [
            f"Left running: the embedded PostgreSQL of {report.home} (it was running before the demo).",
            f"Stop it with:  MIDPAY_HOME={report.home} midpay db stop",
        ]
    return [
        "Left running: nothing. The demo's PostgreSQL was stopped; the sandbox and the shop's app ran inside the demo.",
        f"The demo's data stays in {report.home} until the next demo.",
    ]


def _try_lines(report: DemoReport) -> list[str]:
    from midpay.sandbox import DEV_SERVER_KEY

    return [
        "",
        f"Try it yourself, in a home the demo never touches ({report.try_home}):",
        f"  export MIDPAY_HOME={report.try_home}",
        "  export DATABASE_URL=embedded",
        f"  export MIDTRANS_SERVER_KEY={DEV_SERVER_KEY}",
        "  export MIDTRANS_API_URL=http://127.0.0.1:8765",
        "  midpay migrate",
        "  midpay endpoints add http://127.0.0.1:3000/midpay-events --events payment.paid"
        "   # your app's URL; keep the secret it prints",
        "  midpay listen 2> listen.log &                  # receives the notifications (later: kill %1 %2)",
        "  midpay sandbox serve --notify-url http://127.0.0.1:8080/midtrans/notification > sandbox.log &",
        "  midpay charge --amount 25000 --qris            # note the order id it prints",
        "  midpay sandbox pay ORDER_ID > paid.json        # the customer pays; listen applies it",
        "  midpay replay-webhook paid.json                # the same body again: unchanged",
        "  midpay status ORDER_ID",
        "  midpay reconcile --min-age 0",
        "  midpay deliver --once                          # sends payment.paid to your app; run it again to retry",
        "  midpay deliveries --order-id ORDER_ID          # what was sent, and every attempt",
        "  midpay db stop                                 # when done: stop the embedded PostgreSQL",
    ]
