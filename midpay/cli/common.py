"""What every command shares: the Typer app, the one error boundary, settings, connections.

This is the one place where a midpay error becomes ``Error: …`` on stderr and an
exit code (CONTRACT.md). Heavy modules (psycopg, requests, rich) are imported inside
the commands, so ``midpay --help`` stays fast. No ``from __future__ import annotations``
in the cli package: Typer would have to evaluate every option's annotation string at
start-up.
"""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from midpay import __version__
from midpay.errors import MidpayError

if TYPE_CHECKING:
    from midpay.config import Settings
    from midpay.db import Connection
    from midpay.midtrans.gateway import Gateway

class _OneLineErrors(TyperGroup):
    """The root command, with click's usage errors as one ``Error: …`` line (exit 2), like every other error.

    Click would print the usage block and a hint around the message; a cron log or a
    script reading stderr wants the one line CONTRACT.md promises.
    """

    def main(
        self, args: "Sequence[str] | None" = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, windows_expand_args: bool = True, **kwargs: Any,
    ) -> Any:
        kwargs["windows_expand_args"] = windows_expand_args
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        # Click's exceptions, by their shape: typer vendors click from 0.28 on.
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        except typer.Abort:
            sys.stderr.write("Error: aborted\n")
            sys.exit(1)
        except Exception as exc:
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `midpay` alone: the help, as click shows it
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            path = getattr(getattr(exc, "ctx", None), "command_path", None)
            where = f" (see `{path} --help`)" if path else ""
            sys.stderr.write(f"Error: {' '.join(exc.format_message().split())}{where}\n")  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="midpay",
    help="GoPay and QRIS payment operations over Midtrans and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """What the top-level options leave for the commands."""

    env_file: Path | None = None
    settings: "Settings | None" = None
    schema_checked: bool = False
    url: str | None = None


state = State()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"midpay {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Read configuration from this file instead of ./.env.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """GoPay and QRIS payment operations over Midtrans and PostgreSQL."""
    state.env_file = env_file
    state.settings = None
    state.schema_checked = False
    state.url = None
    _redact_streams()


def _redact_streams() -> None:
    """The last line of defence: whatever reaches stdout or stderr is redacted (redaction.py)."""
    from midpay.config.redaction import RedactingStream

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout, secrets)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr, secrets)  # type: ignore[assignment]


# --- the one error boundary ------------------------------------------------------------


def secrets() -> list[str]:
    """What must never be printed: the server key and the database password, once settings are read.

    Computed once per settings (stdout asks at every write: a reconcile run's document is thousands).
    """
    settings = state.settings
    if settings is None:
        return []
    cached = _secrets_cache.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, settings.secrets())
        _secrets_cache.clear()
        _secrets_cache[id(settings)] = cached
    return cached[1]


_secrets_cache: dict[int, tuple["Settings", list[str]]] = {}


def fail(exc: MidpayError) -> NoReturn:
    """Print ``Error: …`` (secrets redacted) and exit with the error's code."""
    from midpay.config import redact
    from midpay.output import visible

    raw = str(exc).strip()
    # The first line only (errors are one line); anything a terminal would act on, shown as an escape.
    message = visible(redact(raw.split("\n", 1)[0] if raw else exc.__class__.__name__, secrets()))
    sys.stderr.write(f"Error: {message}\n")
    raise typer.Exit(exc.exit_code)


def error_line(exc: BaseException) -> str:
    """The one line ``errors_to_exit`` would print for ``exc`` (secrets redacted), for a document's "error"."""
    from midpay.config import redact

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    mapped = exc if isinstance(exc, MidpayError) else _map_foreign(exc)
    if mapped is None:
        mapped = MidpayError(f"unexpected {exc.__class__.__name__}: {exc}")
    text = str(mapped).strip()
    return redact(text.splitlines()[0] if text else mapped.__class__.__name__, secrets())


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn any failure inside a command into one line on stderr and the contract's exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except MidpayError as exc:
        fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback, no secret
        mapped = _map_foreign(exc)
        if mapped is not None:
            fail(mapped)
        fail(MidpayError(f"unexpected {exc.__class__.__name__}: {exc}"))


def _map_foreign(exc: BaseException) -> MidpayError | None:
    if "psycopg" in sys.modules or "psycopg_pool" in sys.modules:
        from midpay.db import map_error

        return map_error(exc)
    return None


def settings() -> "Settings":
    """Settings, resolved once per process."""
    if state.settings is None:
        from midpay.config import load_settings

        state.settings = load_settings(state.env_file)
    return state.settings


def _announce(line: str) -> None:
    from midpay.output import visible

    sys.stderr.write(visible(line) + "\n")


def _resolved_url() -> str:
    """The PostgreSQL URL, resolved once per process (``embedded`` starts its server here)."""
    if state.url is None:
        from midpay.db import resolve_url

        state.url = resolve_url(settings(), announce=_announce)
    return state.url


def database_url(*, check_schema: bool = True) -> str:
    """DATABASE_URL, resolved; unless told otherwise, of a server that answers with its migrations all applied."""
    url = _resolved_url()
    if check_schema and not state.schema_checked:
        open_connection().close()
    return url


def open_connection(*, check_schema: bool = True) -> "Connection":
    """A connection to DATABASE_URL; unless told otherwise, to a database whose migrations are all applied."""
    from midpay.db import connect

    conn = connect(_resolved_url())
    if check_schema:
        try:
            require_schema(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def require_schema(conn: "Connection") -> None:
    """Refuse (exit 2, `run midpay migrate`) a database whose migrations are not this midpay's, once per process."""
    if state.schema_checked:
        return
    from midpay.db import migrate, translate_errors

    with translate_errors():
        migrate.require_migrated(conn)
    state.schema_checked = True


def open_gateway(pool_size: int = 4) -> "Gateway":
    from midpay.midtrans.gateway import Gateway

    s = settings()
    return Gateway(base_url=s.api_url, server_key=s.require_server_key(), timeout=s.timeout, pool_size=pool_size)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (cron's or systemd's stop) is handled like Ctrl-C: the command winds down."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_for(failed: bool) -> None:
    if failed:
        raise typer.Exit(1)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


LimitFlag = Annotated[int, typer.Option("--limit", min=1, max=1_000_000_000, help="Show at most this many.")]

# Seconds-valued flags: finite, and small enough for PostgreSQL's intervals (~31 years).
MAX_SECONDS = 1_000_000_000


def finite(value: float | None) -> float | None:
    """Option callback: refuse nan (inf is refused by each option's max)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value
OrderIdArg = Annotated[str, typer.Argument(help="The order id.", show_default=False)]
YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not on a terminal).")
]




def subapp(**options: Any) -> typer.Typer:
    """A command group with the app's traceback settings (no locals: they could hold the key)."""
    return typer.Typer(pretty_exceptions_enable=False, pretty_exceptions_show_locals=False, **options)


class JsonSpool:
    """A ``{"results": [...], "summary": {...}}`` document, gathered in a temporary file (memory stays flat)
    and written to stdout as one line at the end, with a top-level ``"error"`` when the run was cut short.

    Nothing reaches stdout before the run ends, so a run killed outright leaves no half
    document in a log it appends to; every other ending writes a complete one.
    """

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 22, mode="w+", encoding="utf-8")
        self._count = 0
        self._closed = False

    def add(self, item: dict[str, Any]) -> None:
        from midpay.output import json_text

        self._file.write(json_text(item, compact=True) + "\n")  # one item a line here; JSON text has no newline
        self._count += 1

    def close(self, summary: dict[str, int], error: str | None) -> None:
        from midpay.output import json_text

        if self._closed:
            return
        self._closed = True
        tail: dict[str, Any] = {"summary": summary}
        if error is not None:
            tail["error"] = error
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
