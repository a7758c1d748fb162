"""Refunds made elsewhere, refunds in `status`, `payments` and `reconcile`.

Against a real PostgreSQL and the sandbox over HTTP; the sandbox writes every
notification it sends, so a test can deliver them with `replay-webhook`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.refund_support import (
    dashboard_refund,
    ledger_rows,
    paid_out,
    refund_notifications,
    settled,
)

# --- refunds made elsewhere --------------------------------------------------------------


def test_a_dashboard_refund_arriving_as_a_notification_then_the_rest(
    cli: Any, db_url: str, sandbox: Any, gateway: Any, notes: Path
) -> None:
    order_id = settled(cli, sandbox, 120000)
    dashboard_refund(sandbox, order_id, 45000)
    bodies = refund_notifications(notes)
    assert bodies, "the sandbox sends refund notifications"
    replayed = cli("replay-webhook", *map(str, bodies), "--json")
    assert replayed.exit_code == 0, replayed

    shown = cli("status", order_id, "--no-refresh", "--json").json()
    assert shown["status"] == "partial_refund"
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (45000, 75000)
    [outside] = shown["refunds"]
    assert (outside["amount"], outside["origin"], outside["status"]) == (45000, "outside", "done")
    assert outside["refund_key"] and outside["refund_chargeback_id"] is not None
    human = cli("status", order_id, "--no-refresh")
    assert "outside midpay" in human.stdout and "Rp 75.000" in human.stdout

    rest = cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0, rest
    assert rest.json()["refund"]["amount"] == 75000 and rest.json()["payment"]["status"] == "refund"
    assert paid_out(sandbox, order_id) == 120000


def test_a_dashboard_refund_never_notified_still_counts(cli: Any, db_url: str, sandbox: Any, gateway: Any) -> None:
    order_id = settled(cli, sandbox, 30000)
    dashboard_refund(sandbox, order_id, 10000)  # its notification never reached midpay
    too_much = cli("refund", order_id, "--amount", "25000", "--yes")
    assert too_much.exit_code == 2 and "more than the 20000 rupiah left" in too_much.stderr
    assert paid_out(sandbox, order_id) == 10000
    rest = cli("refund", order_id, "--yes", "--json")
    assert rest.exit_code == 0 and rest.json()["refund"]["amount"] == 20000
    assert paid_out(sandbox, order_id) == 30000


def test_an_older_refund_notification_never_moves_the_total_back(
    cli: Any, db_url: str, sandbox: Any, notes: Path
) -> None:
    order_id = settled(cli, sandbox, 90000)
    assert cli("refund", order_id, "--amount", "10000", "--yes").exit_code == 0
    first = refund_notifications(notes)
    assert cli("refund", order_id, "--amount", "20000", "--yes").exit_code == 0
    replay = cli("replay-webhook", *map(str, first), "--json")  # the older bodies, after the newer
    assert replay.exit_code == 0, replay
    doc = cli("status", order_id, "--no-refresh", "--json").json()
    assert (doc["status"], doc["refunded_amount"]) == ("partial_refund", 30000)
    assert paid_out(sandbox, order_id) == 30000


# --- how refunds show --------------------------------------------------------------------


def test_payments_lists_what_was_refunded(cli: Any, sandbox: Any) -> None:
    order_id = settled(cli, sandbox, 40000)
    assert cli("refund", order_id, "--amount", "5000", "--yes").exit_code == 0
    rows = cli("payments", "--json").json()["payments"]
    [row] = [r for r in rows if r["order_id"] == order_id]
    assert (row["refunded_amount"], row["refundable_amount"], len(row["refunds"])) == (5000, 35000, 1)
    listing = cli("payments")
    assert "refunded" in listing.stdout and "Rp 5.000" in listing.stdout


def test_a_reason_is_printed_as_text_never_as_markup(cli: Any, sandbox: Any) -> None:
    order_id = settled(cli, sandbox, 20000)
    reason = "[bold red]refund[/] \x1b[31m"
    assert cli("refund", order_id, "--amount", "1000", "--reason", reason, "--yes").exit_code == 0
    shown = cli("status", order_id)
    assert "[bold red]refund[/]" in shown.stdout and "\x1b" not in shown.stdout and "\\x1b[31m" in shown.stdout
    assert json.loads(cli("status", order_id, "--json").stdout)["refunds"][0]["reason"] == reason


# --- reconcile ---------------------------------------------------------------------------


def _reconcile(cli: Any, *extra: str) -> dict[str, Any]:
    result = cli("reconcile", "--min-age", "0", "--recheck-after", "0", "--json", *extra)
    assert result.exit_code == 0, result
    doc: dict[str, Any] = result.json()
    return doc


def test_reconcile_finishes_a_refund_whose_answer_was_lost(
    cli: Any, db_url: str, sandbox: Any
) -> None:
    order_id = settled(cli, sandbox, 64000)
    quiet = settled(cli, sandbox, 10000)  # settled, no refund: reconcile leaves it alone
    sandbox.fault_order(order_id, "malformed", times=1, endpoints=["refund"])  # made, its answer garbled
    assert cli("refund", order_id, "--amount", "4000", "--yes").exit_code == 3
    doc = _reconcile(cli)
    assert [(r["order_id"], r["status_before"], r["status_after"]) for r in doc["results"]] == [
        (order_id, "settlement", "partial_refund")
    ]
    assert quiet not in {r["order_id"] for r in doc["results"]}
    assert ledger_rows(db_url, order_id) == [(f"{order_id}-rf-1", 4000, "done", "midpay")]
    assert paid_out(sandbox, order_id) == 4000


def test_reconcile_rechecks_partly_refunded_payments_at_their_own_pace(
    cli: Any, db_url: str, sandbox: Any, gateway: Any
) -> None:
    order_id = settled(cli, sandbox, 50000)
    assert cli("refund", order_id, "--amount", "5000", "--yes").exit_code == 0
    first = _reconcile(cli)  # partial_refund: due once
    assert [r["order_id"] for r in first["results"]] == [order_id]
    dashboard_refund(sandbox, order_id, 7000)  # its notification never arrives
    assert _reconcile(cli)["results"] == []  # checked less than --refund-recheck-after (3600 s) ago
    caught = _reconcile(cli, "--refund-recheck-after", "0")
    assert [r["order_id"] for r in caught["results"]] == [order_id]
    assert [r[1:] for r in ledger_rows(db_url, order_id)] == [(5000, "done", "midpay"), (7000, "done", "outside")]
    shown = cli("status", order_id, "--no-refresh", "--json").json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (12000, 38000)


def test_the_two_refund_notifications_record_the_bank_confirmation(
    cli: Any, db_url: str, sandbox: Any, notes: Path
) -> None:
    sandbox.auto_confirm_refunds = False
    order_id = settled(cli, sandbox, 55000)
    assert cli("refund", order_id, "--amount", "25000", "--yes").exit_code == 0
    made = refund_notifications(notes)
    assert cli("replay-webhook", *map(str, made)).exit_code == 0
    [row] = cli("status", order_id, "--no-refresh", "--json").json()["refunds"]
    assert (row["status"], row["bank_confirmed_at"]) == ("done", None)
    sandbox.confirm_refunds(order_id)
    confirmed = [p for p in refund_notifications(notes) if p not in made]
    assert len(confirmed) == 1
    assert cli("replay-webhook", str(confirmed[0])).exit_code == 0
    [row] = cli("status", order_id, "--no-refresh", "--json").json()["refunds"]
    assert row["status"] == "done" and row["bank_confirmed_at"] and row["refund_method"]
    assert paid_out(sandbox, order_id) == 25000
