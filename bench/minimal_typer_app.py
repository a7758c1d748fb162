"""The start-up floor: a minimal two-command Typer app, configured like midpay's.

Like ``midpay.cli.app`` it turns off Rich help formatting and Rich tracebacks, so
the comparison measures what midpay adds on top of Typer itself, not a different
Typer mode.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="minimal",
    help="A minimal two-command Typer app.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print("minimal 0.0.0")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """A minimal two-command Typer app."""


@app.command()
def hello(name: Annotated[str, typer.Argument(help="Who to greet.")] = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


@app.command()
def goodbye(name: Annotated[str, typer.Argument(help="Who to see off.")] = "world") -> None:
    """Say goodbye."""
    print(f"goodbye {name}")


if __name__ == "__main__":
    app()
