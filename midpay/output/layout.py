"""Lists of records that keep every value whole, however narrow the terminal.

A list is a table when it fits the console width. Fixed columns (order ids, amounts,
times, states) never wrap and are never cut; only the columns marked ``fold`` (free
text: error messages, file names) may wrap inside their cell. When the fixed columns
do not fit beside a readable share of the folding ones, every record is printed as a
short block instead: its first value on a line of its own, then ``label value`` pairs
flowed onto indented lines, a pair never split; free-text pairs get a line each. ``wide`` keeps the table whatever the
width (the terminal then wraps long lines itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

FOLD_MIN_WIDTH = 16  # a folding column narrower than this is hard to read
INDENT = "  "
PAIR_GAP = "   "


@dataclass(frozen=True)
class Column:
    """One column: its header, whether it may wrap, how it is aligned."""

    name: str
    fold: bool = False
    justify: Literal["left", "right"] = "left"


def columns(*names: str, folded: Sequence[str] = ()) -> tuple[Column, ...]:
    """Left-aligned columns by header, in order; those named in ``folded`` may wrap."""
    return tuple(Column(name, fold=name in folded) for name in names)


def _table_width(columns: Sequence[Column], rows: Sequence[Sequence[Text]], *, whole: bool = False) -> int:
    """The width a table needs with every fixed column whole (box edges and padding included).

    Folding columns count at their readable minimum, or whole with ``whole``.
    """
    from rich.cells import cell_len

    needed = 3 * len(columns) + 1  # "│ " before each cell, " " after it, the closing "│"
    for i, column in enumerate(columns):
        widest = max([cell_len(column.name), *(cell_len(row[i].plain) for row in rows)])
        needed += min(widest, FOLD_MIN_WIDTH) if column.fold and not whole else widest
    return needed


def records(
    con: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text]],
    *,
    title: str,
    empty: str,
    wide: bool = False,
) -> None:
    """Print ``rows`` as a table when it fits (or ``wide``), else as stacked blocks."""
    from rich.text import Text

    if not rows:
        con.print(Text(empty))
        return
    if wide or _table_width(columns, rows) <= con.width:
        _table(con, columns, rows, title, wide=wide)
    else:
        _stacked(con, columns, rows, title)


def _table(con: Console, columns: Sequence[Column], rows: Sequence[Sequence[Text]], title: str, *, wide: bool) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        if column.fold:
            table.add_column(column.name, overflow="fold", justify=column.justify, min_width=FOLD_MIN_WIDTH)
        else:
            table.add_column(column.name, no_wrap=True, overflow="ignore", justify=column.justify)
    for row in rows:
        table.add_row(*row)
    if wide:
        # Console.print never renders wider than the console: widen it for this table only.
        narrow = con.width
        con.width = max(_table_width(columns, rows, whole=True), narrow)
        try:
            con.print(table, crop=False)
        finally:
            con.width = narrow
    else:
        con.print(table)


def _stacked(con: Console, columns: Sequence[Column], rows: Sequence[Sequence[Text]], title: str) -> None:
    from rich.cells import cell_len
    from rich.text import Text

    con.print(Text(title, style="bold"))
    for row in rows:
        head = row[0].copy()
        head.stylize("bold")
        con.print(head, soft_wrap=True)
        line = Text(INDENT, end="")
        folded: list[Text] = []
        for column, cell in zip(columns[1:], row[1:], strict=True):
            if not cell.plain:
                continue
            pair = Text(column.name + " ", style="dim", end="")
            pair.append_text(cell)
            if column.fold:
                folded.append(pair)
                continue
            started = cell_len(line.plain) > len(INDENT)
            gap = PAIR_GAP if started else ""
            if started and cell_len(line.plain) + len(gap) + cell_len(pair.plain) > con.width:
                con.print(line, soft_wrap=True)
                line, gap = Text(INDENT, end=""), ""
            line.append(gap)
            line.append_text(pair)
        if cell_len(line.plain) > len(INDENT):
            con.print(line, soft_wrap=True)
        for pair in folded:
            # Free text on a line of its own; long ones are wrapped by the terminal, not cut by Rich.
            con.print(Text(INDENT, end="") + pair, soft_wrap=True)
