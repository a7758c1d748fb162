"""Notification bodies as received: read from files, directories, ``.jsonl`` and stdin, and decoded.

Everything is read as bytes and decoded body by body, so one undecodable body is
rejected on its own (with the reason) while the others go on. A body that is not
usable JSON is still a ``Body`` (with ``parse_error``): it is stored and rejected like
any other, never dropped. A UTF-8 byte order mark is accepted. ``.jsonl`` files are
split on ``\\n`` only (U+2028, U+0085 and friends are legal inside JSON strings) and
streamed: memory stays flat however long the file. From directories only regular
files are read; a FIFO, device or socket there is refused by name, without opening it.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from midpay.errors import UsageError

BOM = b"\xef\xbb\xbf"
# A body read from something other than a regular file (a FIFO, /dev/stdin, …) can be
# endless: this is where reading it stops. Midtrans' bodies are a few kilobytes.
MAX_STREAMED_BODY = 32 * 1024 * 1024


@dataclass(frozen=True)
class Body:
    """A notification body as received.

    ``raw`` is exactly the bytes received (for a ``.jsonl`` line, the line without its
    ``\\n``), or None for a body rebuilt from storage; ``text`` is their UTF-8 text
    without a byte order mark (undecodable bytes replaced, and ``parse_error`` saying
    so); ``parsed`` the JSON, or ``parse_error`` why there is none.
    """

    source: str
    text: str
    parsed: Any = None
    parse_error: str | None = None
    raw: bytes | None = None

    @property
    def data(self) -> bytes:
        """The bytes received (for a body rebuilt from storage: its text as UTF-8)."""
        return self.raw if self.raw is not None else self.text.encode("utf-8", "surrogatepass")


def decode_body(source: str, data: bytes | str) -> Body:
    """Decode one body: bytes as UTF-8 (a BOM accepted), then JSON; every failure is kept with a one-line reason."""
    if isinstance(data, bytes):
        payload = data[len(BOM):] if data.startswith(BOM) else data
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = exc.start + len(data) - len(payload)
            return Body(
                source, clean_text(payload.decode("utf-8", errors="replace")), raw=data,
                parse_error=f"not UTF-8: byte 0x{payload[exc.start]:02x} at offset {offset}",
            )
        return _decode_json(source, text, data)
    return _decode_json(source, data.removeprefix("\ufeff"), None)


def _decode_json(source: str, text: str, raw: bytes | None) -> Body:
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        _check_depth(parsed)
    except json.JSONDecodeError as exc:
        return Body(source, text, raw=raw,
                    parse_error=f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except RecursionError:
        return Body(source, text, raw=raw, parse_error="malformed JSON: nested too deeply")
    except ValueError as exc:  # NaN, 1e400, too deep, integers with too many digits
        return Body(source, text, raw=raw, parse_error=f"malformed JSON: {str(exc).splitlines()[0][:120]}")
    # PostgreSQL cannot hold NUL characters or lone surrogates: such a body is kept as
    # (cleaned) text and rejected, rather than failing the insert that stores it. Both
    # can only come from a \u escape or a raw NUL, so most bodies skip the check.
    if "\\u" not in text and "\x00" not in text:
        return Body(source, text, parsed=parsed, raw=raw)
    try:
        dumped = json.dumps(parsed, ensure_ascii=False)
        dumped.encode("utf-8")
    except UnicodeEncodeError:
        return Body(source, clean_text(text), raw=raw, parse_error="malformed JSON: invalid unicode (lone surrogate)")
    except (RecursionError, ValueError):
        return Body(source, text, raw=raw, parse_error="malformed JSON: nested too deeply")
    if "\\u0000" in dumped:
        return Body(source, clean_text(text), raw=raw, parse_error="malformed JSON: contains NUL characters")
    return Body(source, text, parsed=parsed, raw=raw)


# Far deeper than any Midtrans body, far shallower than any recursion limit on the way
# into PostgreSQL's jsonb.
MAX_JSON_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def clean_text(text: str) -> str:
    """``text`` with what PostgreSQL cannot hold (NUL, lone surrogates) replaced by U+FFFD."""
    cleaned = text.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")
    return cleaned.encode("utf-8", errors="replace").decode("utf-8")


# --- reading ---------------------------------------------------------------------------

Stdin = BinaryIO | Callable[[], bytes | str]


def iter_bodies(paths: Iterable[str], stdin: Stdin | None = None) -> Iterator[Body]:
    """Bodies from files, directories (their ``*.json``, then ``*.jsonl``), ``.jsonl`` files and ``-`` (stdin).

    Every path is checked before anything is read: a missing or unreadable path, or
    anything in a directory that is not a regular file, is a usage error (exit 2)
    raised by this call. The bodies themselves are read lazily, one at a time.
    ``stdin`` is a binary stream (read line by line) or a function returning it all.
    """
    plan: list[tuple[str, Path | None]] = []
    for raw in paths:
        if raw == "-":
            plan.append(("-", None))
            continue
        info = _stat(raw)
        if stat.S_ISDIR(info.st_mode):
            folder = Path(raw)
            entries = sorted(folder.glob("*.json")) + sorted(folder.glob("*.jsonl"))
            for entry in entries:
                kind = _kind(_stat(str(entry)).st_mode)
                if kind != "regular file":
                    raise UsageError(
                        f"cannot read {entry}: it is a {kind}, not a regular file (only regular files are read "
                        "from a directory; name it on its own to read it)"
                    )
                _require_readable(str(entry))
            plan.extend((str(entry), entry) for entry in entries)
        elif stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
            _require_readable(raw)
            plan.append((raw, Path(raw)))
        else:
            raise UsageError(f"cannot read {raw}: it is a {_kind(info.st_mode)}")
    return _read(plan, stdin)


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)  # follows symlinks: what matters is what would be opened
    except FileNotFoundError:
        raise UsageError(f"cannot read {path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _require_readable(path: str) -> None:
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _read(plan: list[tuple[str, Path | None]], stdin: Stdin | None) -> Iterator[Body]:
    for name, path in plan:
        if path is None:
            yield from _from_stdin(stdin)
            continue
        try:
            # Unbuffered: a whole regular file is one read; anything else is read through a buffer.
            with open(path, "rb", buffering=0) as raw:
                regular = stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
                if regular and not name.endswith(".jsonl"):
                    data = raw.readall()
                else:
                    handle = io.BufferedReader(raw)
                    if name.endswith(".jsonl"):
                        yield from _lines(name, handle, limit=None if regular else MAX_STREAMED_BODY)
                        continue
                    data = _read_capped(name, handle)
            yield decode_body(name, data)
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from exc


def _read_capped(name: str, handle: BinaryIO) -> bytes:
    data = handle.read(MAX_STREAMED_BODY + 1)
    if len(data) > MAX_STREAMED_BODY:
        raise UsageError(f"cannot read {name}: a body larger than {MAX_STREAMED_BODY >> 20} MiB")
    return data


def _lines(name: str, handle: BinaryIO, *, limit: int | None, first: int = 1) -> Iterator[Body]:
    """One body per ``\\n``-terminated line (blank lines skipped), read one line at a time."""
    number = first - 1
    while True:
        line = handle.readline(limit + 1) if limit is not None else handle.readline()
        if not line:
            return
        number += 1
        if limit is not None and len(line) > limit and not line.endswith(b"\n"):
            raise UsageError(f"cannot read {name}: line {number} is longer than {limit >> 20} MiB")
        body = line[:-1] if line.endswith(b"\n") else line
        if body.strip() and body != BOM:
            yield decode_body(f"{name}:{number}", body)


def _from_stdin(stdin: Stdin | None) -> Iterator[Body]:
    """stdin holds one JSON document (possibly over several lines) or one per line.

    When the first line is a JSON document on its own, the rest is read line by line
    (streamed); otherwise the whole input is one document, or, if that is not JSON
    either and it has several lines, one per line.
    """
    if stdin is None:
        return
    if callable(stdin):
        whole = stdin()
        yield from _split_whole(whole.encode("utf-8", "surrogatepass") if isinstance(whole, str) else whole)
        return
    first = stdin.readline(MAX_STREAMED_BODY + 1)
    head = first[:-1]
    if first.endswith(b"\n") and head.strip() and decode_body("-", head).parse_error is None:
        second = stdin.readline(MAX_STREAMED_BODY + 1)
        if not second:
            yield decode_body("-", head)
            return
        yield decode_body("-:1", head)
        if second.strip():
            yield decode_body("-:2", second[:-1] if second.endswith(b"\n") else second)
        yield from _lines("-", stdin, limit=MAX_STREAMED_BODY, first=3)
        return
    rest = stdin.read(MAX_STREAMED_BODY + 1 - len(first))
    if len(first) + len(rest) > MAX_STREAMED_BODY:
        raise UsageError(f"cannot read stdin: more than {MAX_STREAMED_BODY >> 20} MiB that is not one body per line")
    yield from _split_whole(first + rest)


def _split_whole(data: bytes) -> Iterator[Body]:
    single = decode_body("-", data)
    if single.parse_error is None or b"\n" not in data.strip():
        yield single
        return
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip() and line != BOM:
            yield decode_body(f"-:{number}", line)
