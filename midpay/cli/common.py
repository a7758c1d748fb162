"""What every command shares: the Typer app, settings, connections, the common options.

The app's root command is ``boundary.RootGroup``: the one place where a failure
becomes ``Error: …`` on stderr, an exit code and, with --json, the one document
(CONTRACT.md). Heavy modules (psycopg, requests, rich) are imported inside the
commands, so ``midpay --help`` stays fast. No ``from __future__ import annotations``
in the cli package: Typer would have to evaluate every option's annotation string at
start-up.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midpay import __version__
from midpay.cli.boundary import RootGroup, want_json
from midpay.cli.state import secrets, state, stdout_secrets

if TYPE_CHECKING:
    from midpay.config import Settings
    from midpay.db import Connection
    from midpay.midtrans.gateway import Gateway

app = typer.Typer(
    cls=RootGroup,
    name="midpay",
    help="GoPay and QRIS payment operations over Midtrans and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
    state.signing_secrets, state.shown = [], []
    _redact_streams()


def _redact_streams() -> None:
    """The last line of defence: whatever reaches stdout or stderr is redacted (redaction.py)."""
    from midpay.config.redaction import RedactingStream

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout, stdout_secrets)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr, secrets)  # type: ignore[assignment]


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
        from midpay.embedded import resolve_url

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


JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", callback=want_json,
        help='Print exactly one JSON document on stdout; a failure adds "error" and "exit_code" to it.',
    ),
]


LimitFlag = Annotated[int, typer.Option("--limit", min=1, max=1_000_000_000, help="Show at most this many.")]

# Seconds-valued flags: finite, and small enough for PostgreSQL's intervals (~31 years).
MAX_SECONDS = 1_000_000_000


def finite(value: float | None) -> float | None:
    """Option callback: refuse nan (inf is refused by each option's max)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def seconds(flag: str, help: str, *, least: float = 0, most: float = MAX_SECONDS) -> Any:
    """A seconds-valued option: finite, from ``least`` to ``most``."""
    return typer.Option(flag, min=least, max=most, callback=finite, help=help)


OrderIdArg = Annotated[str, typer.Argument(help="The order id.", show_default=False)]
YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not on a terminal).")
]


def subapp(**options: Any) -> typer.Typer:
    """A command group with the app's traceback settings (no locals: they could hold the key)."""
    return typer.Typer(pretty_exceptions_enable=False, pretty_exceptions_show_locals=False, **options)
