"""Scenario 5: hostile notification bodies, at the library and through `replay-webhook`.

Whatever arrives: exactly one stored event per body, a one-line reason when it is
rejected, no write to any payment unless the body is fully valid (verified, known
order, matching amount), and through the command line exit 0/1 only, one JSON
document, no traceback. The library entry point runs offline (no Midtrans): a valid
body then writes no more than its signed status_code proves. The command line runs
online against the sandbox, which knows the orders a test means to be paid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midpay import states
from midpay.errors import InvalidPayload
from midpay.intake import bodies
from midpay.intake.pipeline import NotificationResult
from midpay.intake.single import receive
from midpay.midtrans.notifications import compute_signature, parse_amount, parse_notification, proof
from midpay.sandbox import NOTIFICATION_CODES

from ..conftest import SERVER_KEY
from .conftest import Figures

# Rows the bodies aim at: ordinary ids and ids an older backend may have written.
ORDERS = {
    "h-1": 10000,
    "h-2": 20000,
    "h-3": 30000,
    "a/b#c": 40000,
    "kartu-💳": 50000,
    "\u202eevil-rtl": 60000,
}
# More rows for the property test, so that valid bodies keep finding open payments.
ALL_ORDERS = {**ORDERS, **{f"p-{n:02d}": 1000 * (n + 1) for n in range(30)}}
FIELDS = (
    "order_id", "status_code", "gross_amount", "signature_key", "transaction_status", "transaction_id",
    "settlement_time", "transaction_time", "payment_type", "fraud_status", "expiry_time", "status_message",
    "actions", "currency", "merchant_id",
)
REQUIRED = ("order_id", "status_code", "gross_amount", "signature_key", "transaction_status")
HOSTILE_IDS = (
    "../../etc/passwd", "a/b#c/..", "%2e%2e%2f", "a b", "\u202eevil-rtl-2", "💳💳💳", "x" * 10_000, " h-1", "h-1 ",
    "H-1", "h-1\n", "' OR '1'='1", "h-1;DROP TABLE payment_transactions",
)


def body(order_id: str, status: str, amount: str, *, key: str = SERVER_KEY, **extra: Any) -> dict[str, Any]:
    """A Midtrans-shaped notification, signed over its own raw strings."""
    code = NOTIFICATION_CODES.get(status, "200")
    doc: dict[str, Any] = {
        "transaction_time": "2026-11-26 10:00:00",
        "transaction_status": status,
        "transaction_id": f"tx-{order_id[:40]}-{status}",
        "status_message": "midtrans payment notification",
        "status_code": code,
        "signature_key": compute_signature(order_id, code, amount, key),
        "payment_type": "gopay",
        "order_id": order_id,
        "merchant_id": "G000000001",
        "gross_amount": amount,
        "fraud_status": "accept",
        "currency": "IDR",
    }
    if status in ("settlement", "capture"):
        doc["settlement_time"] = "2026-11-26 10:01:02"
    doc.update(extra)
    return doc


def _receive(conn: Any, source: str, text: str) -> NotificationResult:
    """The library entry point, offline, on this connection: the body as the bytes of ``text``."""
    data = text.encode("utf-8", "surrogatepass")
    return receive(lambda: nullcontext(conn), None, data, source, server_key=SERVER_KEY)


def resign(doc: dict[str, Any]) -> dict[str, Any]:
    """Sign ``doc`` again over whatever its fields now are, when they are strings."""
    parts = [doc.get(k) for k in ("order_id", "status_code", "gross_amount")]
    if all(isinstance(p, str) for p in parts):
        doc["signature_key"] = compute_signature(*parts, SERVER_KEY)  # type: ignore[arg-type]
    return doc


def _snapshot(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return _rows_on(conn)


def _events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM payment_webhook_events").fetchone()
    return int(row[0]) if row else 0


def _fully_valid(parsed: Any, amounts: dict[str, int]) -> bool:
    """Independently of midpay's decision: would a careful receiver apply this body?"""
    if not isinstance(parsed, dict):
        return False
    order_id, code, amount, sig = (parsed.get(k) for k in ("order_id", "status_code", "gross_amount", "signature_key"))
    if not all(isinstance(v, str) for v in (order_id, code, amount, sig)):
        return False
    if compute_signature(order_id, code, amount, SERVER_KEY) != sig.lower():
        return False
    try:
        parse_notification(parsed)
        value = parse_amount(amount)
    except InvalidPayload:
        return False
    return order_id in amounts and value == amounts[order_id]


@pytest.fixture
def hostile_db(db_url: str) -> Iterator[str]:
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
            "VALUES (%s, %s, 'gopay', 'pending')",
            list(ALL_ORDERS.items()),
        )
    yield db_url


# --- property: the library entry point ---------------------------------------------------

_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=24)
_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=10)
_statuses = st.sampled_from([*sorted(states.MIDTRANS_STATES), "PENDING", "Settlement", "", "paid", "created"])
_amounts = st.sampled_from(["10000.00", "10000", "20000.00", "30000.00", "40000.00", "50000.00", "60000.00",
                            "1.00", "10000.50", "-10000.00", "1e4", "10,000.00", "٤٤٠٠٠"])


@st.composite
def _valid(draw: st.DrawFn) -> Any:
    """A fully valid body for a known order, in any of Midtrans' states, maybe with an extra field."""
    order_id = draw(st.sampled_from(sorted(ALL_ORDERS)))
    doc = body(order_id, draw(st.sampled_from(sorted(states.MIDTRANS_STATES))), f"{ALL_ORDERS[order_id]}.00")
    if draw(st.booleans()):
        doc[draw(_text)] = draw(_json)
    return resign(doc)


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    """A real-looking body, then up to three hostile edits, re-signed or not."""
    order_id = draw(st.sampled_from([*sorted(ALL_ORDERS), *HOSTILE_IDS[:6]]))
    right = f"{ALL_ORDERS.get(order_id, 1)}.00"
    doc = body(order_id, draw(_statuses), draw(st.just(right) | _amounts))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELDS) | _text)
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(_json)
    return resign(doc) if draw(st.booleans()) else doc


_documents = st.one_of(
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace")),
    _json.map(json.dumps),
    st.dictionaries(st.sampled_from(FIELDS) | _text, _json, max_size=12).map(json.dumps),
    st.tuples(_mutated(), st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1])),
    st.tuples(_valid(), st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1])),
    _text,
)


def _rows_on(conn: Any) -> dict[str, tuple[Any, ...]]:
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT order_id, status, paid_at, updated_at, midtrans_transaction_id, midtrans_response_json "
            "FROM payment_transactions"
        ).fetchall()
    }


def _events_on(conn: Any) -> int:
    row = conn.execute("SELECT count(*) FROM payment_webhook_events").fetchone()
    return int(row[0]) if row else 0


def _check_property(probe: Any, conn: Any, text: str, model: dict[str, str]) -> str:
    """One body through the intake; ``model`` (order id -> status) follows what only valid bodies prove."""
    stored = _rows_on(probe)
    events = _events_on(probe)
    decoded = bodies.decode_body("hypothesis", text)
    result = _receive(conn, "hypothesis", text)
    after = _rows_on(probe)
    assert _events_on(probe) == events + 1, "exactly one stored event per body"
    if result.error is not None:
        assert result.error.strip() and "\n" not in result.error, result
    valid = decoded.parse_error is None and _fully_valid(decoded.parsed, ALL_ORDERS)
    if not valid:
        assert result.outcome == "rejected", (text[:300], result)
        assert after == stored, "a body that is not fully valid wrote to a payment"
    else:
        order_id = decoded.parsed["order_id"]
        proven = proof(decoded.parsed["status_code"])
        if proven.exact and proven.state is not None:
            if states.decide(model[order_id], proven.state) is states.Decision.APPLY:
                model[order_id] = proven.state
        expected = ("applied", "unchanged") if proven.exact else ("awaiting",)
        assert result.outcome in expected, (text[:300], result)
        assert {k for k in after if after[k] != stored[k]} <= {order_id}
        if result.applied:  # only ever the state the signed status_code proves
            assert proven.state is not None
            assert states.decide(stored[order_id][0], proven.state) is states.Decision.APPLY
            assert after[order_id][0] == proven.state
        else:
            assert after[order_id][0] == stored[order_id][0]
        assert after[order_id][1] == stored[order_id][1], "paid_at never comes from an unsigned time"
        assert after[order_id][3] == stored[order_id][3], "the unsigned transaction_id is never stored"
    return result.outcome


def _run_property(url: str, figures: Figures, examples: int) -> None:
    # What the rows must end as: each moved only by the signed status_code of a fully valid
    # body, as the forward-only rule allows; paid_at never set offline (no signed time).
    model = {order_id: row[0] for order_id, row in _snapshot(url).items()}
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url, autocommit=True) as probe:

        @settings(
            max_examples=examples, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(text=_documents)
        def check(text: str) -> None:
            outcome = _check_property(probe, conn, text, model)
            figures.events += 1
            figures.notes[outcome] = figures.notes.get(outcome, 0) + 1

        check()
    figures.orders = len(ALL_ORDERS)
    figures.lost = figures.events - _events(url)
    final = _snapshot(url)
    wrong = [o for o, row in final.items() if (row[0], row[1]) != (model[o], None)]
    figures.wrongly_applied = len(wrong)
    assert wrong == [], {o: (final[o][:2], model[o]) for o in wrong}


def test_any_body_is_stored_once_and_only_a_valid_one_writes(hostile_db: str, figures: Figures) -> None:
    _run_property(hostile_db, figures, 200)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_any_body_is_stored_once_and_only_a_valid_one_writes_many(hostile_db: str, figures: Figures) -> None:
    _run_property(hostile_db, figures, 5000)


# --- bodies PostgreSQL cannot hold as they are: each is stored, rejected ----------------

@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"order_id": "h-1\\u0000", "transaction_status": "settlement"}', id="nul-in-order_id"),
        pytest.param('{"order_id": "h-1", "transaction_id": "\\u0000"}', id="nul-in-transaction_id"),
        pytest.param('{"order_id": "h-1", "signature_key": "ab\\u0000"}', id="nul-in-signature_key"),
        pytest.param('{"a\\u0000": 1}', id="nul-in-a-key"),
        pytest.param('{"order_id": "h-1", "note": "\\ud800"}', id="lone-surrogate-in-a-value"),
        pytest.param('{"\\udfff": 1}', id="lone-surrogate-as-a-key"),
        pytest.param('{"order_id": "\\ud83d", "transaction_status": "settlement"}', id="lone-surrogate-in-order_id"),
        pytest.param('{"gross_amount": ' + "9" * 5000 + "}", id="int-over-4300-digits"),
    ],
)
def test_what_postgresql_cannot_hold_is_stored_and_rejected(hostile_db: str, text: str) -> None:
    _assert_stored_and_rejected(hostile_db, text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"order_id": "h-1", "gross_amount": NaN}', id="NaN"),
        pytest.param('{"order_id": "h-1", "gross_amount": Infinity}', id="Infinity"),
        pytest.param("[-Infinity]", id="-Infinity"),
        pytest.param('{"order_id": "h-1", "gross_amount": 1e400}', id="float-overflow"),
    ],
)
def test_non_json_numbers_are_stored_and_rejected(hostile_db: str, text: str) -> None:
    _assert_stored_and_rejected(hostile_db, text)


def test_deep_nesting_just_below_the_recursion_limit_is_stored_and_rejected(hostile_db: str) -> None:
    crashed = []
    with psycopg.connect(hostile_db, autocommit=True) as conn:
        for depth in range(850, 1001):
            try:
                _receive(conn, "deep", "[" * depth + "]" * depth)
            except RecursionError:
                crashed.append(depth)
    assert crashed == []


def test_a_genuine_pending_signature_cannot_claim_settlement(hostile_db: str) -> None:
    genuine = body("h-1", "pending", "10000.00")
    forged = {**genuine, "transaction_status": "settlement", "settlement_time": "2026-11-26 10:01:02"}
    before = _snapshot(hostile_db)
    with psycopg.connect(hostile_db, autocommit=True) as conn:
        result = _receive(conn, "forged", json.dumps(forged))
    assert not result.applied
    assert _snapshot(hostile_db) == before


def _assert_stored_and_rejected(url: str, text: str) -> None:
    before, events = _snapshot(url), _events(url)
    with psycopg.connect(url, autocommit=True) as conn:
        result = _receive(conn, "hostile", text)
    assert result.outcome == "rejected" and result.error
    assert _events(url) == events + 1
    assert _snapshot(url) == before


# --- the command line: replay-webhook with hostile files --------------------------------


def _known(gateway: Any, sandbox: Any, *order_ids: str) -> None:
    """Orders the sandbox knows, paid: what confirming their notifications will find."""
    for order_id in order_ids:
        key = "k-" + hashlib.sha256(order_id.encode()).hexdigest()[:30]
        gateway.charge(order_id=order_id, gross_amount=ORDERS[order_id], idempotency_key=key)
        sandbox.pay(order_id, "settlement")


def _replay(cli: Any, *paths: Path, offline: bool = False) -> Any:
    result = cli("replay-webhook", *map(str, paths), "--json", *(["--offline"] if offline else []))
    assert "Traceback" not in result.stderr, result
    assert result.exit_code in (0, 1), result
    assert result.stderr == "", result  # rejections are reported in the JSON, not as errors
    return result


CLI_CASES: dict[str, bytes] = {
    "bytes.json": b"\xff\xfe\x00\x01garbage{{\x80\x81",
    "empty.json": b"",
    "spaces.json": b"   \n\t ",
    "null.json": b"null",
    "string.json": b'"just a string"',
    "number.json": b"154600",
    "array.json": b"[1, 2, 3]",
    "deep.json": b"[" * 100_000 + b"]" * 100_000,
    "deep-object.json": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "big-int.json": b'{"order_id": "h-1", "gross_amount": ' + b"9" * 5000 + b"}",
    "huge-garbage.json": b"x" * (10 * 1024 * 1024),
    "huge-array.json": b"[" + b",".join([b"1234567"] * 1_300_000) + b"]",
    "truncated.json": json.dumps(body("h-1", "settlement", "10000.00")).encode()[:-7],
    "forged.json": json.dumps({**body("h-2", "pending", "20000.00"), "signature_key": "0" * 128}).encode(),
    "wrong-key.json": json.dumps(body("h-2", "settlement", "20000.00", key="SB-Mid-server-other")).encode(),
    "amount.json": json.dumps(body("h-2", "settlement", "20001.00")).encode(),
}


def test_hostile_files_are_rejected_stored_and_change_nothing(
    cli: Any, hostile_db: str, tmp_path: Path, figures: Figures
) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, data in CLI_CASES.items():
        (folder / name).write_bytes(data)
    before, events = _snapshot(hostile_db), _events(hostile_db)
    result = _replay(cli, *sorted(folder.iterdir()))
    doc = result.json()
    figures.events = len(CLI_CASES)
    figures.orders = len(ORDERS)
    figures.lost = len(CLI_CASES) - (_events(hostile_db) - events)
    figures.wrongly_applied = sum(1 for k in before if _snapshot(hostile_db)[k] != before[k])
    figures.notes = {"errors": {Path(r["source"]).name: r["error"] for r in doc["results"]}}
    assert result.exit_code == 1
    assert doc["summary"] == {
        "total": len(CLI_CASES), "applied": 0, "unchanged": 0, "awaiting": 0, "rejected": len(CLI_CASES),
    }
    for item in doc["results"]:
        assert item["error"] and "\n" not in item["error"] and len(item["error"]) < 300, item
    assert figures.lost == 0 and figures.wrongly_applied == 0


def test_odd_but_valid_bodies_apply_once(
    cli: Any, hostile_db: str, tmp_path: Path, gateway: Any, sandbox: Any
) -> None:
    """A 10 MB body, and bytes that are not UTF-8 in a field the signature does not cover, are still genuine."""
    _known(gateway, sandbox, "h-1", "h-3")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(body("h-1", "settlement", "10000.00", padding="p" * (10 * 1024 * 1024))))
    latin = tmp_path / "latin1.json"
    latin.write_bytes(json.dumps(body("h-3", "settlement", "30000.00", status_message="caf\u00e9")).encode("latin-1"))
    result = _replay(cli, big, latin)
    assert result.exit_code == 0 and result.json()["summary"]["applied"] == 2, result
    after = _snapshot(hostile_db)
    assert after["h-1"][0] == after["h-3"][0] == "settlement"


def test_wrong_types_for_every_field(cli: Any, hostile_db: str, tmp_path: Path, figures: Figures) -> None:
    values: list[Any] = [154600, 1.5, -1, [], {}, None, True, False, "", "   ", ["10000.00"], {"value": "x"}]
    lines: list[tuple[str, Any, str]] = []
    with psycopg.connect(hostile_db) as conn, conn.cursor() as cur:
        for field in FIELDS:
            for number, value in enumerate(values):
                order_id = f"wt-{field}-{number}"
                cur.execute(
                    "INSERT INTO payment_transactions (order_id, gross_amount, payment_type, status) "
                    "VALUES (%s, 10000, 'gopay', 'pending')",
                    (order_id,),
                )
                doc = body(order_id, "settlement", "10000.00")
                doc[field] = value
                if field in ("order_id", "status_code", "gross_amount"):  # signed fields: sign what is sent
                    resign(doc)
                lines.append((field, value, json.dumps(doc)))
    path = tmp_path / "wrong-types.jsonl"
    path.write_text("".join(text + "\n" for *_, text in lines))
    before, events = _snapshot(hostile_db), _events(hostile_db)
    result = _replay(cli, path, offline=True)  # Midtrans knows none of these: what the signatures prove
    doc = result.json()
    after = _snapshot(hostile_db)
    wrong = []
    for (field, value, text), item in zip(lines, doc["results"], strict=True):
        target = f"wt-{field}-{values.index(value)}"
        if field in REQUIRED or not _fully_valid(json.loads(text), {target: 10000}):
            if item["applied"] or after[target] != before[target]:
                wrong.append((field, value))
            assert item["error"] and "\n" not in item["error"], item
        else:  # a tolerated optional value (null, empty, an unread field): verified like any valid body;
            # offline, a 200 proves no state, so it awaits confirmation and writes no state
            assert item["verified"] and item["outcome"] == "awaiting" and not item["applied"], item
            if after[target][0] != before[target][0]:
                wrong.append((field, value))
    figures.events = len(lines)
    figures.orders = len(lines)
    figures.lost = len(lines) - (_events(hostile_db) - events)
    figures.wrongly_applied = len(wrong)
    figures.notes = {
        "rejected": doc["summary"]["rejected"],
        "accepted_optional": sorted(
            {f for (f, v, _), i in zip(lines, doc["results"], strict=True) if i["outcome"] == "awaiting"}
        ),
    }
    assert result.exit_code == 1
    assert wrong == [] and figures.lost == 0


def test_hostile_order_ids_and_missing_fields(
    cli: Any, hostile_db: str, tmp_path: Path, figures: Figures, gateway: Any, sandbox: Any
) -> None:
    bodies = [body(order_id, "settlement", "10000.00") for order_id in HOSTILE_IDS]
    for field in (*REQUIRED, "transaction_id", "settlement_time"):  # the last two may be missing
        doc = body("h-2", "settlement", "20000.00")
        del doc[field]
        bodies.append(resign(doc) if field != "signature_key" else doc)
    # Known rows with awkward ids take a valid body like any other.
    awkward = ("a/b#c", "kartu-💳", "\u202eevil-rtl")
    _known(gateway, sandbox, *awkward)  # and confirmed with Midtrans through awkward URLs
    valid = [body(order_id, "settlement", f"{ORDERS[order_id]}.00") for order_id in awkward]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies + valid), encoding="utf-8")
    before, events = _snapshot(hostile_db), _events(hostile_db)
    result = _replay(cli, path)
    doc = result.json()
    after = _snapshot(hostile_db)
    by_line = doc["results"]
    figures.events = len(bodies) + len(valid)
    figures.orders = len(ORDERS)
    figures.lost = figures.events - (_events(hostile_db) - events)
    changed = {k for k in after if after[k] != before[k]}
    figures.wrongly_applied = len(changed - {"a/b#c", "kartu-💳", "\u202eevil-rtl", "h-2"})
    assert result.exit_code == 1
    for item in by_line[: len(HOSTILE_IDS)]:
        assert item["applied"] is False and item["error"].startswith("unknown order"), item
    missing = by_line[len(HOSTILE_IDS) : len(bodies)]
    for field, item in zip(REQUIRED, missing, strict=False):
        assert item["applied"] is False and item["error"], (field, item)
    for item in by_line[len(bodies) :]:
        assert item["applied"] is True, item
    assert {"a/b#c", "kartu-💳", "\u202eevil-rtl"} <= changed
    assert figures.lost == 0 and figures.wrongly_applied == 0


@pytest.mark.parametrize(
    "line",
    [
        pytest.param('{"order_id": "h-1\\u0000", "transaction_status": "settlement"}', id="nul"),
        pytest.param('{"order_id": "h-1", "note": "\\ud800"}', id="surrogate"),
        pytest.param(
            '{"order_id": "h-1", "gross_amount": NaN}',
            id="NaN",
        ),
        pytest.param(
            "\n".join("[" * depth + "]" * depth for depth in range(900, 1001)),
            id="deep-900-to-1000",
        ),
    ],
)
def test_one_unstorable_body_does_not_sink_the_batch(
    cli: Any, hostile_db: str, tmp_path: Path, line: str, gateway: Any, sandbox: Any
) -> None:
    _known(gateway, sandbox, "h-3")
    good = json.dumps(body("h-3", "settlement", "30000.00"))
    hostile = line.count("\n") + 1
    path = tmp_path / "batch.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n")
    events = _events(hostile_db)
    result = cli("replay-webhook", str(path), "--json")
    assert result.exit_code == 1 and result.stderr == "", result
    assert result.json()["summary"] == {
        "total": hostile + 2, "applied": 1, "unchanged": 1, "awaiting": 0, "rejected": hostile,
    }
    assert _events(hostile_db) == events + hostile + 2


@pytest.mark.slow
def test_hostile_files_through_a_real_process(cli_process: Any, hostile_db: str, tmp_path: Path) -> None:
    """The same files through `python -m midpay`: nothing reaches stderr, no traceback."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, data in CLI_CASES.items():
        (folder / name).write_bytes(data)
    result = cli_process("replay-webhook", str(folder), "--json", timeout=300)
    assert result.exit_code == 1, result
    assert result.stderr == "", result
    assert result.json()["summary"]["rejected"] == len(CLI_CASES)
