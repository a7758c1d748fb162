"""Every command's help: a one-sentence summary in the list, and examples that are real invocations."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main

from midpay.cli import app

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _leaves(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        here = (*path, name)
        yield here, command
        if hasattr(command, "commands"):
            yield from _leaves(command, here)


COMMANDS = list(_leaves(typer.main.get_command(app)))


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("charge", "status", "reconcile", "replay-webhook", "listen", "refund", "doctor",
                     "events reprocess", "db stop", "sandbox pay"):
        assert expected in names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_summary_is_one_short_sentence(path: tuple[str, ...], command: Any) -> None:
    summary = command.get_short_help_str(limit=200)
    assert summary.endswith("."), summary
    assert summary[0].isupper(), summary
    assert summary.count(". ") == 0 and len(summary) <= 60, summary


@pytest.mark.parametrize(
    ("path", "command"),
    [(p, c) for p, c in COMMANDS if not hasattr(c, "commands") or p == ("events",)],
    ids=[" ".join(p) for p, c in COMMANDS if not hasattr(c, "commands") or p == ("events",)],
)
def test_help_shows_examples_of_this_very_command(path: tuple[str, ...], command: Any) -> None:
    text = command.help or ""
    assert "Examples:" in text, path
    examples = [line.strip() for line in text.split("Examples:", 1)[1].splitlines() if line.strip().startswith(
        ("midpay", "cat "))]
    assert examples, path
    invocation = "midpay " + " ".join(path)
    assert all(invocation in line for line in examples), examples


def test_the_list_at_80_columns_cuts_no_summary() -> None:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "midpay", "--help"], capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    listing = proc.stdout.split("Commands:", 1)[1]
    assert "..." not in listing and "…" not in listing
    first = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert first[:4] == ["migrate", "charge", "status", "payments"]
