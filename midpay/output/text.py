"""Data as text, and the small formats every view shares: money, times, states, JSON.

Every value that comes from outside (a notification body, a Midtrans answer, a
database row, a path) reaches the terminal through ``text`` or ``visible``: never as
Rich markup, and never with a character the terminal would act on. Control
characters (C0, DEL, C1: ESC sequences, OSC-8 links, BEL, backspace, carriage
return), format characters (bidi overrides and isolates, zero-width joiners), line
and paragraph separators, lone surrogates and unassigned code points are shown as
escapes (``\\x1b``, ``\\u202e``, ``\\n``), so the value stays one inert line.

Styles are chosen by the code (a column, a known payment state), never by data.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INERT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
_PLAIN_ASCII = re.compile(r"[ -~]*", re.ASCII)
ESCAPE_STYLE = "reverse"

_STATUS_STYLE = {
    "created": "yellow",
    "pending": "yellow",
    "authorize": "yellow",
    "capture": "green",
    "settlement": "bold green",
    "partial_refund": "magenta",
    "refund": "magenta",
    "deny": "red",
    "cancel": "red",
    "expire": "red",
    "failure": "bold red",
}


def _escape_char(ch: str) -> str | None:
    """The visible escape of one character, or None when it may be printed as it is."""
    if unicodedata.category(ch) not in _INERT_CATEGORIES:
        return None
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    point = ord(ch)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def _pieces(value: object, missing: str) -> list[tuple[str, bool]]:
    """``value`` as (chunk, is_escape) pieces; most values are one plain chunk."""
    raw = missing if value is None else value if isinstance(value, str) else str(value)
    if _PLAIN_ASCII.fullmatch(raw):
        return [(raw, False)]
    pieces: list[tuple[str, bool]] = []
    plain: list[str] = []
    for ch in raw:
        escaped = _escape_char(ch)
        if escaped is None:
            plain.append(ch)
            continue
        if plain:
            pieces.append(("".join(plain), False))
            plain = []
        pieces.append((escaped, True))
    if plain:
        pieces.append(("".join(plain), False))
    return pieces


def visible(value: object, missing: str = "-") -> str:
    """``value`` as one line of plain, inert text (for stderr, prompts and plain writes).

    None becomes ``missing``. Markup characters stay as they are: this is for
    writing without Rich; anything printed through Rich takes ``text`` instead.
    """
    return "".join(chunk for chunk, _ in _pieces(value, missing))


def text(value: object, style: str = "", *, missing: str = "-") -> Text:
    """``value`` as a Rich ``Text``: shown literally, never parsed as markup, escapes marked.

    ``style`` is for the caller's own choice (a column's colour): never derive it from data.
    """
    from rich.text import Text

    out = Text(style=style, end="")
    for chunk, escaped in _pieces(value, missing):
        out.append(chunk, style=ESCAPE_STYLE if escaped else None)
    return out


def join(*parts: Text | str) -> Text:
    """Code-chosen plain strings and data ``Text`` in one line (strings are never markup)."""
    from rich.text import Text

    out = Text(end="")
    for part in parts:
        out.append(part if isinstance(part, Text) else Text(part))
    return out


def status_text(status: str | None) -> Text:
    """A payment state, coloured when it is one midpay knows; anything else plain."""
    return text(status, _STATUS_STYLE.get(status or "", ""))


def console(file: IO[str] | None = None) -> Console:
    """A Rich console on stdout (or ``file``); plain when not a terminal; markup off for data."""
    from rich.console import Console

    return Console(file=file or sys.stdout, highlight=False, soft_wrap=False, emoji=False)


# --- money and time --------------------------------------------------------------------


def rupiah(amount: int) -> str:
    """``Rp 154.600``, the Indonesian way."""
    return "Rp " + f"{amount:,}".replace(",", ".")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in Jakarta time (WIB, +07:00, Midtrans' own zone), or None (JSON documents)."""
    return _wib(value).isoformat() if value is not None else None


def when(value: datetime | None, *, zone: bool = False) -> str:
    """A time for people: ``2026-11-26 09:39:00`` in WIB, to the second (``-`` when absent)."""
    if value is None:
        return "-"
    shown = _wib(value).strftime("%Y-%m-%d %H:%M:%S")
    return shown + " WIB" if zone else shown


def _wib(value: datetime) -> datetime:
    from midpay.midtrans.notifications import JAKARTA

    return value.astimezone(JAKARTA) if value.tzinfo is not None else value


# --- JSON ------------------------------------------------------------------------------


# json.dumps escapes C0 controls itself; these are the other characters a terminal may
# act on or that reorder what it shows (DEL and C1, bidi and invisible format
# characters, separators, lone surrogates). They can only occur inside JSON strings,
# where a \uXXXX escape means the same character to any JSON reader.
_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f]"
)


def _json_escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    if point < 0x10000:
        return f"\\u{point:04x}"
    high, low = divmod(point - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def json_text(document: Any, *, compact: bool = False) -> str:
    """``document`` as JSON text that no terminal acts on (see ``_JSON_UNSAFE``)."""
    indent = None if compact else 2
    raw = json.dumps(document, ensure_ascii=False, indent=indent, default=_json_default)
    return _JSON_UNSAFE.sub(_json_escape, raw)


def write_json(document: Any, file: IO[str] | None = None, *, compact: bool = False) -> None:
    """Exactly one JSON document on stdout; ``compact`` for large ones (indenting is slow)."""
    out = file or sys.stdout
    out.write(json_text(document, compact=compact))
    out.write("\n")
    out.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
