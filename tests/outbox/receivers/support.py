"""What the deliver tests share: endpoints and payments written with SQL, the receivers, reading deliveries."""

from __future__ import annotations

import base64
import os
import secrets as random_secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg

from .node_receiver import NodeReceiver
from .python_receiver import PythonReceiver


class Receiver(Protocol):
    kind: str

    @property
    def url(self) -> str: ...

    def control(self, *, answer: int | None = None, mode: str | None = None) -> None: ...

    def received(self) -> list[dict[str, Any]]: ...


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@contextmanager
def receiver(kind: str, secrets: list[str]) -> Iterator[Receiver]:
    """A running receiver of ``kind`` (python or node) that accepts a request signed with any of ``secrets``."""
    if kind == "node":
        from . import npm

        npm.installed()
        with NodeReceiver(secrets) as node:
            yield node
    else:
        with PythonReceiver(secrets) as python:
            yield python


def add_endpoint(url: str, target: str, secret: str, *, events: tuple[str, ...] = ("*",),
                 previous_secret: str | None = None) -> str:
    """An endpoint row (what `midpay endpoints add` makes); with ``previous_secret``, one mid-rotation."""
    endpoint_id = "we_" + random_secrets.token_hex(12)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO webhook_endpoints (id, url, events, secret, previous_secret, previous_secret_until)"
            " VALUES (%s, %s, %s, %s, %s, CASE WHEN %s::text IS NOT NULL THEN now() + interval '1 day' END)",
            (endpoint_id, target, list(events), secret, previous_secret, previous_secret),
        )
    return endpoint_id


def pay(url: str, order_ids: list[str]) -> None:
    """Each order through created → pending → settlement (paid): three events each (pending, settlement, paid)."""
    with psycopg.connect(url) as conn:
        for order_id in order_ids:
            conn.execute(
                "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status)"
                " VALUES (%s, 15000, 'gopay', 'created')",
                (order_id,),
            )
            conn.execute("UPDATE payment_transactions SET status = 'pending' WHERE order_id = %s", (order_id,))
            conn.execute(
                "UPDATE payment_transactions SET status = 'settlement', paid_at = now() WHERE order_id = %s",
                (order_id,),
            )


def move(url: str, order_id: str, status: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE payment_transactions SET status = %s WHERE order_id = %s", (status, order_id))


def deliveries(url: str) -> list[dict[str, Any]]:
    """Every delivery, by order and sequence."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM webhook_deliveries ORDER BY order_id, sequence, endpoint_id").fetchall()


def attempts(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM webhook_attempts ORDER BY id").fetchall()


def in_order(records: list[dict[str, Any]]) -> bool:
    """No order's sequence ever goes backwards at the receiver."""
    last: dict[str, int] = {}
    for r in records:
        if r["sequence"] < last.get(r["order"], 0):
            return False
        last[r["order"]] = r["sequence"]
    return True
