"""Commands about the shop's own app: endpoints add|list|remove|disable|enable|rotate-secret, deliveries [resend]."""

from typing import TYPE_CHECKING, Annotated

import typer

from midpay.cli.boundary import document
from midpay.cli.common import JsonFlag, LimitFlag, app, open_connection, subapp
from midpay.cli.state import add_secrets
from midpay.errors import UsageError

if TYPE_CHECKING:
    from midpay.db.endpoints import Endpoint

EndpointIdArg = Annotated[str, typer.Argument(help="The endpoint's id (we_…).", show_default=False)]

endpoints_app = subapp()
app.add_typer(
    endpoints_app, name="endpoints", no_args_is_help=True,
    short_help="Where payment events go: the shop's own app.",
)


def _show(endpoint: "Endpoint", *, json_out: bool, headline: str, secret: str | None = None) -> None:
    """The endpoint, as a document or for people; ``secret`` is handed over here, and only here."""
    from midpay import output
    from midpay.output import outbox

    if secret is not None:
        from midpay.outbox.endpoints import secret_forms

        add_secrets(secret_forms(secret), shown=True)  # stdout may print it now; nothing else may
    if json_out:
        document(outbox.endpoint_document(endpoint, secret=secret))
    else:
        outbox.render_endpoint(output.console(), endpoint, headline=headline, secret=secret)


@endpoints_app.command("add", short_help="Add an endpoint; print its id and signing secret (once).")
def endpoints_add(
    url: Annotated[str, typer.Argument(help="Where to POST the events: http:// or https:// with a host.",
                                       show_default=False)],
    events: Annotated[
        str | None,
        typer.Option("--events", help="Comma-separated event types or patterns ending in * "
                     "(payment.paid,payment.refund or payment.*). Default: every event."),
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="A note for people.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add an endpoint of the shop's own app: each payment event it takes is POSTed there, signed.

    Prints the endpoint's id and its signing secret (whsec_…), which is shown this once
    and never again: give it to the app, which verifies each delivery's
    webhook-signature with it (Standard Webhooks). `midpay deliver` does the sending.

    Examples:

    \b
      midpay endpoints add https://shop.example/hooks/midpay --events payment.paid,payment.refund
      midpay endpoints add http://127.0.0.1:3000/events --description "staging" --json
    """
    from midpay.outbox import endpoints

    new = endpoints.new_endpoint(url, events=events, description=description)
    conn = open_connection()
    with conn:
        endpoint, secret = endpoints.add(conn, new)
    _show(endpoint, json_out=json_out, headline=f"Endpoint {endpoint.id} added.", secret=secret)


@endpoints_app.command("list", short_help="List the endpoints (never their secrets).")
def endpoints_list(json_out: JsonFlag = False) -> None:
    """List the endpoints, oldest first: id, enabled or not (and why), event types, URL, description.

    Examples:

    \b
      midpay endpoints list
      midpay endpoints list --json
    """
    from midpay import output
    from midpay.outbox import endpoints
    from midpay.output import outbox

    conn = open_connection()
    with conn:
        found = endpoints.list_all(conn)
    if json_out:
        document({"endpoints": [outbox.endpoint_document(e) for e in found]})
    else:
        outbox.render_endpoints(output.console(), found)


@endpoints_app.command("remove", short_help="Remove an endpoint and its delivery log.")
def endpoints_remove(endpoint_id: EndpointIdArg, json_out: JsonFlag = False) -> None:
    """Remove an endpoint: nothing more is sent to it, and its deliveries and their attempts are deleted.

    `midpay endpoints disable` stops it and keeps the log.

    Examples:

    \b
      midpay endpoints remove we_0123456789abcdef01234567
    """
    from midpay.outbox import endpoints

    conn = open_connection()
    with conn:
        endpoint = endpoints.remove(conn, endpoint_id)
    _show(endpoint, json_out=json_out, headline=f"Endpoint {endpoint.id} removed.")


def _switch(endpoint_id: str, *, enabled: bool, json_out: bool) -> None:
    from midpay.outbox import endpoints

    conn = open_connection()
    with conn:
        endpoint = endpoints.set_enabled(conn, endpoint_id, enabled=enabled)
    _show(endpoint, json_out=json_out, headline=f"Endpoint {endpoint.id} {'enabled' if enabled else 'disabled'}.")


@endpoints_app.command("disable", short_help="Stop sending to an endpoint (its deliveries wait).")
def endpoints_disable(endpoint_id: EndpointIdArg, json_out: JsonFlag = False) -> None:
    """Disable an endpoint: events from now on make no delivery to it; those already queued wait until it is
    enabled again.

    Examples:

    \b
      midpay endpoints disable we_0123456789abcdef01234567
    """
    _switch(endpoint_id, enabled=False, json_out=json_out)


@endpoints_app.command("enable", short_help="Send to an endpoint again.")
def endpoints_enable(endpoint_id: EndpointIdArg, json_out: JsonFlag = False) -> None:
    """Enable an endpoint again (also one `midpay deliver` disabled after a 410 Gone).

    Deliveries queued before resume; the events of the time it was disabled made none
    for it (`midpay deliveries resend EVENT_ID… --endpoint ID` sends them).

    Examples:

    \b
      midpay endpoints enable we_0123456789abcdef01234567 --json
    """
    _switch(endpoint_id, enabled=True, json_out=json_out)


@endpoints_app.command("rotate-secret", short_help="Give an endpoint a new signing secret (printed once).")
def endpoints_rotate_secret(endpoint_id: EndpointIdArg, json_out: JsonFlag = False) -> None:
    """Give an endpoint a new signing secret, printed this once.

    For 24 hours the old secret keeps signing beside the new one (two v1 signatures in
    webhook-signature), so the app can switch to the new one without losing a
    delivery. Rotating again within those hours drops the oldest secret.

    Examples:

    \b
      midpay endpoints rotate-secret we_0123456789abcdef01234567
    """
    from midpay.outbox import endpoints

    conn = open_connection()
    with conn:
        endpoint, secret = endpoints.rotate(conn, endpoint_id)
    _show(endpoint, json_out=json_out, headline=f"Endpoint {endpoint.id}: new signing secret.", secret=secret)


# --- deliveries ------------------------------------------------------------------------

deliveries_app = subapp()
app.add_typer(deliveries_app, name="deliveries", short_help="The delivery log of payment events; resend them.")

EndpointFlag = Annotated[str | None, typer.Option("--endpoint", help="Only deliveries to this endpoint.")]


@deliveries_app.callback(invoke_without_command=True, short_help="List deliveries of payment events.")
def deliveries_list(
    ctx: typer.Context,
    endpoint_id: EndpointFlag = None,
    order_id: Annotated[str | None, typer.Option("--order-id", help="Only the events of this order.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only deliveries that failed for good.")] = False,
    attempts: Annotated[
        bool, typer.Option("--attempts", help="Also every attempt of each: time, status code, duration, error.")
    ] = False,
    limit: LimitFlag = 50,
    json_out: JsonFlag = False,
) -> None:
    """List deliveries of payment events to endpoints, newest first: pending, delivered or failed.

    --attempts adds every attempt of each listed delivery, oldest first. `midpay
    deliveries resend` queues deliveries again.

    Examples:

    \b
      midpay deliveries --failed
      midpay deliveries --order-id shop-1042 --attempts --json
    """
    from midpay import output
    from midpay.outbox import endpoints
    from midpay.output import outbox

    if ctx.invoked_subcommand is not None:
        if endpoint_id is not None or order_id is not None or failed or attempts or json_out or limit != 50:
            raise UsageError(
                f"give the options after the subcommand, e.g. `midpay deliveries {ctx.invoked_subcommand} --failed`"
            )
        return
    conn = open_connection()
    with conn:
        add_secrets(endpoints.signing_secrets(conn))  # an error text quoting one is masked
        log = endpoints.delivery_log(
            conn, endpoint_id=endpoint_id, order_id=order_id, failed_only=failed, limit=limit, with_attempts=attempts
        )
    if json_out:
        found = log.attempts
        document({"deliveries": [
            outbox.delivery_document(d, attempts=None if found is None else found[(d.event_id, d.endpoint_id)])
            for d in log.deliveries
        ]})
    else:
        outbox.render_deliveries(output.console(), log.deliveries, attempts=log.attempts)


@deliveries_app.command("resend", short_help="Queue deliveries again, due now.")
def deliveries_resend(
    event_ids: Annotated[
        list[str] | None,
        typer.Argument(help="The events (evt_…) to send again.", metavar="[EVENT_ID]...", show_default=False),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every delivery that failed for good.")] = False,
    endpoint_id: EndpointFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """Queue deliveries again, due now: those of the EVENT_IDs (to every endpoint that had one), or with
    --failed every failed one; --endpoint keeps those to one endpoint.

    With --endpoint, an EVENT_ID that endpoint never had a delivery of gets one
    (whatever its patterns): how an endpoint added later catches up.

    Each becomes pending, due at once; its attempts are kept. `midpay deliver` sends
    them (still one order's events in sequence; an event older than its
    --give-up-after gets one attempt). A delivery a running `midpay deliver`
    is sending at that moment is left to finish. An unknown event, or without
    --endpoint one with no delivery, is exit 1 and nothing is queued.

    Examples:

    \b
      midpay deliveries resend --failed --endpoint we_0123456789abcdef01234567
      midpay deliveries resend evt_5f0c… evt_9a1d…
    """
    from midpay import output
    from midpay.outbox import endpoints
    from midpay.output import outbox

    choice = endpoints.resend_choice(event_ids or [], failed_only=failed, endpoint_id=endpoint_id)
    conn = open_connection()
    with conn:
        add_secrets(endpoints.signing_secrets(conn))
        resent = endpoints.resend(conn, choice)
    if json_out:
        document(outbox.resend_document(resent.queued, resent.in_flight))
    else:
        outbox.render_resent(output.console(), resent.queued, resent.in_flight)
