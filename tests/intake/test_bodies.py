"""Notification input that is legal but unusual: bytes decoded per body, .jsonl on \\n only, a BOM, special files.

Each case goes through ``replay-webhook`` (the stored events are the proof: nothing is
lost), plus ``bodies`` directly for the exact bytes a Body keeps.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay.intake import bodies
from tests.conftest import REPO


def _events(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT source, outcome, processing_error FROM payment_webhook_events ORDER BY received_at, id"
        ).fetchall()


def _paid_body(cli: Any, sandbox: Any, amount: int) -> dict[str, Any]:
    order_id = cli("charge", "--amount", str(amount), "--json").json()["order_id"]
    body: dict[str, Any] = sandbox.pay(order_id, "settlement")
    return body


def test_one_undecodable_body_on_stdin_is_rejected_alone(cli: Any, db_url: str, sandbox: Any) -> None:
    first, last = _paid_body(cli, sandbox, 10000), _paid_body(cli, sandbox, 11000)
    data = json.dumps(first).encode() + b"\n" + b'{"order_id": "caf\xe9"}' + b"\n" + json.dumps(last).encode() + b"\n"
    result = cli("replay-webhook", "-", "--json", input=data)  # type: ignore[arg-type]
    assert result.exit_code == 1, result
    doc = result.json()
    assert [(r["source"], r["applied"], r["error"]) for r in doc["results"]] == [
        ("-:1", True, None),
        ("-:2", False, "not UTF-8: byte 0xe9 at offset 17"),
        ("-:3", True, None),
    ]
    assert {k: doc["summary"][k] for k in ("total", "applied", "rejected")} == {"total": 3, "applied": 2, "rejected": 1}
    assert [(s, o) for s, o, _ in _events(db_url)] == [("-:1", "applied"), ("-:2", "rejected"), ("-:3", "applied")]


def test_jsonl_splits_on_newline_only(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    body = _paid_body(cli, sandbox, 12000)
    # Unsigned text fields may hold any character, line and paragraph separators included.
    body["status_message"] = "paid\u2028in full\u0085thanks\u2029\x0b\x0c\x1c"
    path = tmp_path / "odd.jsonl"
    path.write_bytes(json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\r\n\n")
    result = cli("replay-webhook", str(path), "--json")
    assert result.exit_code == 0, result
    (only,) = result.json()["results"]
    assert only["source"] == f"{path}:1" and only["applied"] is True


def test_a_byte_order_mark_is_accepted(cli: Any, db_url: str, sandbox: Any, tmp_path: Path) -> None:
    one, two = _paid_body(cli, sandbox, 13000), _paid_body(cli, sandbox, 14000)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(one).encode())
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(two).encode() + b"\n")
    result = cli("replay-webhook", str(tmp_path / "bom.json"), str(tmp_path / "bom.jsonl"), "--json")
    assert result.exit_code == 0, result
    summary = result.json()["summary"]
    assert (summary["total"], summary["applied"], summary["rejected"]) == (2, 2, 0)


def _replay_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midpay", "replay-webhook", *args], capture_output=True, text=True, timeout=30,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_a_special_file_in_a_directory_is_refused_by_name_without_hanging(
    env: dict[str, str], db_url: str, tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    odd = folder / "b.json"
    holder, short = None, None
    if kind == "fifo":
        os.mkfifo(odd)
        described = "FIFO (named pipe)"
    elif kind == "device":
        odd.symlink_to("/dev/zero")
        described = "character device"
    else:
        short = Path("/tmp") / f"mp-{os.getpid()}-{kind}.json"  # a socket path must be short
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(short))
        odd.symlink_to(short)
        described = "socket"
    try:
        proc = _replay_process(env, str(folder), "--json")  # a hang would time out here
    finally:
        if holder is not None and short is not None:
            holder.close()
            short.unlink()
    assert proc.returncode == 2, proc
    assert proc.stderr.splitlines() == [
        f"Error: cannot read {odd}: it is a {described}, not a regular file (only regular files are read from a "
        "directory; name it on its own to read it)"
    ]
    assert json.loads(proc.stdout) == {"error": proc.stderr.strip().removeprefix("Error: "), "exit_code": 2}
    assert _events(db_url) == []  # refused before anything was read


def test_a_named_fifo_is_read(env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "midpay", "replay-webhook", str(fifo), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
    )
    with fifo.open("wb") as writer:
        writer.write(b'{"not": "signed"}\n{"neither": true}\n')
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert json.loads(out)["summary"]["total"] == 2


# --- Body keeps what was received ---------------------------------------------------------


def test_a_body_keeps_the_exact_bytes_received(tmp_path: Path) -> None:
    line = '{"order_id": "x", "status_message": "a\u2028b"}'.encode()
    (tmp_path / "x.jsonl").write_bytes(b"\xef\xbb\xbf" + line + b"\r\n" + b"\xff\xfe\n" + b"   \n" + line)
    got = list(bodies.iter_bodies([str(tmp_path / "x.jsonl")]))
    assert [b.source for b in got] == [f"{tmp_path / 'x.jsonl'}:{n}" for n in (1, 2, 4)]
    assert got[0].raw == b"\xef\xbb\xbf" + line + b"\r" and got[0].parsed["status_message"] == "a\u2028b"
    assert got[1].raw == b"\xff\xfe" and got[1].parse_error == "not UTF-8: byte 0xff at offset 0"
    assert got[1].text == "\ufffd\ufffd"
    assert got[2].raw == line and got[2].data == line
    rebuilt = bodies.Body("event:1", '{"a": 1}', parsed={"a": 1})
    assert rebuilt.raw is None and rebuilt.data == b'{"a": 1}'


def test_stdin_one_document_over_several_lines_or_one_per_line() -> None:
    pretty = b'{\n  "order_id": "x"\n}\n'
    (single,) = bodies.iter_bodies(["-"], io.BytesIO(pretty))
    assert single.source == "-" and single.parsed == {"order_id": "x"} and single.raw == pretty
    (alone,) = bodies.iter_bodies(["-"], io.BytesIO(b'{"a": 1}\n'))
    assert alone.source == "-" and alone.raw == b'{"a": 1}'
    many = list(bodies.iter_bodies(["-"], io.BytesIO(b'{"a": 1}\n\n{"b": 2}\nnot json\n')))
    assert [(b.source, b.parse_error is None) for b in many] == [("-:1", True), ("-:3", True), ("-:4", False)]
    garbage_first = list(bodies.iter_bodies(["-"], io.BytesIO(b'garbage\n{"b": 2}\n')))
    assert [(b.source, b.parse_error is None) for b in garbage_first] == [("-:1", False), ("-:2", True)]


def test_a_missing_or_unreadable_path_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    from midpay.errors import UsageError

    (tmp_path / "ok.json").write_text("{}")
    with pytest.raises(UsageError, match=r"cannot read .*nope\.json: no such file or directory"):
        bodies.iter_bodies([str(tmp_path / "ok.json"), str(tmp_path / "nope.json")])
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user that reads anything (root)")
        with pytest.raises(UsageError, match="permission denied"):
            bodies.iter_bodies([str(locked)])
    finally:
        locked.chmod(0o644)
