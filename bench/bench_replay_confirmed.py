"""2b. Confirmed replay: 10,000 bodies for 2,000 orders against a sandbox that takes 50 ms a call.

A directory of five bodies per order (a pending body, then the settlement four times:
twice as is, once indented, once compact) goes through one
``midpay replay-webhook DIR --json`` process, against ``midpay sandbox serve`` with
50 ms of latency on every call. Each order must cost exactly one Get Status call (the
sandbox counts them), at replay-webhook's default ``--concurrency`` (8), so the floor
is orders x 50 ms / 8 (12.5 s for 2,000 orders); the target is a wall clock within
1.5x of it. The figure includes the process start-up (about 0.3 s) and storing every
body before anything is decided about it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from common import (
    SERVER_KEY,
    Lab,
    Result,
    SandboxProcess,
    Target,
    charge_orders,
    copy_rows,
    log,
    midpay_env,
    pay_orders,
    run_midpay,
)

MERCHANT_ID = "G000000001"
CONFIRM_LATENCY_MS = 50
CONFIRM_CONCURRENCY = 8  # replay-webhook's default --concurrency
PER_ORDER = 5
TARGET = 1.5


def run(lab: Lab, result: Result, *, quick: bool, orders: int | None = None) -> None:
    """Add the confirmed replay's figures and target to ``result``."""
    orders = orders or (40 if quick else 2000)
    per_order = PER_ORDER
    db_url = lab.fresh_db("replay_confirmed")
    ids = [f"bench-cf-{i:05d}" for i in range(orders)]
    amounts = [40_000 + i for i in range(orders)]
    folder = lab.work / "confirmed"
    folder.mkdir()
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        log(f"replay (confirmed): {orders} orders, {orders * per_order} bodies, sandbox at {CONFIRM_LATENCY_MS} ms")
        answers = charge_orders(sandbox.url, ids, amounts)
        created = datetime.now(UTC) - timedelta(minutes=5)
        with psycopg.connect(db_url) as conn, conn.transaction():
            copy_rows(
                conn,
                "payment_transactions",
                ("order_id", "gross_amount", "payment_type", "status", "midtrans_transaction_id", "created_at",
                 "updated_at"),
                (
                    (a["order_id"], amt, "gopay", "pending", a["transaction_id"], created, created)
                    for a, amt in zip(answers, amounts, strict=True)
                ),
            )
        pending = [_signed(a, amt, "pending", "201") for a, amt in zip(answers, amounts, strict=True)]
        pay_orders(sandbox.url, ids)
        settled = [_signed(a, amt, "settlement", "200") for a, amt in zip(answers, amounts, strict=True)]
        number = 0
        for first, paid in zip(pending, settled, strict=True):
            # one pending body, then the settlement four times: twice as is, once re-spaced, once indented
            texts = [json.dumps(first), json.dumps(paid), json.dumps(paid), json.dumps(paid, indent=2),
                     json.dumps(paid, separators=(",", ":"))]
            for text in texts[:per_order]:
                folder.joinpath(f"{number:06d}.json").write_text(text)
                number += 1
        sandbox.set_latency(CONFIRM_LATENCY_MS)
        sandbox.control("POST", "/_sandbox/reset")
        env = midpay_env(lab, db_url, sandbox.url)
        run = run_midpay(lab, env, "replay-webhook", str(folder), "--json", name="replay-confirmed", measure_rss=True)
        stats = sandbox.control("GET", "/_sandbox/stats")
    if run.returncode != 0:
        raise RuntimeError(f"confirmed replay exited {run.returncode}: {run.stderr[-2000:]}")
    summary = run.json()["summary"]
    bodies = orders * per_order
    if summary != {"total": bodies, "applied": orders, "unchanged": bodies - orders, "awaiting": 0, "rejected": 0}:
        raise RuntimeError(f"unexpected confirmed replay summary {summary}")
    calls = int(stats["by_endpoint"]["status"])
    if calls != orders:
        raise RuntimeError(f"{calls} status calls for {orders} orders: expected one each")
    floor = orders * CONFIRM_LATENCY_MS / 1000 / CONFIRM_CONCURRENCY
    result.metrics.update(
        {
            "confirmed_bodies": bodies,
            "confirmed_orders": orders,
            "confirmed_latency_ms": CONFIRM_LATENCY_MS,
            "confirmed_concurrency": CONFIRM_CONCURRENCY,
            "confirmed_status_calls": calls,
            "confirmed_wall_s": round(run.wall, 3),
            "confirmed_floor_s": round(floor, 3),
            "confirmed_cpu_s": run.cpu_s,
            "confirmed_vs_floor": round(run.wall / floor, 3),
            "confirmed_summary": summary,
        }
    )
    result.targets.append(Target("confirmed replay wall / (orders x latency / concurrency)",
                                 round(run.wall / floor, 3), TARGET, "<=", "x"))


def _signed(answer: dict[str, Any], amount: int, status: str, code: str) -> dict[str, Any]:
    """The notification the sandbox sends for ``status``, as a Midtrans notification is shaped."""
    from midpay.midtrans.notifications import compute_signature

    gross = f"{amount}.00"
    body: dict[str, Any] = {
        "transaction_time": answer.get("transaction_time", "2026-11-26 10:00:00"),
        "transaction_status": status,
        "transaction_id": answer["transaction_id"],
        "status_message": "midtrans payment notification",
        "status_code": code,
        "signature_key": compute_signature(answer["order_id"], code, gross, SERVER_KEY),
        "payment_type": "gopay",
        "order_id": answer["order_id"],
        "merchant_id": MERCHANT_ID,
        "gross_amount": gross,
        "fraud_status": "accept",
        "currency": "IDR",
    }
    if status == "settlement":
        body["settlement_time"] = "2026-11-26 10:01:07"
    return body
