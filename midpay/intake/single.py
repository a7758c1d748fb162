"""One body at a time, as it arrives (``listen``): the intake's stages scheduled for a single body.

The bytes are decoded, stored and screened on one connection, which goes back before
Midtrans is asked; the answer is applied on another taken afterwards. So a request
waiting on Get Status holds none, and a pool far smaller than the threads serving
requests is enough. Offline (no gateway), the stored body is decided as ``--offline``
decides a batch (``offline.decide``). Nothing is decided here: the stages are
``pipeline``'s, the same ``replay-webhook`` and ``events reprocess`` run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from midpay import db
from midpay.intake import offline
from midpay.intake import pipeline as intake
from midpay.intake.bodies import decode_body
from midpay.intake.pipeline import NotificationResult
from midpay.intake.received import Item, store

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

Connect = Callable[[], AbstractContextManager[db.Connection]]


def receive(connection: Connect, gateway: Gateway | None, data: bytes, source: str, *, server_key: str
            ) -> NotificationResult:
    """Decide one received notification body: ``data`` exactly as received, ``source`` where it came from.

    ``connection()`` lends a connection (a pool's, or ``contextlib.nullcontext(conn)``),
    held only while PostgreSQL is needed; ``gateway`` None means offline: Midtrans is not asked.

    Contract (stable): the bytes are stored and committed before anything is decided;
    the returned result is final only once the body and its outcome are committed. It
    never raises because of the body: not UTF-8, malformed, forged, unknown, a
    mismatching answer, Midtrans refusing or unreachable all come back as a result
    (``outcome`` rejected or awaiting, ``reason`` saying why a rejection; ``gateway_error``
    set when Midtrans could not be asked, so asking again later may help). It raises
    ``DatabaseUnavailable`` when PostgreSQL fails; the body is then either not stored at
    all, or stored and not yet decided (``events reprocess`` decides it). No transaction
    or lock is held while Midtrans is asked.
    """
    item = Item(0, decode_body(source, data), data)
    with db.translate_errors():
        with connection() as conn:
            store(conn, [item])
            if gateway is None:
                [(_, result)] = offline.decide(conn, [item], server_key, dry_run=False)
                return result
            screened = intake.screen(conn, [item], server_key, online=True)
        for order_id, items in screened.candidates.items():
            answer = intake.confirm(gateway, order_id)
            with connection() as conn:
                screened.decided.extend(intake.apply_confirmed(conn, order_id, answer, items))
    [(_, result)] = screened.decided
    return result
