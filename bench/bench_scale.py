"""4. Scale: reconcile's selection and ``status``'s lookup over a million payments.

1,000,000 payments (one in a thousand open, the rest settled, expired or cancelled,
spread over a year, each with a Midtrans answer stored) are inserted with
generate_series and ANALYZEd. Then:

* EXPLAIN (ANALYZE, BUFFERS) of the exact SQL that ``db.select_due`` and
  ``db.claim_due`` send (captured from a real call through a recording cursor, so a
  change to db.py is measured without editing this file): no Seq Scan on
  payment_transactions, and its execution time;
* ``db.select_due`` called repeatedly on one connection (psycopg prepares a statement
  after five runs; a generic plan could stop using the partial index);
* ``db.get_payment`` (+ the commit ``refresh.refresh`` does) for 200 random order ids:
  median and p99.
"""

from __future__ import annotations

import inspect
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
from common import Lab, Result, Target, log, median, percentile

BATCH = 200  # reconcile.reconcile's batch_size


class RecordingCursor(psycopg.Cursor[Any]):
    """A cursor that remembers every statement it sends, with its parameters."""

    recorded: ClassVar[list[tuple[str, Any]]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        RecordingCursor.recorded.append((query if isinstance(query, str) else str(query), params))
        return super().execute(query, params, **kwargs)


def _populate(conn: psycopg.Connection[Any], rows: int, open_every: int) -> None:
    conn.execute(
        """
        INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, midtrans_transaction_id,
                                          midtrans_response_json, created_at, updated_at, paid_at,
                                          last_checked_at, user_id)
        SELECT 'scale-' || lpad(g::text, 7, '0'),
               10000 + g %% 990000,
               CASE WHEN g %% 3 = 0 THEN 'qris' ELSE 'gopay' END,
               s.status,
               md5(g::text)::uuid::text,
               jsonb_build_object('status_code', '200', 'transaction_status', s.status,
                                  'order_id', 'scale-' || lpad(g::text, 7, '0'),
                                  'transaction_id', md5(g::text)::uuid::text,
                                  'gross_amount', (10000 + g %% 990000)::text || '.00', 'currency', 'IDR',
                                  'payment_type', CASE WHEN g %% 3 = 0 THEN 'qris' ELSE 'gopay' END,
                                  'fraud_status', 'accept', 'merchant_id', 'G000000001',
                                  'transaction_time', to_char(t.created, 'YYYY-MM-DD HH24:MI:SS')),
               t.created,
               t.created + interval '2 minutes',
               CASE WHEN s.status = 'settlement' THEN t.created + interval '1 minute' END,
               CASE WHEN s.status IN ('created', 'pending') AND (g / %(every)s) %% 4 >= 2
                    THEN now() - interval '1 hour' END,
               g %% 50000
          FROM generate_series(1, %(rows)s) AS g,
               LATERAL (SELECT now() - (%(rows)s - g) * interval '30 seconds' - interval '10 minutes' AS created) AS t,
               LATERAL (SELECT CASE
                   WHEN g %% %(every)s = 0 THEN CASE WHEN g %% (2 * %(every)s) = 0 THEN 'created' ELSE 'pending' END
                   WHEN g %% 20 = 1 THEN 'expire'
                   WHEN g %% 20 = 2 THEN 'cancel'
                   ELSE 'settlement' END AS status) AS s
        """,
        {"rows": rows, "every": open_every},
    )


def _call(fn: Callable[..., Any], conn: psycopg.Connection[Any], known: dict[str, Any]) -> Any:
    """Call a db.py function with the keyword arguments it takes (its signature may grow)."""
    params = inspect.signature(fn).parameters
    missing = [
        name for name, p in params.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty and name not in known
    ]
    if missing:
        raise TypeError(f"bench_scale does not know how to fill {fn.__name__}({', '.join(missing)})")
    return fn(conn, **{k: v for k, v in known.items() if k in params})


def _plan_facts(plan: dict[str, Any]) -> tuple[list[str], list[str], float | None]:
    """(every node, relations read by a Seq Scan, time of the row selection) of a JSON plan.

    The selection is the topmost Limit node: all of select_due, and the subquery of
    claim_due that picks (and locks) the rows it then stamps.
    """
    nodes: list[str] = []
    seq: list[str] = []
    selection: list[float] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
        nodes.append(label)
        if node["Node Type"] == "Seq Scan":
            seq.append(node.get("Relation Name", "?"))
        if node["Node Type"] == "Limit" and not selection:
            selection.append(float(node["Actual Total Time"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return nodes, seq, (selection[0] if selection else None)


def _explain(conn: psycopg.Connection[Any], query: str, params: Any, repeats: int = 5) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) ``repeats`` times (each rolled back); the median execution time."""
    executions, plannings, selections = [], [], []
    text_plan = ""
    nodes: list[str] = []
    seq: list[str] = []
    for i in range(repeats):
        with conn.transaction(force_rollback=True):
            row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params).fetchone()
            assert row is not None
            plan = row[0][0]
            nodes, seq, selection = _plan_facts(plan)
            if selection is not None:
                selections.append(selection)
            if i == 0:
                text_rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
                text_plan = "\n".join(r[0] for r in text_rows)
        executions.append(plan["Execution Time"])
        plannings.append(plan["Planning Time"])
    return {
        "execution_ms_median": round(median(executions), 3),
        "execution_ms_max": round(max(executions), 3),
        "planning_ms_median": round(median(plannings), 3),
        "selection_ms_median": round(median(selections), 3) if selections else None,
        "nodes": nodes,
        "seq_scans": seq,
        "plan": text_plan,
    }


def run(lab: Lab, *, quick: bool, rows: int | None = None) -> Result:
    from midpay import db, states

    n = rows or (10_000 if quick else 1_000_000)
    open_rows = max(1, n // 1000)
    result = Result("scale")
    db_url = lab.fresh_db("scale")
    log(f"scale: inserting {n:,} payments ({open_rows:,} open) with generate_series")
    started = time.perf_counter()
    with psycopg.connect(db_url) as conn:
        _populate(conn, n, n // open_rows)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE payment_transactions")
        count = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = ANY(%s)), "
            "count(*) FILTER (WHERE status = ANY(%s) AND last_checked_at IS NULL) FROM payment_transactions",
            (list(states.OPEN_STATES), list(states.OPEN_STATES)),
        ).fetchone()
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('payment_transactions'))").fetchone()
    assert count is not None and size is not None
    result.metrics.update(
        {
            "payments": count[0],
            "open": count[1],
            "open_never_checked": count[2],
            "table_size": size[0],
            "populate_s": round(time.perf_counter() - started, 1),
        }
    )

    known = {
        "statuses": states.OPEN_STATES,
        "min_age": 60.0,
        "recheck_after": 30.0,
        "limit": BATCH,
        "run_started": datetime.now(UTC),
        "owner": uuid.uuid4(),
        "lease_seconds": 60.0,
    }
    with psycopg.connect(db_url, cursor_factory=RecordingCursor) as conn:
        RecordingCursor.recorded.clear()
        due = _call(db.select_due, conn, known)
        select_sql, select_params = RecordingCursor.recorded[-1]
        conn.rollback()
        with conn.transaction(force_rollback=True):
            _call(db.claim_due, conn, known)
            claim_sql, claim_params = RecordingCursor.recorded[-1]

    with psycopg.connect(db_url) as conn:
        select_plan = _explain(conn, select_sql, select_params)
        claim_plan = _explain(conn, claim_sql, claim_params)
        # Repeated calls on one connection: psycopg prepares the statement after 5 runs,
        # and PostgreSQL may then switch to a generic plan.
        walls = []
        for _ in range(30):
            t0 = time.perf_counter()
            _call(db.select_due, conn, known)
            conn.rollback()
            walls.append((time.perf_counter() - t0) * 1000)
        ids = [r[0] for r in conn.execute("SELECT order_id FROM payment_transactions").fetchall()]
        conn.rollback()
        rng = random.Random(7)
        picks = [rng.choice(ids) for _ in range(200)]
        del ids
        lookups = []
        for order_id in picks:
            t0 = time.perf_counter()
            payment = db.get_payment(conn, order_id)
            conn.commit()
            lookups.append((time.perf_counter() - t0) * 1000)
            assert payment is not None
    connects = []
    for _ in range(20):
        t0 = time.perf_counter()
        db.connect(db_url).close()
        connects.append((time.perf_counter() - t0) * 1000)

    result.metrics.update(
        {
            "selected_rows": len(due),
            "select_due_plan_nodes": select_plan["nodes"],
            "select_due_seq_scans": select_plan["seq_scans"],
            "select_due_execution_ms": select_plan["execution_ms_median"],
            "select_due_planning_ms": select_plan["planning_ms_median"],
            "claim_due_plan_nodes": claim_plan["nodes"],
            "claim_due_seq_scans": claim_plan["seq_scans"],
            "claim_due_execution_ms": claim_plan["execution_ms_median"],
            "claim_due_selection_ms": claim_plan["selection_ms_median"],
            "claim_due_plan": claim_plan["plan"],
            "select_due_call_ms_first5_median": round(median(walls[:5]), 3),
            "select_due_call_ms_later_median": round(median(walls[5:]), 3),
            "select_due_call_ms_max": round(max(walls), 3),
            "get_payment_ms_median": round(median(lookups), 3),
            "get_payment_ms_p99": round(percentile(lookups, 99), 3),
            "connect_ms_median": round(median(connects), 3),
            "select_due_plan": select_plan["plan"],
        }
    )
    seq_on_payments = [r for r in select_plan["seq_scans"] + claim_plan["seq_scans"] if r == "payment_transactions"]
    result.targets.append(Target("Seq Scans on payment_transactions (select+claim)", len(seq_on_payments), 0, "<="))
    result.targets.append(Target("select_due execution", select_plan["execution_ms_median"], 10.0, "<", "ms"))
    result.targets.append(
        Target("claim_due's selection (its Limit node)", claim_plan["selection_ms_median"], 10.0, "<", "ms")
    )
    result.targets.append(Target("get_payment p99", round(percentile(lookups, 99), 3), 5.0, "<", "ms"))
    result.notes.append(
        f"claim_due as a whole (select, lock and stamp last_checked_at on {BATCH} rows, every index updated "
        f"because last_checked_at is indexed) executes in {claim_plan['execution_ms_median']} ms"
    )
    result.notes.append(
        "select_due called from Python (db.select_due, rows decoded into Payment objects) takes "
        f"{round(median(walls), 1)} ms for {len(due)} rows; EXPLAIN shows the database part"
    )
    result.notes.append(
        "get_payment figures are one SELECT ... WHERE order_id = %s plus the commit refresh() does, on an open "
        "connection; opening the connection (connect_ms_median) is separate"
    )
    return result
