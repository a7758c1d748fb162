"""One corpus of hostile bodies through every source of the intake: the same bytes, the same outcome and row.

Each source gets a database of its own holding the same payments (copied from one seeded
database), so that the very same bytes meet the very same rows. The sources:

    listen            real HTTP to ``midpay listen`` (a real process on loopback)
    file              ``replay-webhook`` with one file per body
    jsonl             ``replay-webhook`` with one ``.jsonl`` file, a body per line
    stdin             ``replay-webhook -``, one body on stdin per run
    reprocess         bodies stored undecided (``replay-webhook`` with no server key), then
                      ``events reprocess``
    --offline         ``replay-webhook --offline`` (files), and the library's offline entry
                      (``single.receive`` without a gateway) beside it

What legitimately differs, and is left out of the comparison: the ``source`` each row
records (a URL, a path, ``path:line``, ``-``); offline, a verified body whose signed
status_code (200) proves no state awaits confirmation instead of being applied (its
rejections are the online ones exactly). Every body here is one line with no ``\\n`` in
it, so that a ``.jsonl`` line and stdin can carry it byte for byte (a body with a raw
newline cannot be one ``.jsonl`` line; stdin would read it as several documents).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from midpay import db
from midpay.intake.pipeline import NotificationResult, Reason
from midpay.intake.single import receive
from midpay.midtrans.notifications import compute_signature
from midpay.payments import charge as charges
from midpay.web.app import status_for
from tests.listen_process import start_process

from ..conftest import REPO, SERVER_KEY, TEMPLATE, _create_database, _drop_database

BOM = b"\xef\xbb\xbf"
# The bodies Midtrans' answer applies online; every other one is rejected by every source.
VALID = ("genuine", "bom", "duplicate-keys", "edited-unsigned")
ORDERS = {"o-genuine": 10000, "o-bom": 20000, "o-dup": 30000, "o-edited": 40000, "o-amount": 50000}
EVENT_COLUMNS = ("raw_bytes", "raw_body", "order_id", "outcome", "processing_error", "is_verified")
RESULT_FIELDS = ("order_id", "verified", "outcome", "error")


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _resigned(doc: dict[str, Any], **changes: str) -> dict[str, Any]:
    out = {**doc, **changes}
    out["signature_key"] = compute_signature(out["order_id"], out["status_code"], out["gross_amount"], SERVER_KEY)
    return out


def corpus(paid: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """The hostile bodies (and the genuine ones they are made from), by name; ``paid``: the sandbox's bodies."""
    genuine = paid["o-genuine"]
    edited = {**paid["o-edited"], "transaction_status": "refund", "settlement_time": "2020-01-01 00:00:00"}
    bodies = {
        "genuine": _line(genuine),
        "bom": BOM + _line(paid["o-bom"]),
        "duplicate-keys": b'{"transaction_status": "refund", ' + _line(paid["o-dup"])[1:],
        "edited-unsigned": _line(edited),
        "wrong-amount": _line(_resigned(paid["o-amount"], gross_amount="1.00")),
        "unknown-order": _line(_resigned(genuine, order_id="nobody-here")),
        "forged-signature": _line({**genuine, "gross_amount": "1.00"}),
        "non-utf8": _line(genuine)[:-1] + b', "note": "caf\xff"}',
        "nul": _line(_resigned(genuine, order_id="o-genuine\u0000")),
        "lone-surrogate": _line({**genuine, "note": "\ud800"}),
        "deep-nesting": b"[" * 100 + b"]" * 100,
        "huge-integer": b'{"order_id": "o-genuine", "gross_amount": ' + b"9" * 5000 + b"}",
        "huge-float": b'{"order_id": "o-genuine", "gross_amount": 1e400}',
        "huge-amount-signed": _line(_resigned(genuine, gross_amount="9" * 40 + ".00")),
    }
    assert len(set(bodies.values())) == len(bodies) and not any(b"\n" in b for b in bodies.values())
    return bodies


# --- the databases ----------------------------------------------------------------------


@pytest.fixture
def seeded(db_url: str, gateway: Any, sandbox: Any) -> dict[str, bytes]:
    """The payments charged (in ``db_url``) and paid at the sandbox; the corpus made of their notifications."""
    with db.connect(db_url) as conn:
        for order_id, amount in ORDERS.items():
            charges.charge(conn, gateway, amount=amount, order_id=order_id)
    return corpus({order_id: sandbox.pay(order_id, "settlement") for order_id in ORDERS})


@pytest.fixture
def database(pg_admin_url: str, template_url: str, db_url: str) -> Iterator[Callable[[], str]]:
    """A maker of fresh databases holding exactly the payments of ``db_url``."""
    made: list[str] = []

    def make() -> str:
        name, url = _create_database(pg_admin_url, TEMPLATE)
        made.append(name)
        with psycopg.connect(db_url) as src, psycopg.connect(url) as dst:
            with src.cursor().copy("COPY payment_transactions TO STDOUT (FORMAT BINARY)") as out, \
                    dst.cursor().copy("COPY payment_transactions FROM STDIN (FORMAT BINARY)") as into:
                for chunk in out:
                    into.write(chunk)
        return url

    yield make
    for name in made:
        _drop_database(pg_admin_url, name)


def stored(url: str) -> dict[bytes, dict[str, Any]]:
    """The stored notifications, by their exact bytes: what the comparison reads of each row."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM payment_webhook_events ORDER BY received_at, id")
        rows = cur.fetchall()
    found = {bytes(r["raw_bytes"]): {**r, "raw_bytes": bytes(r["raw_bytes"])} for r in rows}
    assert len(found) == len(rows), "one stored row per body"
    return found


def payments(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT order_id, status, paid_at, midtrans_transaction_id, unconfirmed_since IS NOT NULL "
                "FROM payment_transactions"
            ).fetchall()
        }


# --- the sources --------------------------------------------------------------------------

Outcomes = dict[str, dict[str, Any]]  # by body name: the result's fields compared


def _picked(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in RESULT_FIELDS}


def _run(cli: Any, monkeypatch: pytest.MonkeyPatch, url: str, *args: str, stdin: bytes | None = None) -> Any:
    monkeypatch.setenv("DATABASE_URL", url)
    result = cli(*args, "--json", input=stdin)
    assert result.exit_code in (0, 1), result
    return result.json()


def by_files(cli: Any, monkeypatch: Any, url: str, bodies: dict[str, bytes], folder: Path, *flags: str) -> Outcomes:
    folder.mkdir()
    paths = []
    for name, data in bodies.items():
        (folder / f"{name}.json").write_bytes(data)
        paths.append(str(folder / f"{name}.json"))
    doc = _run(cli, monkeypatch, url, "replay-webhook", *paths, *flags)
    return {name: _picked(r) for name, r in zip(bodies, doc["results"], strict=True)}


def by_jsonl(cli: Any, monkeypatch: Any, url: str, bodies: dict[str, bytes], path: Path) -> Outcomes:
    path.write_bytes(b"".join(data + b"\n" for data in bodies.values()))
    doc = _run(cli, monkeypatch, url, "replay-webhook", str(path))
    return {name: _picked(r) for name, r in zip(bodies, doc["results"], strict=True)}


def by_stdin(cli: Any, monkeypatch: Any, url: str, bodies: dict[str, bytes]) -> Outcomes:
    out = {}
    for name, data in bodies.items():
        [result] = _run(cli, monkeypatch, url, "replay-webhook", "-", stdin=data)["results"]
        out[name] = _picked(result)
    return out


def by_reprocess(cli: Any, monkeypatch: Any, url: str, bodies: dict[str, bytes], folder: Path, *flags: str
                 ) -> Outcomes:
    """Stored undecided first (no server key to verify them with), then decided by ``events reprocess``."""
    folder.mkdir()
    for name, data in bodies.items():
        (folder / f"{name}.json").write_bytes(data)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("MIDTRANS_SERVER_KEY")
    kept = cli("replay-webhook", *(str(folder / f"{name}.json") for name in bodies))
    assert kept.exit_code == 2 and "bodies stored undecided" in kept.stderr, kept
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", SERVER_KEY)
    return reprocessed(cli, monkeypatch, url, bodies, *flags)


def reprocessed(cli: Any, monkeypatch: Any, url: str, bodies: dict[str, bytes], *flags: str) -> Outcomes:
    """``events reprocess`` (oldest first): each result named by the body its stored row holds."""
    names = {data: name for name, data in bodies.items()}
    with psycopg.connect(url) as conn:
        order = [bytes(r[0]) for r in conn.execute(
            "SELECT raw_bytes FROM payment_webhook_events WHERE NOT processed AND (NOT %s OR outcome = 'rejected') "
            "ORDER BY received_at, id", ("--rejected" in flags,)).fetchall()]
    doc = _run(cli, monkeypatch, url, "events", "reprocess", *flags)
    return {names[data]: _picked(r) for data, r in zip(order, doc["results"], strict=True)}


def by_listen(env: dict[str, str], url: str, bodies: dict[str, bytes], log: Path) -> tuple[Outcomes, dict[str, int]]:
    """Each body POSTed to a real ``midpay listen``; its answers, as the CLI's results say them, and the statuses."""
    child_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "DATABASE_URL": url}
    headers = {"Content-Type": "application/json", "User-Agent": "Veritrans"}
    answers: Outcomes = {}
    statuses: dict[str, int] = {}
    with start_process(child_env, log, cwd=log.parent) as listener:
        for name, data in bodies.items():
            answer = requests.post(listener.url, data=data, headers=headers, timeout=30)
            statuses[name] = answer.status_code
            answers[name] = answer.json()
    return answers, statuses


def by_library_offline(url: str, bodies: dict[str, bytes]) -> Outcomes:
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, data in bodies.items():
            result: NotificationResult = receive(lambda: nullcontext(conn), None, data, "lib", server_key=SERVER_KEY)
            out[name] = {k: getattr(result, k) for k in RESULT_FIELDS}
    return out


# --- the comparison -----------------------------------------------------------------------


def same_rows(first: dict[bytes, dict[str, Any]], other: dict[bytes, dict[str, Any]], what: str) -> None:
    assert first.keys() == other.keys(), what
    for data, row in first.items():
        assert other[data] == row, (what, data[:80])


def test_every_source_gives_the_same_bytes_the_same_outcome_and_row(
    cli: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    seeded: dict[str, bytes], database: Callable[[], str],
) -> None:
    bodies = seeded
    urls = {name: database() for name in ("listen", "file", "jsonl", "stdin", "reprocess", "offline", "library")}
    before = payments(urls["file"])

    outcomes = {
        "file": by_files(cli, monkeypatch, urls["file"], bodies, tmp_path / "files"),
        "jsonl": by_jsonl(cli, monkeypatch, urls["jsonl"], bodies, tmp_path / "day.jsonl"),
        "stdin": by_stdin(cli, monkeypatch, urls["stdin"], bodies),
        "reprocess": by_reprocess(cli, monkeypatch, urls["reprocess"], bodies, tmp_path / "undecided"),
    }
    answers, statuses = by_listen(env, urls["listen"], bodies, tmp_path / "listen.log")

    # The outcomes: as the file source decides them, so does every other (listen answers the same fields).
    expected = outcomes["file"]
    assert {n for n, r in expected.items() if r["outcome"] == "applied"} == set(VALID)
    assert {r["outcome"] for n, r in expected.items() if n not in VALID} == {"rejected"}
    for source, found in outcomes.items():
        assert found == expected, source
    assert answers == {n: {k: r[k] for k in ("outcome", "order_id", "error")} for n, r in expected.items()}
    assert statuses == {n: 200 if n in VALID else 404 if n == "unknown-order" else 400 for n in bodies}

    # The reasons the issue named: the same precise one wherever the bytes came from.
    offset = bodies["non-utf8"].index(b"\xff")
    assert expected["non-utf8"]["error"] == f"not UTF-8: byte 0xff at offset {offset}"
    assert expected["non-utf8"]["order_id"] is None
    assert expected["unknown-order"]["error"] == "unknown order: nobody-here"
    assert expected["wrong-amount"]["verified"] and expected["unknown-order"]["verified"]

    # The stored rows: byte-exact, and the same wherever the bytes came from.
    rows = {source: stored(url) for source, url in urls.items() if source in (*outcomes, "listen")}
    assert set(rows["file"]) == set(bodies.values())
    for source in rows:
        same_rows(rows["file"], rows[source], source)
    assert rows["file"][bodies["non-utf8"]]["order_id"] is None
    online = {source: payments(urls[source]) for source in rows}
    for source in online:
        assert online[source] == online["file"], source
    assert {o for o in before if online["file"][o][0] == "settlement"} == {"o-genuine", "o-bom", "o-dup", "o-edited"}

    # A stored event reprocessed from its raw_bytes meets the rule it met the first time.
    again = reprocessed(cli, monkeypatch, urls["file"], bodies, "--rejected")
    assert again == {n: r for n, r in expected.items() if n not in VALID}
    same_rows(rows["file"], stored(urls["file"]), "reprocessed --rejected")

    check_offline(cli, monkeypatch, urls, bodies, expected, rows["file"], tmp_path / "offline")


def check_offline(cli: Any, monkeypatch: Any, urls: dict[str, str], bodies: dict[str, bytes], expected: Outcomes,
                  online_rows: dict[bytes, dict[str, Any]], folder: Path) -> None:
    """The batched ``--offline`` replay and the one-body library entry decide alike; the rejections are
    the online ones exactly, and a verified body (status_code 200 proves no state) awaits confirmation."""
    offline = by_files(cli, monkeypatch, urls["offline"], bodies, folder, "--offline")
    assert by_library_offline(urls["library"], bodies) == offline
    same_rows(stored(urls["offline"]), stored(urls["library"]), "library offline")
    assert payments(urls["offline"]) == payments(urls["library"])
    for name, result in offline.items():
        if name in VALID:
            assert result["outcome"] == "awaiting" and result["verified"], name
        else:
            assert result == expected[name], name
    offline_rows = stored(urls["offline"])
    for data, row in online_rows.items():
        if row["outcome"] == "rejected":
            assert offline_rows[data] == row


REASONS = {
    "wrong-amount": Reason.AMOUNT,
    "unknown-order": Reason.UNKNOWN_ORDER,
    "forged-signature": Reason.SIGNATURE,
    "huge-amount-signed": Reason.UNREADABLE,
    **{name: Reason.UNREADABLE for name in ("non-utf8", "nul", "lone-surrogate", "deep-nesting", "huge-integer",
                                            "huge-float")},
}


def test_each_rejection_carries_its_reason_code_and_listen_answers_by_it(
    db_url: str, seeded: dict[str, bytes]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        results = {name: receive(lambda: nullcontext(conn), None, data, "lib", server_key=SERVER_KEY)
                   for name, data in seeded.items()}
    assert {name: r.reason for name, r in results.items() if r.outcome == "rejected"} == REASONS
    assert all(r.reason is None for name, r in results.items() if name in VALID)
    assert {name: status_for(r) for name, r in results.items() if name in REASONS} == {
        name: 404 if reason is Reason.UNKNOWN_ORDER else 400 for name, reason in REASONS.items()
    }
    # The message never decides the answer: only the code does.
    unknown = results["unknown-order"]
    assert status_for(replace(unknown, reason=Reason.FAILED)) == 400
    assert status_for(replace(results["forged-signature"], error="unknown order: x")) == 400
