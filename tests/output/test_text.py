"""Data is text: the one helper every printed value goes through."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from midpay import output

HOSTILE = [
    "[/red]",
    "shop[/]42",
    "[link=http://evil.example/login]Session expired, log in again[/link]",
    "\x1b[2J\x1b[H",
    "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\x1b]0;new title\x07",
    "\x9b31m",  # C1 CSI
    "\x9d8;;http://evil.example\x9c",  # C1 OSC and ST
    "abc\u202edcba",  # right-to-left override
    "a\u2066b\u2069c",  # isolates
    "line1\nline2\rover\bx\x7f",
    "zero\u200bwidth\u2028sep",
    "lone \ud800 surrogate",
]


def _render(value: object, *, terminal: bool) -> str:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=terminal, width=200, color_system="truecolor" if terminal else None)
    con.print(output.text(value))
    return buf.getvalue()


def _acted_on(out: str) -> list[str]:
    """Characters of ``out`` a terminal would act on, apart from Rich's own SGR colour codes."""
    import re
    import unicodedata

    without_sgr = re.sub(r"\x1b\[[0-9;]*m", "", out)
    return [ch for ch in without_sgr if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("terminal", [False, True])
def test_hostile_values_render_inert(value: str, terminal: bool) -> None:
    out = _render(value, terminal=terminal)
    assert _acted_on(out) == []
    assert "\x1b]" not in out  # no OSC (hyperlinks, titles) from Rich either
    assert out.count("\n") == 1  # one line, whatever the value held


def test_markup_is_shown_literally() -> None:
    for value in ("[/red]", "shop[/]42", "[bold]x[/bold]", "[link=http://evil.example/login]go[/link]"):
        assert _render(value, terminal=False) == value + "\n"


def test_escapes_are_visible_and_named() -> None:
    assert output.visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert output.visible("x\ny\tz\r") == "x\\ny\\tz\\r"
    assert output.visible("\x9b") == "\\x9b"
    assert output.visible("rtl\u202e") == "rtl\\u202e"
    assert output.visible("\x7f") == "\\x7f"


def test_ordinary_text_is_unchanged() -> None:
    for value in ("mp-20261126023853-4e96a13aae", "Rp 154.600", "Jl. Sudirman Kav. 52–53, Jakarta", "日本語", "é"):
        assert output.visible(value) == value
        assert output.text(value).plain == value


def test_missing_and_non_strings() -> None:
    assert output.visible(None) == "-"
    assert output.visible(None, missing="") == ""
    assert output.visible(154600) == "154600"
    assert output.text(None).plain == "-"


def test_escapes_are_marked_on_a_terminal() -> None:
    rendered = output.text("a\x1bb")
    assert rendered.plain == "a\\x1bb"
    assert [(s.start, s.end, str(s.style)) for s in rendered.spans] == [(1, 5, output.ESCAPE_STYLE)]


def test_table_cells_of_hostile_text_render() -> None:
    table = Table()
    table.add_column("value")
    for value in HOSTILE:
        table.add_row(output.text(value))
    buf = io.StringIO()
    Console(file=buf, width=300, force_terminal=True).print(table)
    out = buf.getvalue()
    assert _acted_on(out) == []
    assert "shop[/]42" in out and "[/red]" in out
