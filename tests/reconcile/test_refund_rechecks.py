"""reconcile's refund rechecks (sql/008): refund_watch, its pace, and the due index that serves them.

A payment whose refunds are not settled between midpay and Midtrans carries
refund_watch ('requested': an outcome not seen, checked at --recheck-after;
'unconfirmed': a refund the bank has not confirmed, checked at
--refund-recheck-after), kept by a trigger on payment_refunds. Real PostgreSQL, the
sandbox over HTTP.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from midpay import db
from midpay.db import claims, migrate
from midpay.refunds import ledger
from tests.helpers import payment_row
from tests.refund_support import ledger_rows, paid_out, settled


def _watch(url: str, order_id: str) -> tuple[Any, ...]:
    return tuple(payment_row(url, order_id, ("status", "refund_watch")).values())


def _reconciled(cli: Any, *extra: str) -> list[str]:
    result = cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json", *extra)
    assert result.exit_code == 0, result
    return [r["order_id"] for r in result.json()["results"]]


# --- the pace, through the CLI ----------------------------------------------------------


def test_an_unconfirmed_refund_is_due_at_the_refund_pace_until_the_bank_confirms_it(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    sandbox.auto_confirm_refunds = False
    order_id = settled(cli, sandbox, 30000)
    quiet = settled(cli, sandbox, 20000)  # settled, no refund: never a candidate
    assert cli("refund", order_id, "--amount", "30000", "--yes").exit_code == 0
    # Fully refunded: not open, not partial_refund; a candidate only through its refund.
    assert _watch(db_url, order_id) == ("refund", "unconfirmed")
    assert _watch(db_url, quiet) == ("settlement", None)

    assert _reconciled(cli) == [order_id]  # never checked: due
    assert _reconciled(cli) == []  # --recheck-after 0 is not its pace: checked less than 3600 s ago
    assert _reconciled(cli, "--refund-recheck-after", "0") == [order_id]
    assert _watch(db_url, order_id) == ("refund", "unconfirmed")  # Midtrans still reports it unconfirmed

    sandbox.confirm_refunds(order_id)  # the bank confirms; its notification never arrives
    assert _reconciled(cli, "--refund-recheck-after", "0") == [order_id]
    assert _watch(db_url, order_id) == ("refund", None)  # the ledger agrees with Midtrans: the flag is cleared
    [row] = cli("status", order_id, "--no-refresh", "--json").json()["refunds"]
    assert row["status"] == "done" and row["bank_confirmed_at"]
    assert _reconciled(cli, "--refund-recheck-after", "0") == []  # no longer a candidate at any pace
    assert paid_out(sandbox, order_id) == 30000


def test_a_refund_whose_outcome_was_not_seen_is_due_at_the_usual_pace(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 64000)
    sandbox.fault_order(order_id, "malformed", times=1, endpoints=["refund"])  # made, its answer garbled
    assert cli("refund", order_id, "--amount", "4000", "--yes").exit_code == 3
    assert _watch(db_url, order_id) == ("settlement", "requested")
    assert _reconciled(cli, "--refund-recheck-after", "1000000") == [order_id]
    # Finished, and confirmed by the bank at once: only partial_refund keeps it a (slow) candidate.
    assert _watch(db_url, order_id) == ("partial_refund", None)
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 4000, "done", "midpay")]
    assert _reconciled(cli) == []
    assert paid_out(sandbox, order_id) == 4000


# --- the flag mirrors the ledger ----------------------------------------------------------


def _payment(conn: psycopg.Connection[Any], order_id: str, status: str = "settlement") -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
        "VALUES (%s, 50000, 'gopay', %s) RETURNING id",
        (order_id, status),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _refund(conn: psycopg.Connection[Any], payment: uuid.UUID, order_id: str, status: str, **more: Any) -> uuid.UUID:
    columns = {"payment_id": payment, "order_id": order_id, "amount": 1000, "status": status, **more}
    row = conn.execute(
        f"INSERT INTO payment_refunds ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "RETURNING id",
        list(columns.values()),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _agrees(conn: psycopg.Connection[Any], order_id: str) -> str | None:
    """refund_watch, checked against what ledger.py reads from the same rows."""
    payment = db.get_payment(conn, order_id)
    assert payment is not None
    rows = db.list_refunds(conn, payment.id)
    row = conn.execute("SELECT refund_watch FROM payment_transactions WHERE id = %s", (payment.id,)).fetchone()
    assert row is not None
    watch: str | None = row[0]
    assert (watch is not None) == ledger.unsettled(rows)
    assert (watch == "requested") == any(r.status == "requested" for r in rows)
    return watch


def test_the_flag_follows_every_write_to_the_refund_rows(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        one, other = _payment(conn, "w-1"), _payment(conn, "w-2")
        assert _agrees(conn, "w-1") is None
        asked = _refund(conn, one, "w-1", "requested", refund_key="w-1-rf-1")
        assert _agrees(conn, "w-1") == "requested"
        made = _refund(conn, one, "w-1", "done", refund_key="w-1-rf-2", origin="outside")
        assert _agrees(conn, "w-1") == "requested"  # the faster pace wins
        conn.execute("UPDATE payment_refunds SET status = 'rejected' WHERE id = %s", (asked,))
        assert _agrees(conn, "w-1") == "unconfirmed"
        _refund(conn, one, "w-1", "done", origin="unitemized")  # never confirmed by itself: not waited for
        conn.execute("UPDATE payment_refunds SET bank_confirmed_at = now() WHERE id = %s", (made,))
        assert _agrees(conn, "w-1") is None
        conn.execute("UPDATE payment_refunds SET bank_confirmed_at = NULL WHERE id = %s", (made,))
        conn.execute("UPDATE payment_refunds SET payment_id = %s, order_id = 'w-2' WHERE id = %s", (other, made))
        assert (_agrees(conn, "w-1"), _agrees(conn, "w-2")) == (None, "unconfirmed")
        conn.execute("DELETE FROM payment_refunds WHERE id = %s", (made,))
        assert _agrees(conn, "w-2") is None
        conn.rollback()  # everything above was one transaction: the flag rolls back with the rows
        assert conn.execute("SELECT count(*) FROM payment_transactions").fetchone() == (0,)


def test_008_sets_the_flag_from_the_refunds_already_in_the_ledger(empty_db_url: str, tmp_path: Path) -> None:
    before = tmp_path / "sql"
    before.mkdir()
    for f in migrate.load_files():
        if f.version < 8:
            shutil.copy(f.path, before / f.path.name)
    with psycopg.connect(empty_db_url) as conn:
        migrate.migrate(conn, before)
        conn.autocommit = False
        waiting, unconfirmed, settled_one = (_payment(conn, f"b-{i}") for i in range(3))
        _refund(conn, waiting, "b-0", "requested", refund_key="k")
        _refund(conn, unconfirmed, "b-1", "done", refund_key="k")
        _refund(conn, settled_one, "b-2", "done", refund_key="k", bank_confirmed_at="2026-01-01T00:00:00Z")
        conn.commit()
        assert [f.version for f in migrate.migrate(conn)] == [f.version for f in migrate.load_files() if f.version >= 8]
        assert [_agrees(conn, f"b-{i}") for i in range(3)] == ["requested", "unconfirmed", None]


# --- the due index ----------------------------------------------------------------------------


class _Recording(psycopg.Cursor[Any]):
    sent: ClassVar[list[tuple[str, Any]]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        _Recording.sent.append((str(query), params))
        return super().execute(query, params, **kwargs)


def _populate(conn: psycopg.Connection[Any]) -> None:
    """20,000 settled payments, 40 open (due), 400 refunded with an unconfirmed refund and 200
    partial_refund, all of those checked within the last hour, 10 of each of them due."""
    conn.execute(
        """
        INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at, last_checked_at)
        SELECT 'x-' || g, 10000, 'gopay',
               CASE WHEN g <= 40 THEN 'pending' WHEN g <= 440 THEN 'refund' WHEN g <= 640 THEN 'partial_refund'
                    ELSE 'settlement' END,
               now() - interval '2 days',
               CASE WHEN g <= 40 THEN now() - interval '5 minutes'
                    WHEN g <= 640 AND g % 40 = 0 THEN now() - interval '2 hours'
                    WHEN g <= 640 THEN now() - (g * interval '5 seconds')
                    ELSE now() - interval '2 days' END
          FROM generate_series(1, 20000) AS g
        """
    )
    conn.execute(
        "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, status) "
        "SELECT id, order_id, order_id || '-rf', 10000, 'done' FROM payment_transactions WHERE status = 'refund'"
    )
    conn.commit()
    conn.execute("ANALYZE payment_transactions")
    conn.commit()


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _explained(conn: psycopg.Connection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    return _nodes(row[0][0]["Plan"])


def test_the_claim_reads_only_due_rows_through_the_due_index(db_url: str) -> None:
    with psycopg.connect(db_url, cursor_factory=_Recording) as conn:
        _populate(conn)
        assert claims.count_due(conn, min_age=60, recheck_after=30) == 40 + 15
        assert claims.count_due(conn, min_age=60, recheck_after=30, refund_recheck_after=0) == 640
        assert claims.count_due(conn, min_age=60, recheck_after=600) == 15  # the refunded ones are a pace apart
        conn.rollback()
        started = db.database_now(conn)
        conn.commit()
        _Recording.sent.clear()
        with conn.transaction(force_rollback=True):
            claimed = claims.claim_due(
                conn, owner=uuid.uuid4(), min_age=60, recheck_after=30, limit=100, run_started=started,
                lease_seconds=60,
            )
            listed = claims.select_due(conn, min_age=60, recheck_after=30, limit=100)
        assert len(claimed) == 55 and listed == []  # the claimed rows are leased: no longer due
        statements = [(q, p) for q, p in _Recording.sent if "payment_transactions" in q]
        assert len(statements) == 2
        for query, params in statements:
            nodes = _explained(conn, query, params)
            scans = [n for n in nodes if n.get("Relation Name") == "payment_transactions"]
            assert not [n for n in scans if n["Node Type"] == "Seq Scan"], query
            due = [n for n in scans if n.get("Index Name") == "payment_transactions_due_idx"]
            assert len(due) == 2, [n["Node Type"] + " " + n.get("Index Name", "") for n in scans]  # one range per pace
            # Each pace's range holds its due rows only: nothing read and thrown away, however many
            # refund-watched rows were checked within the hour.
            read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in due)
            assert read == 55, [(n["Actual Rows"], n.get("Rows Removed by Filter")) for n in due]


def _generic(query: str) -> str:
    """``query`` with psycopg's named placeholders as $1, $2, … (for EXPLAIN (GENERIC_PLAN))."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query).replace("%%", "%")


def test_a_generic_plan_of_the_claim_keeps_the_due_index(db_url: str) -> None:
    """psycopg prepares a statement run five times, and PostgreSQL may then plan it once for any values."""
    with psycopg.connect(db_url, cursor_factory=_Recording) as conn:
        _populate(conn)
        started = db.database_now(conn)
        conn.commit()
        _Recording.sent.clear()
        with conn.transaction(force_rollback=True):
            claims.claim_due(
                conn, owner=uuid.uuid4(), min_age=60, recheck_after=30, limit=100, run_started=started,
                lease_seconds=60,
            )
            claims.count_due(conn, min_age=60, recheck_after=30)
        statements = [q for q, _ in _Recording.sent if "payment_transactions" in q]
        assert len(statements) == 2
        for query in statements:
            row = conn.execute(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {_generic(query)}").fetchone()
            assert row is not None
            scans = [n for n in _nodes(row[0][0]["Plan"]) if n.get("Relation Name") == "payment_transactions"]
            assert not [n for n in scans if n["Node Type"] == "Seq Scan"], query
            assert [n.get("Index Name") for n in scans].count("payment_transactions_due_idx") == 2, scans
