"""Sizes a reader can hold in mind: no module in ``midpay/`` over 400 lines, no function over 60.

A function's length is its body's, from the first statement (its docstring, if any) to
the last line: the signature does not count, so a Typer command's option declarations
do not either. Decorators do not count. Nested functions are measured on their own, and
also count in the function that holds them.

``ALLOWED`` lists the offenders of the day that are being split elsewhere; it is exact:
the test fails on an offender that is not listed and on a listed one that no longer
offends (take it off the list then), so the list only ever shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "midpay"
MODULE_MAX = 400
FUNCTION_MAX = 60

# "path relative to midpay/" for a module, "path:function" for a function.
ALLOWED: frozenset[str] = frozenset()


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    end = node.end_lineno if node.end_lineno is not None else node.body[-1].lineno
    return end - node.body[0].lineno + 1


def offenders(package: Path = PACKAGE) -> dict[str, int]:
    """Every module and function over its limit, with its length."""
    found: dict[str, int] = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MODULE_MAX:
            found[name] = lines
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = _body_lines(node)
                if length > FUNCTION_MAX:
                    found[f"{name}:{node.name}"] = length
    return found


def test_no_new_module_or_function_over_the_limits() -> None:
    found = offenders()
    new = {name: length for name, length in found.items() if name not in ALLOWED}
    assert not new, f"over {MODULE_MAX} lines (module) or {FUNCTION_MAX} lines (function body): {new}"


def test_the_allowed_offenders_still_offend() -> None:
    found = offenders()
    fixed = sorted(ALLOWED - set(found))
    assert not fixed, f"no longer over the limits, take them off ALLOWED in tests/test_sizes.py: {fixed}"


def test_the_measure(tmp_path: Path) -> None:
    """The signature is not counted, the docstring and the body are; a long module is found."""
    options = "".join(f"    option_{i}: int = 0,\n" for i in range(80))
    body = "".join(f"    x = {i}\n" for i in range(59))
    (tmp_path / "ok.py").write_text(f'def ok(\n{options}) -> None:\n    """Doc."""\n{body}')
    (tmp_path / "long.py").write_text(f"def long() -> None:\n{body}    x = 59\n    x = 60\n")
    (tmp_path / "big.py").write_text("x = 1\n" * (MODULE_MAX + 1))
    assert offenders(tmp_path) == {"long.py:long": FUNCTION_MAX + 1, "big.py": MODULE_MAX + 1}
