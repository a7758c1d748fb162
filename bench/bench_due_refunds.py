"""Reconcile's due rows among many refund-watched payments (sql/008): what one claim reads, and how long it takes.

A fresh database gets ``--rows`` payments (default 500,000): 500 open ones checked 35 s
ago (due at --recheck-after 30, and later in the taking order than the refunded rows),
``--watched`` (default 11,000) fully refunded with a refund the bank has not confirmed,
``--partial`` (default 5,000) partial_refund, both of those checked within the last hour
(not due at --refund-recheck-after 3600), the rest settled. Then EXPLAIN (ANALYZE) of
the exact statements ``db.claims`` sends (recorded from real calls): a claim of 16 rows
(the window of a run at --concurrency 8), a listing of 200, and the count; each the
median of 7 runs, rolled back. "read from the due index" is what the index scans
returned plus what their filters threw away: the rows a claim had to look at.

For comparison, the due predicate refunds used before sql/008 (``id = ANY(ARRAY(SELECT
payment_id FROM payment_refunds ...))``), over 002's open-row index, on the same rows.

    python bench/bench_due_refunds.py
    python bench/bench_due_refunds.py --rows 1000000 --watched 50000
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Lab, log, median

OLD_DUE = (
    "SELECT id FROM payment_transactions WHERE created_at < now() - make_interval(secs => 60) AND ("
    "((status = ANY(ARRAY['created', 'pending', 'authorize', 'capture']) OR unconfirmed_since IS NOT NULL "
    "OR id = ANY(ARRAY(SELECT payment_id FROM payment_refunds WHERE status = 'requested'))) "
    "AND (last_checked_at IS NULL OR last_checked_at < now() - make_interval(secs => 30))) "
    "OR ((status IN ('partial_refund', 'PARTIAL_REFUND') OR id = ANY(ARRAY(SELECT payment_id FROM payment_refunds "
    "WHERE status = 'done' AND bank_confirmed_at IS NULL AND origin <> 'unitemized'))) "
    "AND (last_checked_at IS NULL OR last_checked_at < now() - make_interval(secs => 3600)))) "
    "ORDER BY last_checked_at NULLS FIRST, created_at LIMIT 200 FOR UPDATE SKIP LOCKED"
)


class Recording(psycopg.Cursor[Any]):
    sent: ClassVar[list[tuple[str, Any]]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        Recording.sent.append((str(query), params))
        return super().execute(query, params, **kwargs)


def _populate(conn: psycopg.Connection[Any], rows: int, watched: int, partial: int) -> None:
    conn.execute(
        """
        INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, midtrans_transaction_id,
                                          midtrans_response_json, created_at, updated_at, paid_at, last_checked_at)
        SELECT 'due-' || g, 10000 + g %% 1000, 'gopay',
               CASE WHEN g <= 500 THEN 'pending' WHEN g <= 500 + %(w)s THEN 'refund'
                    WHEN g <= 500 + %(w)s + %(p)s THEN 'partial_refund' ELSE 'settlement' END,
               md5(g::text), '{}'::jsonb, now() - interval '2 days', now() - interval '2 days',
               now() - interval '2 days',
               CASE WHEN g <= 500 THEN now() - interval '35 seconds'
                    WHEN g <= 500 + %(w)s + %(p)s THEN now() - (g %% 3000 + 60) * interval '1 second'
                    ELSE now() - interval '2 days' END
          FROM generate_series(1, %(rows)s) AS g
        """,
        {"rows": rows, "w": watched, "p": partial},
    )
    conn.execute(
        "INSERT INTO payment_refunds (payment_id, order_id, refund_key, amount, status) "
        "SELECT id, order_id, order_id || '-rf-1', 1000, 'done' FROM payment_transactions WHERE status = 'refund'"
    )
    conn.commit()


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _measure(conn: psycopg.Connection[Any], query: str, params: Any, repeats: int = 7) -> dict[str, Any]:
    times: list[float] = []
    nodes: list[dict[str, Any]] = []
    for _ in range(repeats):
        with conn.transaction(force_rollback=True):
            row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", params).fetchone()
        assert row is not None
        times.append(float(row[0][0]["Execution Time"]))
        nodes = _nodes(row[0][0]["Plan"])
    scans = [n for n in nodes if n.get("Relation Name") == "payment_transactions"]
    due = [n for n in scans if n.get("Index Name") == "payment_transactions_due_idx"]
    return {
        "execution_ms_median": round(median(times), 3),
        "seq_scans": sum(n["Node Type"] == "Seq Scan" for n in scans),
        "read_from_due_index": int(sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in due)),
        "nodes": [n["Node Type"] + (f" using {n['Index Name']}" if "Index Name" in n else "") for n in nodes],
    }


def run(lab: Lab, *, rows: int, watched: int, partial: int) -> dict[str, Any]:
    from midpay import db
    from midpay.db import claims

    url = lab.fresh_db("due_refunds")
    log(f"due_refunds: {rows:,} payments, {watched:,} with an unconfirmed refund, {partial:,} partial_refund")
    with psycopg.connect(url) as conn:
        _populate(conn, rows, watched, partial)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    metrics: dict[str, Any] = {"payments": rows, "watched": watched, "partial_refund": partial, "open_due": 500}
    with psycopg.connect(url, cursor_factory=Recording) as conn:
        started = db.database_now(conn)
        conn.commit()
        Recording.sent.clear()
        with conn.transaction(force_rollback=True):
            claims.claim_due(conn, owner=uuid.uuid4(), min_age=60, recheck_after=30, limit=16, run_started=started,
                             lease_seconds=60)
            claims.select_due(conn, min_age=60, recheck_after=30, limit=200)
            metrics["count_due"] = claims.count_due(conn, min_age=60, recheck_after=30)
        claim, listing, count = [(q, p) for q, p in Recording.sent if "payment_transactions" in q]
        metrics["claim_16"] = _measure(conn, *claim)
        metrics["select_200"] = _measure(conn, *listing)
        metrics["count"] = _measure(conn, *count)
    with psycopg.connect(url, autocommit=True) as conn:  # what the old predicate had: 002's open-row index
        conn.execute(
            "CREATE INDEX bench_open_idx ON payment_transactions (last_checked_at NULLS FIRST, created_at) "
            "WHERE status IN ('created', 'pending', 'authorize', 'capture')"
        )
        conn.execute("ANALYZE payment_transactions")
    with psycopg.connect(url) as conn:
        metrics["old_predicate_select_200"] = _measure(conn, OLD_DUE, None, repeats=5)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--watched", type=int, default=11_000)
    parser.add_argument("--partial", type=int, default=5_000)
    args = parser.parse_args()
    with Lab() as lab:
        metrics = run(lab, rows=args.rows, watched=args.watched, partial=args.partial)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
