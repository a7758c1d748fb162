"""`midpay listen` under load: concurrent senders with reconcile running, and SIGTERM mid-stream.

Senders here behave like Midtrans: one connection per notification (``Connection:
close``), and a body that was not answered 2xx is sent again later.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import requests

from midpay.midtrans.notifications import JAKARTA
from tests.conftest import SERVER_KEY
from tests.helpers import payment_row
from tests.listen_process import start_process
from tests.web.test_listen import charged, events, listen_env, signed

CLOSE = {"Content-Type": "application/json", "Connection": "close", "User-Agent": "Veritrans"}


def pending_twin(settlement: dict[str, Any]) -> dict[str, Any]:
    """The `pending` notification Midtrans sends before a settlement (status_code 201), signed."""
    body = {**settlement, "transaction_status": "pending", "status_code": "201"}
    body.pop("settlement_time", None)
    return signed(body)


def send(url: str, body: dict[str, Any]) -> int | str:
    """The HTTP status, or the name of the failure when no answer came."""
    try:
        response = requests.post(url, data=json.dumps(body).encode(), headers=CLOSE, timeout=60)
    except requests.RequestException as exc:
        return type(exc).__name__
    return response.status_code


def test_eight_senders_of_duplicated_and_out_of_order_bodies_while_reconcile_runs(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    orders = [charged(cli, 20000 + i) for i in range(12)]
    settlements = {order_id: sandbox.pay(order_id, "settlement") for order_id in orders}
    bodies: list[dict[str, Any]] = []
    for settled in settlements.values():
        bodies += [settled, settled, pending_twin(settled), pending_twin(settled)]
    random.Random(7).shuffle(bodies)  # settlements before pendings, duplicates apart

    server = start_process(listen_env(env, MIDPAY_TIMEOUT="10"), tmp_path / "listen.log", cwd=tmp_path)
    done = threading.Event()
    reconcile_codes: list[int] = []

    def reconcile_meanwhile() -> None:
        for _ in range(30):  # bounded: a few runs overlap the senders, then it stops
            proc = subprocess.run(
                [sys.executable, "-m", "midpay", "reconcile", "--min-age", "0", "--recheck-after", "0", "--json"],
                capture_output=True,
                text=True,
                timeout=120,
                env=listen_env(env),
                cwd=tmp_path,
            )
            reconcile_codes.append(proc.returncode)
            if done.is_set():
                return

    reconciler = threading.Thread(target=reconcile_meanwhile)
    reconciler.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as senders:
            answers = list(senders.map(lambda body: send(server.url, body), bodies))
    finally:
        done.set()
        reconciler.join()
        assert server.stop() == 0

    assert Counter(answers) == {200: len(bodies)}
    assert reconcile_codes and set(reconcile_codes) == {0}
    stored = events(db_url)
    assert len(stored) == len(bodies)  # every body kept, duplicates included
    applied = Counter(e["order_id"] for e in stored if e["outcome"] == "applied")
    assert all(count <= 1 for count in applied.values())  # settlement applied once at most (else reconcile did)
    rows = {order_id: payment_row(db_url, order_id) for order_id in orders}
    assert {row["status"] for row in rows.values()} == {"settlement"}
    for order_id, row in rows.items():
        # paid_at is Midtrans' settlement_time (Jakarta), whoever applied it first.
        shown = row["paid_at"].astimezone(JAKARTA)
        assert shown.strftime("%Y-%m-%d %H:%M:%S") == settlements[order_id]["settlement_time"]

    # The same bodies again, through replay-webhook: nothing changes.
    replay = tmp_path / "bodies.jsonl"
    replay.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    before = {o: (r["status"], r["paid_at"], r["updated_at"]) for o, r in rows.items()}
    result = cli("replay-webhook", str(replay), "--json")
    assert result.exit_code == 0, result
    summary = result.json()["summary"]
    assert (summary["total"], summary["applied"], summary["unchanged"]) == (len(bodies), 0, len(bodies))
    after = {o: (r["status"], r["paid_at"], r["updated_at"]) for o, r in ((o, payment_row(db_url, o)) for o in orders)}
    assert after == before


def test_sigterm_under_load_loses_nothing(
    env: dict[str, str], tmp_path: Path, cli: Any, sandbox: Any, db_url: str
) -> None:
    orders = [charged(cli, 30000 + i) for i in range(40)]
    bodies = {order_id: sandbox.pay(order_id, "settlement") for order_id in orders}
    queue = [order_id for order_id in orders for _ in range(6)]  # each body six times: 240 requests
    server = start_process(listen_env(env), tmp_path / "listen.log", cwd=tmp_path)
    answers: list[tuple[str, int | str]] = []
    lock = threading.Lock()
    stopped: list[int] = []

    def sender(share: list[str]) -> None:
        for order_id in share:
            outcome = send(server.url, bodies[order_id])
            with lock:
                answers.append((order_id, outcome))
                if len(answers) == 30 and not stopped:
                    server.process.send_signal(signal.SIGTERM)
                    stopped.append(len(answers))

    threads = [threading.Thread(target=sender, args=(queue[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.stop() == 0, server.log_path.read_text()[-3000:]
    assert stopped == [30]

    answered = [o for o, outcome in answers if outcome == 200]
    unanswered = [o for o, outcome in answers if outcome != 200]
    assert answered and unanswered  # the stop came mid-stream
    assert {outcome for _, outcome in answers} - {200} <= {"ConnectionError", 503}
    stored = Counter(e["order_id"] for e in events(db_url))
    for order_id, count in Counter(answered).items():
        assert stored[order_id] >= count  # every 2xx answer stands for a committed body
        assert payment_row(db_url, order_id)["status"] == "settlement"

    # As Midtrans would: what was not answered 2xx is sent again, to a new receiver.
    again = start_process(listen_env(env), tmp_path / "listen-again.log", cwd=tmp_path)
    try:
        retried = [send(again.url, bodies[o]) for o in sorted(set(unanswered))]
    finally:
        assert again.stop() == 0
    assert set(retried) == {200}
    assert {payment_row(db_url, o)["status"] for o in orders} == {"settlement"}
    with psycopg.connect(db_url) as conn:
        unprocessed = conn.execute("SELECT count(*) FROM payment_webhook_events WHERE NOT processed").fetchone()
    assert unprocessed == (0,)
    assert SERVER_KEY not in server.log_path.read_text()
