"""Looking after the installation: the embedded PostgreSQL (db status|start|stop) and doctor."""

import typer

from midpay.cli.boundary import document
from midpay.cli.common import JsonFlag, app, settings, subapp
from midpay.cli.state import state

db_app = subapp(help="The embedded PostgreSQL (DATABASE_URL=embedded) of MIDPAY_HOME.", no_args_is_help=True)
app.add_typer(db_app, name="db", short_help="Show, start or stop the embedded PostgreSQL.")


def _runs_as() -> str | None:
    from midpay.embedded import access as embedded_access
    from midpay.errors import ConfigError

    try:
        return embedded_access.runner().name
    except ConfigError:
        return None


def _show(server: object, json_out: bool) -> None:
    from midpay import embedded, output
    from midpay.output.system import render_server, server_document

    assert isinstance(server, embedded.ServerStatus)
    if json_out:
        url = embedded.url(server, embedded.DATABASE) if server.state == "running" else None
        document(server_document(server, _runs_as(), url))
    else:
        render_server(output.console(), server, _runs_as(), configured=settings().database_url == "embedded")


@db_app.command("status", short_help='Show whether the embedded PostgreSQL runs.')
def db_status(json_out: JsonFlag = False) -> None:
    """Show the embedded PostgreSQL of MIDPAY_HOME: running or not, where, as whom. Starts nothing.

    Examples:

    \b
      midpay db status
      midpay db status --json
    """
    from midpay import embedded

    _show(embedded.status(settings().home), json_out)


@db_app.command("start", short_help='Start the embedded PostgreSQL.')
def db_start(json_out: JsonFlag = False) -> None:
    """Start the embedded PostgreSQL of MIDPAY_HOME (any command with DATABASE_URL=embedded also does).

    Examples:

    \b
      midpay db start
    """
    from midpay import embedded

    embedded.start(settings().home)
    _show(embedded.status(settings().home), json_out)


@db_app.command("stop", short_help='Stop the embedded PostgreSQL; its data stays.')
def db_stop(json_out: JsonFlag = False) -> None:
    """Stop the embedded PostgreSQL of MIDPAY_HOME (a fast shutdown; its data stays).

    Examples:

    \b
      midpay db stop
    """
    from midpay import embedded, output

    home = settings().home
    before = embedded.stop(home)
    was_running = before.state == "running"
    if json_out:
        document({"stopped": was_running, "pid": before.pid, "home": str(home)})
        return
    con = output.console()
    if was_running:
        con.print(output.join(f"stopped the embedded PostgreSQL (pid {before.pid}) of ", output.text(home)))
    else:
        con.print(output.join("the embedded PostgreSQL of ", output.text(home), " was not running"))


@app.command(short_help='Check configuration, database, key and clock.')
def doctor(json_out: JsonFlag = False) -> None:
    """Check configuration, database, migrations, the Midtrans key and the clock; say what to fix.

    Examples:

    \b
      midpay doctor
      midpay doctor --json
    """
    from midpay import output
    from midpay.output.system import doctor_document, render_doctor
    from midpay.setup import doctor as checking

    checks = checking.run(state.env_file)
    try:
        settings()  # so the output filter knows the secrets, when the configuration reads
    except Exception:  # noqa: BLE001, S110 - a broken configuration is the first check's finding
        pass
    if json_out:
        document(doctor_document(checks))
    else:
        render_doctor(output.console(), checks)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


