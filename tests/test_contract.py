"""docs/CONTRACT.md against the code: its table of commands and options, and its table of errors.

The command table is compared with the Typer app as click sees it, both ways: every
command, option and argument of the code is in the contract, every row of the contract
is in the code, with the same kind of value, default and range. The error table must
list every class of ``midpay/errors.py`` with its exit code, and every code it uses must
be in the table of exit codes.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from midpay import errors
from midpay.cli import app

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "CONTRACT.md"
NONE = "—"


def _table(heading: str, first_column: str) -> list[list[str]]:
    """The body rows of the first table under ``heading`` whose header starts with ``first_column``."""
    text = CONTRACT.read_text(encoding="utf-8")
    start = text.index(heading)
    lines = text[start:].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    assert re.fullmatch(r"\|(---\|)+", lines[header + 1]), f"no separator under the {first_column!r} header"
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    assert rows, f"the {first_column!r} table under {heading!r} is empty"
    return rows


def _code(cell: str) -> str:
    """The text of a cell written as one `code` span (the table's strict format)."""
    found = re.fullmatch(r"`([^`]+)`", cell)
    assert found is not None, f"expected one `code` span, not {cell!r}"
    return found.group(1)


# --- the commands and their options ---------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One option or argument, as the contract writes it."""

    names: str  # "-y, --yes", "--json", "ORDER_ID"
    takes: str  # flag, text, int, number, path; "text..." for one or more
    default: str  # "—", "required", or a `literal`
    range: str  # "—", "a..b", "a.."


def _contract_commands() -> dict[str, dict[str, Param]]:
    found: dict[str, dict[str, Param]] = {}
    for cells in _table("### Every command, option and argument", "command"):
        assert len(cells) == 5, f"a row of the command table has {len(cells)} cells: {cells}"
        command = _code(cells[0])
        params = found.setdefault(command, {})
        if cells[1] == NONE:
            assert cells[2:] == [NONE] * 3, f"{command}: a row without an option has nothing else"
            continue
        names = _code(cells[1])
        assert names not in params, f"{command} {names} is listed twice"
        default = cells[3] if cells[3] in (NONE, "required") else _code(cells[3])
        params[names] = Param(names, cells[2], default, cells[4])
    return found


def _walk(command: Any, path: str) -> dict[str, Any]:
    """Every command of the click tree, by its full path (``midpay events reprocess``)."""
    found = {path: command}
    for name, sub in getattr(command, "commands", {}).items():
        found.update(_walk(sub, f"{path} {name}"))
    return found


def _code_commands() -> dict[str, Any]:
    return _walk(typer.main.get_command(app), "midpay")


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return str(param.name).upper()
    shorts = sorted(o for o in param.opts + param.secondary_opts if not o.startswith("--"))
    longs = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
    return ", ".join(shorts + longs)


def _takes(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    kind = type(param.type).__name__
    takes = {
        "StringParamType": "text", "IntParamType": "int", "IntRange": "int",
        "FloatParamType": "number", "FloatRange": "number", "TyperPath": "path", "Path": "path",
    }.get(kind, kind)
    return takes + ("..." if param.nargs == -1 else "")


def _number(text: str) -> float:
    return float(text)


def _check_default(where: str, param: Any, written: str) -> None:
    if written == "required":
        assert param.required, f"{where}: the contract says required, the code does not"
        return
    assert not param.required, f"{where}: the code requires it, the contract gives no `required`"
    default = param.default
    if written == NONE:
        assert default in (None, False), f"{where}: the code's default is {default!r}, the contract gives none"
    elif isinstance(default, bool) or default is None:
        pytest.fail(f"{where}: the contract's default is {written!r}, the code has {default!r}")
    elif isinstance(default, int | float):
        assert math.isclose(_number(written), default), f"{where}: default {written!r} here, {default!r} in the code"
    else:
        assert written == str(default), f"{where}: default {written!r} here, {default!r} in the code"


def _check_range(where: str, param: Any, written: str) -> None:
    low, high = getattr(param.type, "min", None), getattr(param.type, "max", None)
    if written == NONE:
        assert low is None and high is None, f"{where}: the code bounds it ({low}..{high}), the contract does not"
        return
    found = re.fullmatch(r"(-?[0-9.]+)\.\.(-?[0-9.]*)", written)
    assert found is not None, f"{where}: a range is written a..b or a.., not {written!r}"
    assert low is not None and math.isclose(_number(found.group(1)), low), f"{where}: lower bound {low} in the code"
    if found.group(2):
        assert high is not None and math.isclose(_number(found.group(2)), high), f"{where}: upper bound {high}"
    else:
        assert high is None, f"{where}: the code has an upper bound, {high}"


def test_every_command_of_the_code_is_in_the_contract_and_back() -> None:
    written, code = _contract_commands(), _code_commands()
    assert sorted(set(code) - set(written)) == [], "commands of the code missing from docs/CONTRACT.md"
    assert sorted(set(written) - set(code)) == [], "commands of docs/CONTRACT.md that the code does not have"


def test_every_option_and_argument_matches_both_ways() -> None:
    written, code = _contract_commands(), _code_commands()
    for path, command in code.items():
        params = {_names(p): p for p in command.params}
        listed = written.get(path, {})
        assert sorted(set(params) - set(listed)) == [], f"{path}: options of the code missing from the contract"
        assert sorted(set(listed) - set(params)) == [], f"{path}: options of the contract the code does not have"
        for names, param in params.items():
            where = f"{path} {names}"
            row = listed[names]
            assert row.takes == _takes(param), f"{where}: takes {row.takes!r} here, {_takes(param)!r} in the code"
            _check_default(where, param, row.default)
            _check_range(where, param, row.range)


# --- errors and exit codes ------------------------------------------------------------


def _error_classes() -> dict[str, type[errors.MidpayError]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.MidpayError) and cls.__module__ == errors.__name__
    }


def test_every_error_class_is_listed_with_its_exit_code() -> None:
    rows = _table("## Exit codes", "error")
    listed: dict[str, int] = {}
    for cells in rows:
        assert len(cells) == 3, f"a row of the error table has {len(cells)} cells: {cells}"
        name = _code(cells[0])
        assert name not in listed, f"{name} is listed twice"
        listed[name] = int(cells[1])
    classes = _error_classes()
    assert sorted(set(classes) - set(listed)) == [], "classes of midpay/errors.py missing from the contract"
    assert sorted(set(listed) - set(classes)) == [], "errors in the contract that midpay/errors.py does not have"
    for name, cls in classes.items():
        assert listed[name] == cls.exit_code, f"{name}: exit {listed[name]} in the contract, {cls.exit_code} in code"


def test_every_exit_code_of_an_error_is_explained() -> None:
    codes = {int(cells[0]) for cells in _table("## Exit codes", "code")}
    assert {0, 1, 2, 3} <= codes
    used = {cls.exit_code for cls in _error_classes().values()}
    assert sorted(used - codes) == [], "exit codes of midpay/errors.py missing from the table of exit codes"
