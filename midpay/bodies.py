"""Notification bodies as received: read from files, directories, ``.jsonl`` and stdin, and decoded.

A body that is not usable JSON is still a ``Body`` (with ``parse_error``): it is stored
and rejected like any other, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from midpay.errors import UsageError


@dataclass(frozen=True)
class Body:
    """A notification body as received: its text, or why it could not be read as JSON."""

    source: str
    text: str
    parsed: Any = None
    parse_error: str | None = None


def decode_body(source: str, text: str) -> Body:
    """Parse a body's JSON; failures are kept with a one-line reason naming line and column."""
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        _check_depth(parsed)
    except json.JSONDecodeError as exc:
        return Body(source, text, parse_error=f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except RecursionError:
        return Body(source, text, parse_error="malformed JSON: nested too deeply")
    except ValueError as exc:  # NaN, 1e400, too deep, integers with too many digits
        return Body(source, text, parse_error=f"malformed JSON: {str(exc).splitlines()[0][:120]}")
    # PostgreSQL cannot hold NUL characters or lone surrogates: such a body is kept as
    # (cleaned) text and rejected, rather than failing the insert that stores it. Both
    # can only come from a \u escape or a raw NUL, so most bodies skip the check.
    if "\\u" not in text and "\x00" not in text:
        return Body(source, text, parsed=parsed)
    try:
        dumped = json.dumps(parsed, ensure_ascii=False)
        dumped.encode("utf-8")
    except UnicodeEncodeError:
        return Body(source, clean_text(text), parse_error="malformed JSON: invalid unicode (lone surrogate)")
    except (RecursionError, ValueError):
        return Body(source, text, parse_error="malformed JSON: nested too deeply")
    if "\\u0000" in dumped:
        return Body(source, clean_text(text), parse_error="malformed JSON: contains NUL characters")
    return Body(source, text, parsed=parsed)


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
    cleaned = text.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")
    return cleaned.encode("utf-8", errors="replace").decode("utf-8")




def iter_bodies(paths: Iterable[str], read_stdin: Callable[[], str]) -> Iterator[Body]:
    """Bodies from files, directories (their ``*.json``), ``.jsonl`` files and ``-`` (stdin).

    Unreadable paths are a usage error (exit 2) raised before anything is processed.
    """
    from pathlib import Path

    plan: list[tuple[str, Path | None]] = []
    for raw in paths:
        if raw == "-":
            plan.append(("-", None))
            continue
        path = Path(raw)
        if path.is_dir():
            plan.extend((str(p), p) for p in sorted(path.glob("*.json")))
            plan.extend((str(p), p) for p in sorted(path.glob("*.jsonl")))
        elif path.is_file():
            plan.append((raw, path))
        else:
            raise UsageError(f"cannot read {raw}: no such file or directory")
    for name, source in plan:
        if source is None:
            text = read_stdin()
            yield from _split("-", text, jsonl=None)
            continue
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc.__class__.__name__}") from exc
        text = data.decode("utf-8", errors="replace")
        yield from _split(name, text, jsonl=name.endswith(".jsonl"))


def _split(source: str, text: str, *, jsonl: bool | None) -> Iterator[Body]:
    if jsonl is None:  # stdin: one JSON document, or one per line
        single = decode_body(source, text)
        if single.parse_error is None or "\n" not in text.strip():
            yield single
            return
        jsonl = True
    if not jsonl:
        yield decode_body(source, text)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield decode_body(f"{source}:{number}", line)

