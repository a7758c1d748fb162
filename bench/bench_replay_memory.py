"""Memory of replay-webhook over one large ``.jsonl`` file: peak RSS must stay flat (under 100 MB).

``midpay replay-webhook big.jsonl --json`` runs as a subprocess over a file of signed
notification bodies (settlement and pending bodies of 1,000 orders, repeated, plus one
malformed line in a hundred), against a fresh database with those orders and a
sandbox that knows them. Its peak RSS is the process's VmHWM (``common.run_midpay``).
The same run over a small file gives the baseline: flat memory means the two peaks are
about the same, whatever the number of lines.

    python bench/bench_replay_memory.py                 100,000 lines (and 1,000 for the baseline)
    python bench/bench_replay_memory.py --lines 20000
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
    run_midpay,
)

ORDERS = 1000
LIMIT_MB = 100.0


def _write_bodies(path: Path, lines: int, ids: list[str], amounts: list[int]) -> None:
    from midpay.midtrans.notifications import compute_signature

    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            i = n % len(ids)
            if n % 100 == 99:
                out.write('{"order_id": "broken", "this is": not json}\n')
                continue
            status, code = ("settlement", "200") if (n // len(ids)) % 2 else ("pending", "201")
            gross = f"{amounts[i]}.00"
            body = {
                "transaction_time": "2026-11-26 10:00:00", "transaction_status": status,
                "transaction_id": f"00000000-0000-4000-8000-{i:012d}",
                "status_message": "midtrans payment notification",
                "status_code": code, "signature_key": compute_signature(ids[i], code, gross, SERVER_KEY),
                "settlement_time": "2026-11-26 10:01:00" if status == "settlement" else None,
                "payment_type": "gopay", "order_id": ids[i], "merchant_id": "G000000001", "gross_amount": gross,
                "fraud_status": "accept", "currency": "IDR",
            }
            out.write(json.dumps({k: v for k, v in body.items() if v is not None}) + "\n")


def _replay(lab: Lab, sandbox_url: str, lines: int, name: str) -> tuple[float, float, dict[str, int]]:
    db_url = lab.fresh_db(name)
    ids = [f"bench-rm-{i:05d}" for i in range(ORDERS)]
    amounts = [20_000 + i for i in range(ORDERS)]
    created = datetime.now(UTC) - timedelta(minutes=30)
    with psycopg.connect(db_url) as conn, conn.transaction():
        copy_rows(
            conn, "payment_transactions",
            ("order_id", "gross_amount", "payment_type", "status", "created_at", "updated_at"),
            ((oid, amt, "gopay", "pending", created, created) for oid, amt in zip(ids, amounts, strict=True)),
        )
    path = lab.work / f"{name}.jsonl"
    _write_bodies(path, lines, ids, amounts)
    log(f"replay memory: {lines:,} lines ({path.stat().st_size / 1e6:.1f} MB)")
    run = run_midpay(
        lab, midpay_env(lab, db_url, sandbox_url), "replay-webhook", str(path), "--json",
        name=name, measure_rss=True, timeout=3600,
    )
    if run.returncode not in (0, 1):
        raise RuntimeError(f"replay-webhook exited {run.returncode}: {run.stderr[-2000:]}")
    summary = run.json()["summary"]
    if summary["total"] != lines or summary["rejected"] != lines // 100:
        raise RuntimeError(f"replay-webhook read {summary}, expected {lines} bodies, {lines // 100} rejected")
    assert run.max_rss_kb is not None
    return run.max_rss_kb / 1024, run.wall, summary


def run(lab: Lab, *, quick: bool, lines: int | None = None) -> Result:
    n = lines or (5_000 if quick else 100_000)
    result = Result("replay_memory")
    with SandboxProcess(lab, latency_ms=0) as sandbox:
        charge_orders(sandbox.url, [f"bench-rm-{i:05d}" for i in range(ORDERS)], [20_000 + i for i in range(ORDERS)])
        small_mb, _, _ = _replay(lab, sandbox.url, 1_000, "replay_memory_small")
        peak_mb, wall, summary = _replay(lab, sandbox.url, n, "replay_memory")
    result.metrics.update({
        "lines": n, "peak_rss_mb": round(peak_mb, 1), "peak_rss_1000_lines_mb": round(small_mb, 1),
        "growth_mb": round(peak_mb - small_mb, 1), "wall_s": round(wall, 1), "bodies_per_s": round(n / wall, 1),
        "summary": summary,
    })
    result.targets.append(Target(f"peak RSS, replay of {n:,} lines", round(peak_mb, 1), LIMIT_MB, "<", "MB"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    with Lab() as lab:
        outcome = run(lab, quick=False, lines=args.lines)
    print(json.dumps({"metrics": outcome.metrics, "targets": [t.as_dict() for t in outcome.targets]}, indent=2))


if __name__ == "__main__":
    main()
