"""Operator views and actions: payments, events, reprocess, cancel, expire, refund.

Library and command line, against a real PostgreSQL and the sandbox over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.errors import UsageError
from midpay.intake import online as confirm
from midpay.midtrans.notifications import compute_signature
from midpay.payments import operations
from tests.conftest import SERVER_KEY
from tests.helpers import payment_status

PAYMENT_KEYS = {
    "order_id", "status", "gross_amount", "payment_type", "user_id", "midtrans_transaction_id",
    "paid_at", "created_at", "updated_at", "actions", "qr_string", "expiry_time",
}


def _events(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, order_id, is_verified, processed, outcome, processing_error "
            "FROM payment_webhook_events ORDER BY received_at, id"
        ).fetchall()


def _refunds(url: str, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT refund_key, amount, status FROM payment_refunds WHERE order_id = %s ORDER BY created_at, id",
            (order_id,),
        ).fetchall()


def _write(path: Path, body: Any) -> Path:
    path.write_text(json.dumps(body))
    return path


def _charge(cli: Any, amount: int, order_id: str | None = None) -> str:
    args = ["charge", "--amount", str(amount), "--json"] + (["--order-id", order_id] if order_id else [])
    result = cli(*args)
    assert result.exit_code == 0, result
    return str(result.json()["order_id"])


def _settled(cli: Any, sandbox: Any, amount: int) -> str:
    order_id = _charge(cli, amount)
    sandbox.pay(order_id, "settlement")
    assert cli("status", order_id, "--json").json()["status"] == "settlement"
    return order_id


# --- help and completion ---------------------------------------------------------------


def test_help(cli: Any) -> None:
    for command in (["payments"], ["events"], ["events", "reprocess"], ["cancel"], ["expire"], ["refund"]):
        result = cli(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout, command


def _completion(**variables: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("midpay", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the midpay console script is not installed next to this Python")
    return subprocess.run([script], env={**os.environ, **variables}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _midpay_completion midpay"),
        ("zsh", "compdef _midpay_completion midpay"),
        ("fish", "complete --command midpay"),
    ],
)
def test_shell_completion_script(shell: str, marker: str) -> None:
    proc = _completion(_MIDPAY_COMPLETE=f"source_{shell}")
    assert proc.returncode == 0 and marker in proc.stdout


def test_shell_completion_knows_subcommands() -> None:
    proc = _completion(_MIDPAY_COMPLETE="complete_bash", COMP_WORDS="midpay events ", COMP_CWORD="2")
    assert proc.returncode == 0 and proc.stdout.split() == ["reprocess"]


# --- payments --------------------------------------------------------------------------


def test_parse_since() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert operations.parse_since("2h", now=now) == now - timedelta(hours=2)
    assert operations.parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert operations.parse_since(" 7d ", now=now) == now - timedelta(days=7)
    exact = operations.parse_since("2026-11-26T10:00:00+07:00")
    assert exact == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    day = operations.parse_since("2026-11-26")
    assert day.tzinfo is not None and (day.year, day.month, day.day, day.hour) == (2026, 11, 26, 0)
    for bad in ("yesterday", "", "2h ago", "-5m", "99999999999d", "2026-13-01"):
        with pytest.raises(UsageError):
            operations.parse_since(bad, now=now)


def test_payments_list_filters_and_json(cli: Any, db_url: str, sandbox: Any) -> None:
    first = _charge(cli, 11000)
    paid = _settled(cli, sandbox, 12000)
    last = _charge(cli, 13000)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status, created_at) "
            "VALUES ('old-1', 5000, 'gopay', 'expire', now() - interval '3 days')"
        )

    everything = cli("payments", "--json")
    assert everything.exit_code == 0, everything
    rows = everything.json()["payments"]
    assert [r["order_id"] for r in rows] == [last, paid, first, "old-1"]
    assert all(set(r) == PAYMENT_KEYS | {"refunded_amount", "refundable_amount", "refunds"} for r in rows)
    assert (rows[1]["refunded_amount"], rows[1]["refundable_amount"], rows[1]["refunds"]) == (0, 12000, [])
    assert rows[1]["status"] == "settlement" and rows[1]["gross_amount"] == 12000 and rows[1]["paid_at"]

    settled = cli("payments", "--status", "SETTLEMENT", "--json").json()["payments"]
    assert [r["order_id"] for r in settled] == [paid]
    assert [r["order_id"] for r in cli("payments", "--since", "1h", "--json").json()["payments"]] == [
        last, paid, first,
    ]
    since = (datetime.now(UTC) - timedelta(days=1)).astimezone().isoformat()
    assert len(cli("payments", "--since", since, "--json").json()["payments"]) == 3
    assert len(cli("payments", "--since", "2000-01-01", "--json").json()["payments"]) == 4
    assert [r["order_id"] for r in cli("payments", "--limit", "2", "--json").json()["payments"]] == [last, paid]
    assert cli("payments", "--status", "cancel", "--json").json() == {"payments": []}

    human = cli("payments")
    assert human.exit_code == 0 and "Payments" in human.stdout and "old-1" in human.stdout
    assert "No payments match." in cli("payments", "--status", "deny").stdout


def test_payments_bad_flags_are_usage_errors(cli: Any) -> None:
    bad_since = cli("payments", "--since", "yesterday")
    assert bad_since.exit_code == 2
    assert bad_since.stderr.startswith("Error: --since must be") and len(bad_since.stderr.strip().splitlines()) == 1
    bad_status = cli("payments", "--status", "paid", "--json")
    assert bad_status.exit_code == 2 and "--status must be one of" in bad_status.stderr
    assert bad_status.json() == {"error": bad_status.stderr.strip().removeprefix("Error: "), "exit_code": 2}
    assert cli("payments", "--limit", "0").exit_code == 2


# --- events ----------------------------------------------------------------------------


def test_events_list_rejected_and_order_filters(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    order_id = _charge(cli, 21000)
    other = _charge(cli, 22000)
    good = sandbox.pay(order_id, "settlement")
    forged = {**sandbox.pay(other, "settlement"), "signature_key": "0" * 128}
    assert cli("replay-webhook", str(_write(tmp_path / "good.json", good))).exit_code == 0
    assert cli("replay-webhook", str(_write(tmp_path / "forged.json", forged))).exit_code == 1

    listed = cli("events", "--json")
    assert listed.exit_code == 0, listed
    events = listed.json()["events"]
    assert [e["order_id"] for e in events] == [other, order_id]  # newest first
    assert set(events[0]) == {
        "id", "received_at", "order_id", "midtrans_transaction_id", "transaction_status", "is_verified",
        "processed", "outcome", "processing_error", "source",
    }
    assert (events[1]["outcome"], events[1]["is_verified"], events[1]["transaction_status"]) == (
        "applied", True, "settlement",
    )
    assert events[0]["outcome"] == "rejected" and "signature" in events[0]["processing_error"]

    rejected = cli("events", "--rejected", "--json").json()["events"]
    assert [e["order_id"] for e in rejected] == [other]
    assert [e["order_id"] for e in cli("events", "--order-id", order_id, "--json").json()["events"]] == [order_id]
    assert cli("events", "--order-id", "nope", "--json").json() == {"events": []}
    assert len(cli("events", "--limit", "1", "--json").json()["events"]) == 1

    human = cli("events")
    assert human.exit_code == 0 and "Stored notifications" in human.stdout and "rejected" in human.stdout
    misplaced = cli("events", "--rejected", "reprocess")
    assert misplaced.exit_code == 2 and "after the subcommand" in misplaced.stderr


# --- reprocess -------------------------------------------------------------------------


def test_reprocess_applies_a_body_whose_order_arrived_later(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, tmp_path: Path
) -> None:
    # Midtrans knows the order, this database does not yet (say, restored from an older backup).
    gateway.charge(order_id="late-1", gross_amount=31000, idempotency_key="k-late-1")
    body = sandbox.pay("late-1", "settlement")
    replay = cli("replay-webhook", str(_write(tmp_path / "late.json", body)), "--json")
    assert replay.exit_code == 1 and "unknown order" in replay.json()["results"][0]["error"]
    [(event_id, *_)] = _events(db_url)

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES ('late-1', 31000, 'gopay', 'pending')"
        )
    again = cli("events", "reprocess", "--json")
    assert again.exit_code == 0, again
    assert again.json() == {
        "results": [
            {
                "source": f"event:{event_id}", "order_id": "late-1", "verified": True, "applied": True,
                "status_before": "pending", "status_after": "settlement", "error": None,
        "outcome": "applied", "confirmed": True,
            }
        ],
        "summary": {"total": 1, "applied": 1, "unchanged": 0, "awaiting": 0, "rejected": 0},
    }
    assert payment_status(db_url, "late-1") == "settlement"
    assert _events(db_url) == [(event_id, "late-1", True, True, "applied", None)]  # the same row, no new one

    nothing = cli("events", "reprocess", "--json")
    assert nothing.exit_code == 0
    assert nothing.json() == {
        "results": [], "summary": {"total": 0, "applied": 0, "unchanged": 0, "awaiting": 0, "rejected": 0},
    }


def test_reprocess_after_the_server_key_was_fixed(
    cli: Any, env: dict[str, str], db_url: str, sandbox: Any, tmp_path: Path
) -> None:
    order_id = _charge(cli, 32000)
    good = _write(tmp_path / "good.json", sandbox.pay(order_id, "settlement"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"order_id": ')
    os.environ["MIDTRANS_SERVER_KEY"] = "SB-Mid-server-the-wrong-key"
    first = cli("replay-webhook", str(good), str(broken), "--json")
    assert first.exit_code == 1 and first.json()["summary"]["rejected"] == 2
    assert payment_status(db_url, order_id) == "pending"

    os.environ["MIDTRANS_SERVER_KEY"] = SERVER_KEY
    human = cli("events", "reprocess", "--rejected")
    assert human.exit_code == 1  # the malformed body stays rejected
    assert "1 applied" in human.stdout and "1 rejected" in human.stdout
    assert payment_status(db_url, order_id) == "settlement"
    stored = _events(db_url)
    assert len(stored) == 2
    assert [(s[4], s[2]) for s in stored] == [("applied", True), ("rejected", False)]
    assert stored[1][5].startswith("malformed JSON")

    only_order = cli("events", "reprocess", "--order-id", order_id, "--json")
    assert only_order.exit_code == 0 and only_order.json()["summary"]["total"] == 0


def test_reprocess_rejected_only_skips_rows_never_decided(
    conn: psycopg.Connection[Any], cli: Any, db_url: str, gateway: Any, sandbox: Any
) -> None:
    _charge(cli, 33000, "legacy-1")
    sandbox.pay("legacy-1", "settlement")  # what Midtrans will confirm
    body = {
        "order_id": "legacy-1", "status_code": "200", "gross_amount": "33000.00", "transaction_status": "settlement",
        "signature_key": compute_signature("legacy-1", "200", "33000.00", SERVER_KEY),
    }
    # What the older backend left behind: stored, never decided.
    conn.execute(
        "INSERT INTO payment_webhook_events (order_id, raw_body, is_verified, processed) VALUES (%s, %s, false, false)",
        ("legacy-1", json.dumps(body)),
    )
    conn.commit()
    assert confirm.reprocess(db_url, gateway, SERVER_KEY, rejected_only=True).results == []
    [result] = confirm.reprocess(db_url, gateway, SERVER_KEY).results
    assert (result.outcome, result.status_before, result.status_after) == ("applied", "pending", "settlement")
    assert confirm.reprocess(db_url, gateway, SERVER_KEY).results == []


# --- cancel and expire -----------------------------------------------------------------


def test_cancel_and_expire_a_pending_payment(cli: Any, db_url: str, sandbox: Any) -> None:
    to_cancel, to_expire = _charge(cli, 41000), _charge(cli, 42000)

    cancelled = cli("cancel", to_cancel, "--yes", "--json")
    assert cancelled.exit_code == 0, cancelled
    assert set(cancelled.json()) == PAYMENT_KEYS and cancelled.json()["status"] == "cancel"
    assert payment_status(db_url, to_cancel) == "cancel"
    again = cli("cancel", to_cancel, "--yes", "--json")
    assert again.exit_code == 1
    assert again.json() == {"error": again.stderr.strip().removeprefix("Error: "), "exit_code": 1}
    assert "412 Merchant cannot modify the status of the transaction" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    expired = cli("expire", to_expire, "--yes")
    assert expired.exit_code == 0, expired
    assert "Expired" in expired.stdout and "expire" in expired.stdout
    assert payment_status(db_url, to_expire) == "expire"
    repeated = cli("expire", to_expire, "-y")
    assert repeated.exit_code == 1 and "412" in repeated.stderr

    unknown = cli("cancel", "no-such-order", "--yes")
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "Error: no such order: no-such-order"


def test_destructive_actions_need_yes_without_a_terminal(cli: Any, db_url: str, sandbox: Any) -> None:
    order_id = _charge(cli, 43000)
    sandbox.reset_stats()
    for command in (["cancel", order_id], ["expire", order_id], ["refund", order_id, "--amount", "100"]):
        result = cli(*command)
        assert result.exit_code == 2, result
        assert result.stderr.startswith(f"Error: refusing to {command[0]} order {order_id} without --yes")
    assert payment_status(db_url, order_id) == "pending"
    assert sandbox.stats()["requests"] == 0


def test_confirmation_prompt_on_a_terminal(cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import midpay.cli.operator

    monkeypatch.setattr(midpay.cli.operator, "_must_ask", lambda action, yes: not yes)  # as if stdin were a terminal
    order_id = _charge(cli, 44000)
    declined = cli("cancel", order_id, input="n\n")
    assert declined.exit_code == 1 and "Aborted: nothing was changed." in declined.stderr
    assert f"Cancel order {order_id} (Rp 44.000, pending here) at Midtrans?" in declined.stderr
    assert payment_status(db_url, order_id) == "pending"
    accepted = cli("cancel", order_id, "--json", input="y\n")
    assert accepted.exit_code == 0 and "at Midtrans?" in accepted.stderr  # the prompt stays off stdout
    # CliRunner echoes the typed answer onto stdout; a terminal echoes it on the terminal.
    assert json.loads(accepted.stdout.removeprefix(" y\n"))["status"] == "cancel"
