"""listen: the live receiver for Midtrans' Payment Notification URL."""

from typing import Annotated

import typer

from midpay.cli.common import app, settings
from midpay.errors import UsageError


@app.command(short_help="Receive Midtrans' notifications over HTTP.")
def listen(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8080,
    path: Annotated[
        str, typer.Option("--path", help="The path Midtrans POSTs notifications to.")
    ] = "/midtrans/notification",
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=256, help="Requests each worker handles at once.")
    ] = 8,
) -> None:
    """Receive Midtrans' HTTP notifications and apply them, until SIGTERM.

    Each POST on --path goes through the same intake as replay-webhook: its exact
    bytes are stored, then it is verified and applied. Each worker holds at most 4
    PostgreSQL connections, whatever --threads: none while Midtrans answers. Answers: 200 stored and applied
    (or nothing to change); 400 stored but rejected (bad signature, wrong amount, not a
    notification); 404 stored but the order is unknown; 503 not stored (PostgreSQL
    unreachable) or stored but not yet confirmed (Get Status could not be had), so
    Midtrans sends it again; 405, 413, 415 refused before reading.
    `midpay events reprocess --rejected` applies stored rejections once the cause is
    fixed. GET /healthz answers 200 while PostgreSQL and the migrations are in order.
    One JSON line per request on stderr. SIGTERM finishes the requests in flight and
    exits 0.

    Examples:

    \b
      midpay listen --port 8080 --workers 2
      midpay listen --host 0.0.0.0 --path /midtrans/notification
    """
    from midpay import embedded
    from midpay.web import app as web_app
    from midpay.web import server as serving

    if not path.startswith("/") or path == web_app.HEALTH_PATH or "?" in path:
        raise UsageError(f"--path must start with / and not be {web_app.HEALTH_PATH} or hold a query, not {path!r}")
    s = settings()
    server_key = s.require_server_key()
    url = embedded.resolve_url(s, announce=lambda line: web_app.write_log_line(serving.log_record(line)))
    serving.check_ready(url)
    sock = serving.bind(host, port)
    address = serving.url_of(sock, path)
    secrets = s.secrets()

    def load() -> web_app.WebhookApp:
        return web_app.WebhookApp(
            database_url=url,
            server_key=server_key,
            api_url=s.api_url,
            timeout=s.timeout,
            path=path,
            threads=threads,
            secrets=secrets,
        )

    announce = {
        "message": f"listening on {address}",
        "url": address,
        "health": serving.url_of(sock, web_app.HEALTH_PATH),
        "workers": workers,
        "threads": threads,
    }
    serving.serve(sock, load, workers=workers, threads=threads, announce=announce, secrets=secrets)
