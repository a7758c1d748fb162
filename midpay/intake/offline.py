"""``--offline`` runs: Midtrans is not asked; the bodies are spread over connections by order id.

Each worker of ``partitions`` takes its share of the orders' bodies in batches, in the
order they came, and for each batch stores the bodies (committed), then screens and
applies them in one transaction (``batch``); if that fails, the batch is
screened and applied order by order instead (``intake``). The rows to store are made
by the reading thread ahead of the workers (``received.prepare``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from midpay import db
from midpay.errors import DependencyError
from midpay.intake import partitions, received
from midpay.intake import pipeline as intake
from midpay.intake.batch import screen_and_apply_offline
from midpay.intake.pipeline import Decided, NotificationResult
from midpay.intake.received import Item
from midpay.intake.runs import BATCH, Results, RunReport, rejected


def run(
    url: str, items: Iterable[Item], server_key: str, *, store: bool, connections: int, dry_run: bool,
    on_result: Callable[[NotificationResult], None] | None,
) -> RunReport:
    """Store (``store``), screen and apply every item offline, on ``connections`` connections."""
    results = Results(on_result)

    def work(conn: db.Connection, batch: list[Item]) -> None:
        if store and not dry_run:
            received.store(conn, batch)
        results.add(decide(conn, batch, server_key, dry_run=dry_run))

    try:
        db.connect(url).close()  # an unreachable server fails at once, with libpq's reason
        prepare = received.prepare if store and not dry_run else None
        with partitions.Partitions(url, connections, work, results.failed, batch=BATCH, prepare=prepare) as parts:
            for item in items:
                if results.fatal is not None:
                    break  # a worker failed: the rest is not read (what was read is stored, or not at all)
                parts.put(item)
    except DependencyError as exc:
        results.failed(exc)
    finally:
        results.drain()
    return results.report()


def decide(conn: db.Connection, batch: list[Item], server_key: str, *, dry_run: bool) -> Decided:
    """A stored batch screened and applied offline in one transaction; if that fails, screened, then order by order.

    The offline stages for stored bodies, whoever feeds them: these partitions, and
    ``single.receive`` for one body with no gateway.
    """
    try:
        return screen_and_apply_offline(conn, batch, server_key, dry_run=dry_run)
    except Exception as exc:
        if db.map_error(exc) is not None:
            raise
    screened = intake.screen(conn, batch, server_key, online=False, dry_run=dry_run)
    decided: Decided = list(screened.decided)
    for order_id, found in screened.candidates.items():
        try:
            decided.extend(intake.apply_offline(conn, order_id, found, dry_run=dry_run))
        except Exception as exc:
            if db.map_error(exc) is not None:
                raise
            decided.extend(rejected(conn, found, exc, record=not dry_run))
    return decided
