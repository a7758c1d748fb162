"""A notification body as received: its exact bytes, its stored event, and storing it first.

``intake`` decides; this module only keeps. A body is stored undecided, byte for byte
(``raw_bytes``) beside its JSON (``raw_body``, which the older backend reads), and
committed before anything is decided about it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from midpay import db
from midpay.db import intake as sql
from midpay.intake.bodies import Body, clean_text, decode_body
from midpay.midtrans.notifications import TransactionView


@dataclass
class Item:
    """One body on its way through the steps; ``seq`` keeps the order it came in."""

    seq: int
    body: Body
    raw: bytes
    event_id: uuid.UUID | None = None
    view: TransactionView | None = None
    verified: bool = False
    stored_error: str | None = None  # storing it as JSON failed: kept as text, rejected with this
    prepared: sql.NewEvent | None = None  # its row to store, made ahead (``prepare``)


def exact_bytes(body: Body) -> bytes:
    """The bytes a body arrived as: kept by the reader, or its text encoded back."""
    raw = getattr(body, "raw", None)
    if isinstance(raw, bytes):
        return raw
    try:
        return body.text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return body.text.encode("utf-8", "replace")


def field_text(parsed: Any, name: str) -> str | None:
    if isinstance(parsed, dict):
        value = parsed.get(name)
        if isinstance(value, str):
            return value
    return None


def _storable(body: Body) -> Any:
    """What goes into raw_body (jsonb): the JSON itself, or the raw text as a JSON string."""
    return body.parsed if body.parse_error is None else clean_text(body.text)


def _new_event(item: Item, *, as_text: bool = False) -> sql.NewEvent:
    assert item.event_id is not None
    parsed = item.body.parsed
    return sql.NewEvent(
        id=item.event_id,
        raw_body=clean_text(item.body.text) if as_text else _storable(item.body),
        raw_bytes=item.raw,
        source=item.body.source,
        order_id=field_text(parsed, "order_id"),
        transaction_id=field_text(parsed, "transaction_id"),
        signature_key=field_text(parsed, "signature_key"),
    )


def prepare(items: Sequence[Item]) -> None:
    """Make the rows ``store`` will insert (ids, the JSON serialized), ahead: e.g. while another thread waits."""
    for item in items:
        item.event_id = item.event_id or uuid.uuid4()
        event = _new_event(item)
        item.prepared = replace(event, raw_body_json=json.dumps(event.raw_body))


def store(conn: db.Connection, items: Sequence[Item]) -> None:
    """Store every body, undecided, and commit: before anything is decided about any of them.

    A batch PostgreSQL refuses is stored body by body; a body whose JSON it refuses is
    kept as text (and later rejected with the reason), never dropped.
    """
    for item in items:
        item.event_id = item.event_id or uuid.uuid4()
    try:
        with conn.transaction():
            sql.store_events(conn, [i.prepared or _new_event(i) for i in items])
        return
    except Exception as exc:
        if db.map_error(exc) is not None:
            raise
    for item in items:
        try:
            with conn.transaction():
                sql.store_events(conn, [_new_event(item)])
        except Exception as exc:
            if db.map_error(exc) is not None:
                raise
            item.stored_error = f"not processed: {type(exc).__name__}: {db.first_line(exc)}"
            with conn.transaction():
                sql.store_events(conn, [_new_event(item, as_text=True)])


def items_of(bodies: Iterable[Body], start: int = 0) -> Iterable[Item]:
    """Bodies as numbered items, keeping their exact bytes."""
    for seq, body in enumerate(bodies, start=start):
        yield Item(seq, body, exact_bytes(body))


def stored_item(seq: int, stored: sql.StoredBody) -> Item:
    """A stored notification as the item it was received as, named ``event:<id>``.

    The exact bytes are decoded again when they were kept (a body that was not UTF-8 is
    rejected again for it, with the same reason); else raw_body, which holds the
    parsed JSON or, for a body that was not JSON, its text as a JSON string.
    """
    source = f"event:{stored.id}"
    if stored.raw_bytes is not None:
        raw = bytes(stored.raw_bytes)
        body = decode_body(source, raw)  # the rule the bytes met when they arrived, applied again
    elif isinstance(stored.raw_body, str):
        body = decode_body(source, stored.raw_body)
        raw = exact_bytes(body)
    else:
        body = Body(source, json.dumps(stored.raw_body, ensure_ascii=False), parsed=stored.raw_body)
        raw = exact_bytes(body)
    return Item(seq, body, raw, event_id=stored.id)
