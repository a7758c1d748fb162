"""The payment lifecycle through the real CLI, a real PostgreSQL and the sandbox over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg

from midpay.midtrans.notifications import compute_signature
from tests.conftest import REPO, SERVER_KEY
from tests.helpers import payment_row, wait_until


def _events(url: str, order_id: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT is_verified, processed, outcome, processing_error FROM payment_webhook_events "
            "WHERE %s::text IS NULL OR order_id = %s ORDER BY received_at, id",
            (order_id, order_id),
        ).fetchall()


def _write(path: Path, body: Any) -> Path:
    path.write_text(json.dumps(body))
    return path


def test_whole_lifecycle_through_the_cli(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    charged = cli("charge", "--amount", "154600", "--user-id", "7", "--json")
    assert charged.exit_code == 0, charged
    doc = charged.json()
    order_id = doc["order_id"]
    assert doc["status"] == "pending" and doc["gross_amount"] == 154600 and doc["user_id"] == 7
    assert doc["payment_type"] == "gopay" and doc["midtrans_transaction_id"]
    assert {a["name"] for a in doc["actions"]} >= {"generate-qr-code", "deeplink-redirect"}
    assert doc["expiry_time"] and doc["expiry_time"].endswith("+07:00")
    assert set(doc) == {
        "order_id", "status", "gross_amount", "payment_type", "user_id", "midtrans_transaction_id",
        "paid_at", "created_at", "updated_at", "actions", "qr_string", "expiry_time",
    }

    status = cli("status", order_id, "--json")
    assert status.exit_code == 0 and status.json()["status"] == "pending"

    body = sandbox.pay(order_id, "settlement")
    replay = cli("replay-webhook", str(_write(tmp_path / "n.json", body)), "--json")
    assert replay.exit_code == 0, replay
    rdoc = replay.json()
    assert rdoc["summary"] == {"total": 1, "applied": 1, "unchanged": 0, "awaiting": 0, "rejected": 0}
    assert rdoc["results"][0] == {
        "source": str(tmp_path / "n.json"), "order_id": order_id, "verified": True, "applied": True,
        "status_before": "pending", "status_after": "settlement", "error": None,
        "outcome": "applied", "confirmed": True,
    }

    final = cli("status", order_id, "--json").json()
    assert final["status"] == "settlement" and final["paid_at"] is not None
    assert final["actions"], "the charge's actions survive later answers"

    rec = cli("reconcile", "--min-age", "0", "--json")
    assert rec.exit_code == 0, rec
    assert rec.json()["summary"] == {"checked": 0, "changed": 0, "unchanged": 0, "errors": 0}


def test_qris_charge_shows_qr_string(cli: Any) -> None:
    charged = cli("charge", "--amount", "275000", "--qris", "--json")
    assert charged.exit_code == 0, charged
    doc = charged.json()
    assert doc["payment_type"] == "qris" and doc["qr_string"]
    human = cli("charge", "--amount", "5000", "--qris")
    assert human.exit_code == 0
    assert "▀" in human.stdout or "▄" in human.stdout  # the QR drawn in the terminal
    assert "Rp 5.000" in human.stdout


def test_five_replays_one_transition_paid_at_unchanged(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = cli("charge", "--amount", "10000", "--json").json()["order_id"]
    path = _write(tmp_path / "settle.json", sandbox.pay(order_id, "settlement"))
    first = cli("replay-webhook", str(path), "--json")
    assert first.json()["summary"]["applied"] == 1
    paid = payment_row(db_url, order_id)
    for _ in range(4):
        again = cli("replay-webhook", str(path), "--json")
        assert again.exit_code == 0
        assert again.json()["summary"] == {"total": 1, "applied": 0, "unchanged": 1, "awaiting": 0, "rejected": 0}
    assert payment_row(db_url, order_id) == paid
    events = _events(db_url, order_id)
    assert len(events) == 5
    assert [e[2] for e in events] == ["applied"] + ["unchanged"] * 4


def test_late_pending_after_settlement_changes_nothing(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = cli("charge", "--amount", "20000", "--json").json()["order_id"]
    pending = sandbox.pay(order_id, "pending") if hasattr(sandbox, "pay") else None
    settle = sandbox.pay(order_id, "settlement")
    assert cli("replay-webhook", str(_write(tmp_path / "s.json", settle))).exit_code == 0
    before = payment_row(db_url, order_id)
    late = cli("replay-webhook", str(_write(tmp_path / "p.json", pending)), "--json")
    assert late.exit_code == 0
    result = late.json()["results"][0]
    assert (result["status_before"], result["status_after"], result["applied"]) == ("settlement", "settlement", False)
    assert payment_row(db_url, order_id) == before
    # Confirmed with Midtrans, which still says settlement: the late body changes nothing.
    assert result["outcome"] == "unchanged" and result["confirmed"] is True
    assert "Midtrans says settlement" in (_events(db_url, order_id)[-1][3] or "")


def test_wrong_signature_amount_and_unknown_order_are_stored_and_rejected(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    order_id = cli("charge", "--amount", "30000", "--json").json()["order_id"]
    good = sandbox.pay(order_id, "settlement")
    before = payment_row(db_url, order_id)

    forged = {**good, "signature_key": "0" * 128}
    amount = {**good, "gross_amount": "1.00"}
    amount["signature_key"] = compute_signature(order_id, amount["status_code"], "1.00", SERVER_KEY)
    unknown = {**good, "order_id": "no-such-order"}
    unknown["signature_key"] = compute_signature("no-such-order", good["status_code"], good["gross_amount"], SERVER_KEY)
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, body in (("1-forged", forged), ("2-amount", amount), ("3-unknown", unknown)):
        _write(folder / f"{name}.json", body)

    result = cli("replay-webhook", str(folder), "--json")
    assert result.exit_code == 1
    doc = result.json()
    assert doc["summary"] == {"total": 3, "applied": 0, "unchanged": 0, "awaiting": 0, "rejected": 3}
    errors = [r["error"] for r in doc["results"]]
    assert "signature" in errors[0] and doc["results"][0]["verified"] is False
    assert "amount mismatch" in errors[1] and doc["results"][1]["verified"] is True
    assert "unknown order" in errors[2]
    assert payment_row(db_url, order_id) == before
    stored = _events(db_url)
    assert len(stored) == 3 and all(not processed and outcome == "rejected" for _, processed, outcome, _ in stored)
    assert all(error for *_, error in stored)


def test_malformed_json_jsonl_and_stdin(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = cli("charge", "--amount", "40000", "--json").json()["order_id"]
    good = sandbox.pay(order_id, "settlement")
    bad = tmp_path / "broken.json"
    bad.write_text('{"order_id": "x",\n  "status_code": }')
    lines = tmp_path / "batch.jsonl"
    lines.write_text(json.dumps(good) + "\n" + "{nope\n")
    result = cli("replay-webhook", str(bad), str(lines), "--json")
    assert result.exit_code == 1
    doc = result.json()
    sources = [r["source"] for r in doc["results"]]
    assert sources == [str(bad), f"{lines}:1", f"{lines}:2"]
    assert "line 2" in doc["results"][0]["error"]
    assert doc["results"][1]["applied"] is True
    assert doc["results"][2]["error"].startswith("malformed JSON")
    assert len(_events(db_url)) == 3  # malformed bodies are stored too

    piped = cli("replay-webhook", "-", "--json", input=json.dumps(good))
    assert piped.exit_code == 0 and piped.json()["results"][0]["source"] == "-"


def test_dry_run_writes_nothing(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = cli("charge", "--amount", "50000", "--json").json()["order_id"]
    path = _write(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    dry = cli("replay-webhook", str(path), "--dry-run", "--json")
    assert dry.exit_code == 0
    assert dry.json()["results"][0]["status_after"] == "settlement"
    assert payment_row(db_url, order_id)["status"] == "pending"
    assert _events(db_url) == []


def test_missing_file_is_usage_error(cli: Any, tmp_path: Path) -> None:
    result = cli("replay-webhook", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and result.stderr.startswith("Error: cannot read")


def test_status_of_unknown_order_is_exit_1(cli: Any) -> None:
    result = cli("status", "no-such-order")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no such order: no-such-order"


def test_charge_validates_amount_and_order_id(cli: Any) -> None:
    assert cli("charge", "--amount", "0").exit_code == 2
    assert cli("charge", "--amount", "-5").exit_code == 2
    assert cli("charge", "--amount", "12.5").exit_code == 2
    bad = cli("charge", "--amount", "1000", "--order-id", "a/b#c")
    assert bad.exit_code == 2 and "invalid order id" in bad.stderr
    long = cli("charge", "--amount", "1000", "--order-id", "x" * 51)
    assert long.exit_code == 2


def test_duplicate_order_at_midtrans_ends_as_failure(cli: Any, db_url: str, gateway: Any) -> None:
    gateway.charge(order_id="taken-1", gross_amount=1000, idempotency_key="k-taken-1")
    result = cli("charge", "--amount", "1000", "--order-id", "taken-1", "--json")
    assert result.exit_code == 1
    assert "406" in result.stderr
    row = payment_row(db_url, "taken-1")
    assert row["status"] == "failure"
    with psycopg.connect(db_url) as conn:
        kept = conn.execute(
            "SELECT midtrans_response_json->>'status_code' FROM payment_transactions WHERE order_id = 'taken-1'"
        ).fetchone()
    assert kept == ("406",)


def test_charge_timeout_stays_created_and_status_recovers_it(cli: Any, db_url: str, sandbox: Any, env: Any) -> None:
    os.environ["MIDPAY_TIMEOUT"] = "1"
    # Midtrans takes the charge but answers only after the client gave up.
    sandbox.set_faults(stall_rate=1.0, stall_seconds=1.5)
    result = cli("charge", "--amount", "60000", "--order-id", "slow-1")
    assert result.exit_code == 3
    assert "midpay status slow-1" in result.stderr
    assert payment_row(db_url, "slow-1")["status"] == "created"
    sandbox.set_faults(stall_rate=0.0)
    wait_until(lambda: sandbox.stats()["charges"].get("slow-1"), 10, what="the sandbox to process the stalled charge")
    recovered = cli("status", "slow-1", "--json")
    assert recovered.exit_code == 0, recovered
    assert recovered.json()["status"] == "pending"
    assert sandbox.stats()["charges"].get("slow-1") == 1  # never charged twice


def test_reconcile_recovers_a_killed_charge(cli: Any, db_url: str, gateway: Any) -> None:
    with psycopg.connect(db_url) as conn:
        # Killed after Midtrans answered: the row never left `created`.
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES ('crash-answered', 7000, 'gopay', 'created', now() - interval '2 minutes'), "
            "       ('crash-unsent', 8000, 'gopay', 'created', now() - interval '20 minutes'), "
            "       ('crash-young', 9000, 'gopay', 'created', now() - interval '2 minutes')"
        )
    gateway.charge(order_id="crash-answered", gross_amount=7000, idempotency_key="k-crash")
    result = cli("reconcile", "--min-age", "0", "--json")
    assert result.exit_code == 0, result
    by_order = {r["order_id"]: r for r in result.json()["results"]}
    assert by_order["crash-answered"]["status_after"] == "pending"
    assert by_order["crash-unsent"]["status_after"] == "failure"
    assert by_order["crash-young"]["status_after"] == "created"  # still inside the grace period
    assert result.json()["summary"] == {"checked": 3, "changed": 2, "unchanged": 1, "errors": 0}


def test_reconcile_reports_pending_unknown_to_midtrans(cli: Any, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES ('ghost', 1000, 'gopay', 'pending', now() - interval '1 hour')"
        )
    result = cli("reconcile", "--min-age", "0", "--json")
    assert result.exit_code == 1
    assert result.json()["results"][0]["error"] and result.json()["summary"]["errors"] == 1
    assert payment_row(db_url, "ghost")["status"] == "pending"


def test_reconcile_applies_midtrans_state(cli: Any, db_url: str, sandbox: Any) -> None:
    ids = [cli("charge", "--amount", str(1000 + i), "--json").json()["order_id"] for i in range(6)]
    sandbox.pay(ids[0], "settlement")
    sandbox.pay(ids[1], "expire")
    sandbox.pay(ids[2], "cancel")
    result = cli("reconcile", "--min-age", "0", "--concurrency", "3", "--json")
    assert result.exit_code == 0, result
    after = {r["order_id"]: r["status_after"] for r in result.json()["results"]}
    assert after == {
        ids[0]: "settlement", ids[1]: "expire", ids[2]: "cancel", ids[3]: "pending", ids[4]: "pending",
        ids[5]: "pending",
    }
    assert payment_row(db_url, ids[0])["paid_at"] is not None
    again = cli("reconcile", "--min-age", "0", "--json")
    assert again.json()["summary"]["checked"] == 0  # checked moments ago: not due yet


def _process_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "PYTHONPATH": str(REPO)}


def test_overlapping_reconcile_runs_check_each_row_once(env: dict[str, str], db_url: str, sandbox: Any) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "SELECT 'ov-' || g, 1000, 'gopay', 'pending', now() - interval '5 minutes' FROM generate_series(1, 500) g"
        )
    sandbox.reset_stats()
    sandbox.set_faults(latency_ms=5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "midpay", "reconcile", "--min-age", "0", "--concurrency", "4", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_process_env(env),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    docs = [json.loads(out) for out, _ in outs]
    assert sum(d["summary"]["checked"] for d in docs) == 500
    assert all(d["summary"]["checked"] > 0 for d in docs), "both runs took part"
    checks = sandbox.stats()["status_checks"]
    assert len(checks) == 500 and set(checks.values()) == {1}
    # Midtrans knows none of these pending rows: every check is an error, so exit 1.
    assert [p.returncode for p in procs] == [1, 1]


def test_same_body_from_several_processes_applies_once(
    cli: Any, env: dict[str, str], db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    order_id = cli("charge", "--amount", "70000", "--json").json()["order_id"]
    path = _write(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "midpay", "replay-webhook", str(path), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_process_env(env),
        )
        for _ in range(4)
    ]
    docs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(d["summary"]["applied"] for d in docs) == 1
    assert sum(d["summary"]["unchanged"] for d in docs) == 3
    assert len(_events(db_url, order_id)) == 4


def test_reconcile_while_notifications_land(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    ids = [cli("charge", "--amount", str(2000 + i), "--json").json()["order_id"] for i in range(30)]
    bodies = [sandbox.pay(order_id, "settlement") for order_id in ids[:15]]
    sandbox.set_faults(latency_ms=20)
    folder = tmp_path / "landing"
    folder.mkdir()
    for i, body in enumerate(bodies):
        _write(folder / f"{i:03}.json", body)
    outcome: dict[str, Any] = {}

    def replay() -> None:
        from midpay.intake import bodies, online
        from midpay.midtrans.gateway import Gateway

        with Gateway(base_url=sandbox.url, server_key=SERVER_KEY) as gateway:
            received = bodies.iter_bodies([str(folder)], lambda: "")
            outcome["results"] = online.replay(db_url, gateway, received, SERVER_KEY).results

    thread = threading.Thread(target=replay)
    thread.start()
    rec = cli("reconcile", "--min-age", "0", "--concurrency", "4", "--json")
    thread.join(60)
    assert rec.exit_code == 0, rec
    assert all(r.outcome != "rejected" for r in outcome["results"])
    for order_id in ids[:15]:
        row = payment_row(db_url, order_id)
        assert row["status"] == "settlement" and row["paid_at"] is not None
    for order_id in ids[15:]:
        assert payment_row(db_url, order_id)["status"] == "pending"


def test_transaction_id_taken_by_another_payment_is_rejected_not_crashed(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    first = cli("charge", "--amount", "11000", "--json").json()
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES ('twin', 11000, 'gopay', 'created')"
        )
    body = {**sandbox.pay(first["order_id"], "settlement"), "order_id": "twin"}
    body["signature_key"] = compute_signature("twin", body["status_code"], body["gross_amount"], SERVER_KEY)
    result = cli("replay-webhook", str(_write(tmp_path / "twin.json", body)), "--json")
    assert result.exit_code == 1, result
    # Confirmed with Midtrans, which knows no order "twin": the borrowed transaction id is never stored.
    assert "Midtrans does not know" in result.json()["results"][0]["error"]
    assert payment_row(db_url, "twin")["status"] == "created"
    assert payment_row(db_url, "twin")["midtrans_transaction_id"] is None
    assert [e[2] for e in _events(db_url, "twin")] == ["rejected"]


def test_charge_wait_polls_until_final(cli: Any, sandbox: Any) -> None:
    def pay_soon() -> None:
        # Paid once `charge --wait` has asked at least once: it must keep polling until the final state.
        wait_until(lambda: sandbox.stats()["status_checks"].get("wait-1"), 10, what="charge --wait to poll")
        sandbox.pay("wait-1", "settlement")

    payer = threading.Thread(target=pay_soon)
    payer.start()
    result = cli("charge", "--amount", "12000", "--order-id", "wait-1", "--wait", "--json")
    payer.join(10)
    assert result.exit_code == 0, result
    doc = result.json()
    assert doc["status"] == "settlement" and doc["paid_at"] is not None


def test_a_body_that_breaks_the_decision_is_still_stored(
    cli: Any, db_url: str, sandbox: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from midpay.intake import pipeline as intake

    order_id = cli("charge", "--amount", "13000", "--json").json()["order_id"]
    path = _write(tmp_path / "s.json", sandbox.pay(order_id, "settlement"))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decision exploded")

    monkeypatch.setattr(intake, "decide_locked", broken)
    result = cli("replay-webhook", str(path), "--json")
    assert result.exit_code == 1, result
    assert result.json()["results"][0]["error"] == "not processed: RuntimeError: decision exploded"
    assert payment_row(db_url, order_id)["status"] == "pending"
    assert [e[2] for e in _events(db_url, order_id)] == ["rejected"]


def test_reconcile_dry_run_reports_and_writes_nothing(cli: Any, db_url: str, sandbox: Any) -> None:
    ids = [cli("charge", "--amount", str(3000 + i), "--json").json()["order_id"] for i in range(3)]
    sandbox.pay(ids[0], "settlement")
    dry = cli("reconcile", "--min-age", "0", "--dry-run", "--json")
    assert dry.exit_code == 0, dry
    after = {r["order_id"]: r["status_after"] for r in dry.json()["results"]}
    assert after == {ids[0]: "settlement", ids[1]: "pending", ids[2]: "pending"}
    with psycopg.connect(db_url) as conn:
        untouched = conn.execute(
            "SELECT count(*) FROM payment_transactions WHERE status = 'pending' AND last_checked_at IS NULL"
        ).fetchone()
    assert untouched == (3,)
    real = cli("reconcile", "--min-age", "0", "--json")
    assert real.json()["summary"] == {"checked": 3, "changed": 1, "unchanged": 2, "errors": 0}
