"""One transition: every change of a payment goes through ``payments.transition.transition``, and exactly one
SQL statement in midpay/ sets ``payment_transactions.status``.

The statement count is read from midpay's source; the callers are exercised for real
(PostgreSQL, the sandbox over HTTP) with the transition and the write watched.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest

import midpay
from midpay import db
from midpay.db import payments as payment_rows
from midpay.intake import online
from midpay.intake.bodies import decode_body
from midpay.intake.single import receive
from midpay.payments import charge as charges
from midpay.payments import operations, refresh, transition
from midpay.reconcile import job as reconcile
from midpay.refunds import command as refunds

from ..conftest import SERVER_KEY

PACKAGE = Path(midpay.__file__).resolve().parent
_SET_CLAUSE = re.compile(r"\bSET\b(.*?)(?:\bFROM\b|\bWHERE\b|\bRETURNING\b|$)", re.S | re.I)
_SETS_STATUS = re.compile(r"(?<![\w.])status\s*=", re.I)


def _literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal of a module (f-strings whole, their holes as ``{}``), with its line."""
    inside = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside:
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            yield node.lineno, "".join(str(p) for p in parts)


def _status_writers() -> list[tuple[str, int]]:
    """Where midpay's SQL sets payment_transactions.status: in an UPDATE's SET clause, or in a SET fragment."""
    found: list[tuple[str, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in _literals(tree):
            update = re.search(r"\bUPDATE\s+payment_transactions\b", text, re.I)
            clause = _SET_CLAUSE.search(text[update.end():]) if update else None
            fragment = re.match(r"\s*status\s*=", text) is not None and "payment_" not in text
            if (clause is not None and _SETS_STATUS.search(clause.group(1))) or fragment:
                found.append((str(path.relative_to(PACKAGE.parent)), line))
    return found


def test_exactly_one_statement_sets_status() -> None:
    writers = _status_writers()
    assert len(writers) == 1, writers
    [(where, _)] = writers
    assert where == "midpay/db/payments.py"
    assert _SETS_STATUS.search(payment_rows.WRITE_PAYMENTS)


def test_the_scan_would_see_a_second_statement() -> None:
    """The scan itself: the statements midpay had before (a SET fragment, a batched UPDATE) are both found."""
    fragment = 'X = ("status = %s, paid_at = COALESCE(paid_at, %s)")'
    batched = 'Y = "UPDATE payment_transactions p SET status = v.status FROM unnest(%b::uuid[]) AS v(id)"'
    lookup = 'Z = "UPDATE payment_transactions SET unconfirmed_since = now() WHERE status = %s"'
    texts = [text for _, text in _literals(ast.parse("\n".join((fragment, batched, lookup))))]
    hits = [t for t in texts if (re.match(r"\s*status\s*=", t)) or (
        (m := re.search(r"\bUPDATE\s+payment_transactions\b", t)) and (c := _SET_CLAUSE.search(t[m.end():]))
        and _SETS_STATUS.search(c.group(1)))]
    assert len(hits) == 2


def test_only_the_transition_calls_the_write() -> None:
    """``write_payments`` is called from payments/transition.py alone."""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "write_payments":
                    callers.append(str(path.relative_to(PACKAGE)))
    assert callers == ["payments/transition.py"]


# --- every caller kind, for real -------------------------------------------------------------


class Watch:
    """The transition's calls (order id and kind of evidence), and who called the write."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []
        self.writers: list[str] = []

    def since(self, mark: int) -> set[tuple[str, str]]:
        return set(self.moves[mark:])


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Watch:
    seen = Watch()
    real_transition, real_write = transition.transition, payment_rows.write_payments

    def spy_transition(conn: Any, changes: Any, **kwargs: Any) -> Any:
        seen.moves.extend(
            (c.order_id, "proof" if isinstance(c.evidence, transition.Proven) else "answer") for c in changes
        )
        return real_transition(conn, changes, **kwargs)

    def spy_write(conn: Any, writes: Any, **kwargs: Any) -> Any:
        seen.writers.append(sys._getframe(1).f_code.co_name)
        return real_write(conn, writes, **kwargs)

    monkeypatch.setattr(transition, "transition", spy_transition)
    monkeypatch.setattr(payment_rows, "write_payments", spy_write)
    monkeypatch.setattr(db, "write_payments", spy_write)
    return seen


def _status(url: str, order_id: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM payment_transactions WHERE order_id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _charged(conn: db.Connection, gateway: Any, watch: Watch, order_id: str, amount: int) -> None:
    mark = len(watch.moves)
    charges.charge(conn, gateway, amount=amount, order_id=order_id)
    assert (order_id, "answer") in watch.since(mark)


def test_every_caller_kind_goes_through_the_transition(db_url: str, sandbox: Any, gateway: Any, watch: Watch) -> None:
    with db.connect(db_url) as conn:
        for order_id, amount in (("k-note", 10000), ("k-status", 11000), ("k-cancel", 12000),
                                 ("k-expire", 13000), ("k-reconcile", 14000), ("k-offline", 15000),
                                 ("k-batch", 16000)):
            _charged(conn, gateway, watch, order_id, amount)

        def step(order_id: str, kind: str, status: str, action: Any) -> None:
            mark = len(watch.moves)
            action()
            assert (order_id, kind) in watch.since(mark), (order_id, watch.moves[mark:])
            assert _status(db_url, order_id) == status

        body = json.dumps(sandbox.pay("k-note", "settlement"))
        step("k-note", "answer", "settlement", lambda: receive(
            lambda: nullcontext(conn), gateway, body.encode(), "test", server_key=SERVER_KEY))
        sandbox.pay("k-status", "settlement")
        step("k-status", "answer", "settlement", lambda: refresh.refresh(conn, gateway, "k-status"))
        step("k-cancel", "answer", "cancel", lambda: operations.cancel(conn, gateway, "k-cancel"))
        step("k-expire", "answer", "expire", lambda: operations.expire(conn, gateway, "k-expire"))
        step("k-note", "answer", "partial_refund", lambda: refunds.refund(conn, gateway, "k-note", amount=1000))
        sandbox.pay("k-reconcile", "settlement")
        step("k-reconcile", "answer", "settlement", lambda: reconcile.reconcile(db_url, gateway, min_age=0))
        offline = json.dumps(sandbox.pay("k-offline", "settlement"))
        # Offline a status_code 200 proves only a floor: the pending row stays, marked awaiting confirmation.
        step("k-offline", "proof", "pending", lambda: receive(
            lambda: nullcontext(conn), None, offline.encode(), "test", server_key=SERVER_KEY))
    # The offline batches go through the transition too: one call for the batch.
    batch = decode_body("test", json.dumps(sandbox.pay("k-batch", "settlement")))
    writers = len(watch.writers)
    report = online.replay(db_url, None, [batch], SERVER_KEY)
    assert report is not None and _status(db_url, "k-batch") == "pending"
    assert watch.writers[writers:] == ["transition"]
    assert set(watch.writers) == {"transition"}
    with psycopg.connect(db_url) as check:
        marked = check.execute("SELECT order_id FROM payment_transactions WHERE unconfirmed_since IS NOT NULL "
                               "ORDER BY order_id").fetchall()
    assert [m for (m,) in marked] == ["k-batch", "k-offline"]
