"""What every command shares: the Typer app, the one error boundary, settings, connections.

This is the one place where a midpay error becomes ``Error: …`` on stderr and an
exit code (CONTRACT.md). Heavy modules (psycopg, requests, rich) are imported inside
the commands, so ``midpay --help`` stays fast. No ``from __future__ import annotations``
in the cli package: Typer would have to evaluate every option's annotation string at
start-up.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from midpay import __version__
from midpay.errors import MidpayError

if TYPE_CHECKING:
    from midpay.config import Settings
    from midpay.db import Connection
    from midpay.gateway import Gateway

app = typer.Typer(
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
    _redact_streams()


def _redact_streams() -> None:
    """The last line of defence: whatever reaches stdout or stderr is redacted (redaction.py)."""
    from midpay.redaction import RedactingStream

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout, _secrets)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr, _secrets)  # type: ignore[assignment]


# --- the one error boundary ------------------------------------------------------------


def _secrets() -> list[str]:
    return state.settings.secrets() if state.settings is not None else []


def fail(exc: MidpayError) -> NoReturn:
    """Print ``Error: …`` (secrets redacted) and exit with the error's code."""
    from midpay.config import redact
    from midpay.output import visible

    raw = str(exc).strip()
    # The first line only (errors are one line); anything a terminal would act on, shown as an escape.
    message = visible(redact(raw.split("\n", 1)[0] if raw else exc.__class__.__name__, _secrets()))
    sys.stderr.write(f"Error: {message}\n")
    raise typer.Exit(exc.exit_code)


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


def database_url() -> str:
    from midpay.db import resolve_url

    return resolve_url(settings(), announce=_announce)


def open_connection() -> "Connection":
    from midpay.db import connect

    return connect(database_url())


def open_gateway(pool_size: int = 4) -> "Gateway":
    from midpay.gateway import Gateway

    s = settings()
    return Gateway(base_url=s.api_url, server_key=s.require_server_key(), timeout=s.timeout, pool_size=pool_size)


def exit_for(failed: bool) -> None:
    if failed:
        raise typer.Exit(1)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


LimitFlag = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")]
OrderIdArg = Annotated[str, typer.Argument(help="The order id.", show_default=False)]
YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not on a terminal).")
]




def subapp(**options: Any) -> typer.Typer:
    """A command group with the app's traceback settings (no locals: they could hold the key)."""
    return typer.Typer(pretty_exceptions_enable=False, pretty_exceptions_show_locals=False, **options)
