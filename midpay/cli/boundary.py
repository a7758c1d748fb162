"""The one error boundary: how every command ends, on stderr, in the exit code and, with --json, on stdout.

``RootGroup`` is the Typer app's root command. Its ``invoke`` runs every command inside
``_boundary``: a midpay error (or anything else raised) becomes one ``Error: …`` line
on stderr, secrets redacted, and the exit code its class carries (errors.py). Its
``main`` does the same for click's own usage errors (exit 2) and aborts (exit 1).

With --json, stdout gets exactly one document, written here, once, when the command
ends: the command hands its document over (``document``) instead of printing it, and
a failure adds ``"error"`` and ``"exit_code"`` to it; a failure before the command had
a document (no database, a missing variable, unmigrated tables, a usage error) is the
whole document, on one line: ``{"error": "…", "exit_code": N}``. The ``Error: …``
line goes to stderr under --json too.
"""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from midpay.cli.state import secrets
from midpay.errors import MidpayError


@dataclass
class _Run:
    """One invocation's ending, as far as it is known."""

    argv: list[str] = field(default_factory=list)
    json: bool = False
    document: "dict[str, Any] | JsonSpool | None" = None
    compact: bool = False
    reason: str | None = None


_run = _Run()


def want_json(value: bool) -> bool:
    """The --json options' callback: the boundary owes this invocation one document."""
    _run.json = _run.json or value
    return value


def document(doc: "dict[str, Any] | JsonSpool", *, compact: bool = False) -> None:
    """The command's --json document, written when the command ends (with its error, if it fails after this)."""
    _run.document = doc
    _run.compact = compact


def stop(code: int, reason: str) -> NoReturn:
    """End with ``code`` for a reason the person was already told on stderr; --json's document carries ``reason``."""
    _run.reason = reason
    raise typer.Exit(code)


def describe(exc: BaseException) -> tuple[str, int]:
    """The one line (secrets redacted) and the exit code ``exc`` ends a command with."""
    from midpay.config import redact

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    error = exc if isinstance(exc, MidpayError) else _map_foreign(exc)
    if error is None:
        error = MidpayError(f"unexpected {exc.__class__.__name__}: {exc}")
    raw = str(error).strip()
    return redact(raw.split("\n", 1)[0] if raw else error.__class__.__name__, secrets()), error.exit_code


def _map_foreign(exc: BaseException) -> MidpayError | None:
    if "psycopg" in sys.modules or "psycopg_pool" in sys.modules:
        from midpay.db import map_error

        return map_error(exc)
    return None


def _write(failure: dict[str, Any]) -> None:
    """The one document: the command's (with ``failure`` added), or ``failure`` alone under --json."""
    doc, _run.document = _run.document, None
    if doc is None and not (_run.json and failure):
        return  # nothing to write (and `--help` stays light: no output module)
    from midpay.output import write_json

    try:
        if isinstance(doc, JsonSpool):
            doc.close(failure)
        elif doc is not None:
            write_json({**doc, **failure}, compact=_run.compact)
        else:
            write_json(failure, compact=True)  # one line: `reconcile --json >> file.jsonl` stays JSON lines
    except BrokenPipeError:
        pass


def _report(line: str, code: int) -> None:
    """The failure, in the document and as the one ``Error: …`` line (control characters shown as escapes)."""
    from midpay.output import visible

    _write({"error": line, "exit_code": code})
    sys.stderr.write(f"Error: {visible(line)}\n")


def _is_click_error(exc: BaseException) -> bool:
    # Click's exceptions, by their shape: typer vendors click from 0.28 on.
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


@contextmanager
def _boundary() -> Iterator[None]:
    try:
        yield
    except typer.Exit as exc:
        code = exc.exit_code
        if code and _run.document is None:  # a declined prompt, say: nothing else would be on stdout
            _write({"error": _run.reason or f"exited with status {code}", "exit_code": code})
        else:  # success, or an ending the document itself describes (rows that failed, a failed check)
            _write({})
        raise
    except typer.Abort:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # the last line of defence: no traceback, no secret
        if _is_click_error(exc):
            raise  # a subcommand's usage error, raised while parsing: RootGroup.main words it
        line, code = describe(exc)
        _report(line, code)
        raise typer.Exit(code) from None
    else:
        _write({})


class RootGroup(TyperGroup):
    """The root command: every command runs inside the boundary; click's usage errors are one line too (exit 2).

    Click would print the usage block and a hint around a usage error; a cron log or a
    script reading stderr wants the one line CONTRACT.md promises.
    """

    def invoke(self, ctx: Any) -> Any:
        with _boundary():
            return super().invoke(ctx)

    def main(
        self, args: "Sequence[str] | None" = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, windows_expand_args: bool = True, **kwargs: Any,
    ) -> Any:
        kwargs["windows_expand_args"] = windows_expand_args
        global _run
        _run = _Run(argv=list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        except typer.Abort:
            self._usage_failure("aborted", 1)
        except Exception as exc:
            if not _is_click_error(exc):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `midpay` alone: the help, as click shows it
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            path = getattr(getattr(exc, "ctx", None), "command_path", None)
            where = f" (see `{path} --help`)" if path else ""
            self._usage_failure(f"{' '.join(exc.format_message().split())}{where}", exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(code if isinstance(code, int) else 0)

    @staticmethod
    def _usage_failure(line: str, code: int) -> NoReturn:
        # Raised while parsing, maybe before --json was read: the word on the command line decides.
        argv = _run.argv[: _run.argv.index("--")] if "--" in _run.argv else _run.argv
        _run.json = _run.json or "--json" in argv
        _report(line, code)
        sys.exit(code)


class JsonSpool:
    """A ``{"results": [...], "summary": {...}}`` document, gathered in a temporary file (memory stays flat)
    and written to stdout as one line when the command ends, with ``"error"`` and ``"exit_code"`` when
    the run was cut short. ``summary`` may be updated (or replaced) until then.

    Nothing reaches stdout before the run ends, so a run killed outright leaves no half
    document in a log it appends to; every other ending writes a complete one.
    """

    def __init__(self, summary: dict[str, int]) -> None:
        import tempfile

        self.summary = summary
        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 22, mode="w+", encoding="utf-8")
        self._closed = False

    def add(self, item: dict[str, Any]) -> None:
        from midpay.output import json_text

        self._file.write(json_text(item, compact=True) + "\n")  # one item a line here; JSON text has no newline

    def close(self, failure: dict[str, Any]) -> None:
        from midpay.output import json_text

        if self._closed:
            return
        self._closed = True
        tail: dict[str, Any] = {"summary": self.summary, **failure}
        out = sys.stdout
        try:
            out.write('{"results": [')
            self._file.seek(0)
            pending = 0
            for n, line in enumerate(self._file):
                out.write(("," if n else "") + line.rstrip("\n"))
                pending += len(line)
                if pending >= 1 << 16:
                    # stdout redacts line by line and holds a partial line until a flush: flushing at item
                    # boundaries keeps a long one-line document from piling up there whole.
                    out.flush()
                    pending = 0
            out.write("], " + json_text(tail, compact=True)[1:] + "\n")
            out.flush()
        except BrokenPipeError:
            pass
        finally:
            self._file.close()
