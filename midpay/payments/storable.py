"""Whether a value fits the column that will hold it, decided before anything is written.

A Midtrans answer (or a command-line value) that PostgreSQL would refuse must fail
the one row it concerns, with a reason an operator can read, never the statement or
the run. The facts come from ``db.schema`` (the real column lengths and types of this
database), not from midpay's own migrations: another backend may have created the
tables with shorter columns.
"""

from __future__ import annotations

import math
from typing import Any

from midpay.db.schema import Layout
from midpay.errors import InvalidPayload
from midpay.midtrans.notifications import TransactionView

# Far deeper than any Midtrans answer, far shallower than any recursion limit on the
# way into PostgreSQL's jsonb (the same bound notification bodies get).
MAX_JSON_DEPTH = 64

INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot hold ``text`` in any text column or jsonb string, if it cannot."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid unicode (a lone surrogate)"
    return None


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as jsonb, if it cannot (checked iteratively: no recursion)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return f"{where or 'the value'} {problem}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where or 'the value'} is a non-finite number ({item})"
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"it is nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    name = f"field {str(key)[:40]!r}"
                    problem = text_problem(str(key))
                    if problem is not None:
                        return f"a field name {problem}"
                    stack.append((child, depth + 1, name))
            else:
                stack.extend((child, depth + 1, where) for child in item)
    return None


def column_problem(layout: Layout, table: str, column: str, value: object) -> str | None:
    """Why ``value`` does not fit ``table.column`` of this database, if it does not."""
    found = layout.column(table, column)
    if value is None:
        if found is not None and not found.nullable and not found.has_default:
            return f"{column} is required by the database but missing"
        return None
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            return f"{column} {problem}"
        if found is not None and found.max_length is not None and len(value) > found.max_length:
            return f"{column} is {len(value)} characters long, the column holds {found.max_length}"
        return None
    if isinstance(value, int) and not isinstance(value, bool) and found is not None:
        bounds = INTEGER_RANGES.get(found.data_type)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            return f"{column} {value} does not fit the column ({found.data_type})"
    return None


def check_view(layout: Layout, view: TransactionView, *, what: str) -> None:
    """Refuse (InvalidPayload, naming the field) an answer whose values cannot be written to its payment."""
    problem = (
        column_problem(layout, "payment_transactions", "status", view.transaction_status)
        or column_problem(layout, "payment_transactions", "midtrans_transaction_id", view.transaction_id)
        or json_problem(view.raw)
    )
    if problem is not None:
        raise InvalidPayload(f"{what} cannot be stored: {problem}")
