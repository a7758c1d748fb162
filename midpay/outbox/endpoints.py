"""Endpoints: where the shop's own app takes payment events; and the delivery log, read and replayed.

The rules of an endpoint live here: its URL (``check_url``), the event types it takes
(``parse_patterns``), its signing secret (``new_secret``: ``whsec_`` and the base64 of
24 random bytes, shown once, by ``add`` and ``rotate``), and the 24 hours a rotated
secret keeps signing beside the new one. ``midpay deliver`` sends; this module only
configures, lists and queues again.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from midpay import states
from midpay.db import deliveries_log
from midpay.db import endpoints as rows
from midpay.db.core import Connection
from midpay.db.deliveries_log import Attempt, Delivery
from midpay.db.endpoints import Endpoint
from midpay.errors import NotFoundError, UsageError

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix every such secret starts with, not a secret)
SECRET_BYTES = 24
ROTATION_OVERLAP_SECONDS = 24 * 3600
MAX_URL = 2048
MAX_DESCRIPTION = 500
SHOWN = 200  # how much of a refused value an error line repeats

# Every type the outbox writes: `payment.<status>` for each state a payment can move to, and
# `payment.paid` once, with the change that first sets paid_at.
EVENT_TYPES: tuple[str, ...] = (
    *(f"payment.{state}" for state in states.ALL_STATES if state != states.CREATED),
    "payment.paid",
)


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes one: ``whsec_`` and the base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_forms(secret: str) -> list[str]:
    """The secret as shown, and its key without the prefix (what a receiver's library is given)."""
    bare = secret.removeprefix(SECRET_PREFIX)
    return [secret, bare] if bare != secret else [secret]


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(12)


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host that midpay can POST to; else UsageError (exit 2)."""
    shown = _USERINFO.sub(r"\1***@", url)[:SHOWN]  # an error line never repeats a password
    if not url or len(url) > MAX_URL or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UsageError(
            f"the endpoint URL must be one http:// or https:// URL of at most {MAX_URL} characters, "
            f"without blanks or control characters; not {shown!r}"
        )
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(f"the endpoint URL must be http:// or https:// with a host (and a valid port); not {shown!r}")
    if parts.username is not None or parts.password is not None:
        # Not repeated: the URL holds a password. Endpoints are listed in clear.
        raise UsageError("the endpoint URL must not hold a user name or password (receivers check the signature)")
    if parts.fragment or url.endswith("#"):
        raise UsageError(f"the endpoint URL must not have a #fragment (it is never sent); not {shown!r}")
    return url


def parse_patterns(value: str | None) -> list[str]:
    """``--events``: comma-separated event types or prefixes ending in ``*``; every type when not given."""
    if value is None:
        return ["*"]
    patterns: list[str] = []
    for raw in value.split(","):
        pattern = raw.strip()
        if not pattern:
            continue
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            if "*" in prefix or not any(t.startswith(prefix) for t in EVENT_TYPES):
                raise UsageError(
                    f"--events: {pattern[:SHOWN]!r} matches no event type (a pattern is a type, or the start "
                    "of some types followed by *, e.g. payment.*)"
                )
        elif pattern not in EVENT_TYPES:
            raise UsageError(f"--events: unknown event type {pattern[:SHOWN]!r}; known: {', '.join(EVENT_TYPES)}")
        if pattern not in patterns:
            patterns.append(pattern)
    if not patterns:
        raise UsageError("--events needs at least one event type or pattern, e.g. payment.paid,payment.refund")
    return patterns


def _description(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_DESCRIPTION:
        raise UsageError(f"--description is {len(value)} characters; at most {MAX_DESCRIPTION}")
    return value


def _found(endpoint: Endpoint | None, endpoint_id: str) -> Endpoint:
    if endpoint is None:
        raise NotFoundError(f"no such endpoint: {endpoint_id[:SHOWN]!r} (see `midpay endpoints list`)")
    return endpoint


# --- the use cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class NewEndpoint:
    """An endpoint to add, its URL, patterns and description checked (before any connection is opened)."""

    url: str
    events: list[str]
    description: str | None


def new_endpoint(url: str, *, events: str | None, description: str | None) -> NewEndpoint:
    """The checked request of ``endpoints add``; UsageError (exit 2) for a bad URL, pattern or description."""
    return NewEndpoint(check_url(url), parse_patterns(events), _description(description))


def add(conn: Connection, new: NewEndpoint) -> tuple[Endpoint, str]:
    """A new enabled endpoint and its signing secret (which nothing shows again)."""
    secret = new_secret()
    with conn.transaction():
        endpoint = rows.insert_endpoint(
            conn, endpoint_id=new_endpoint_id(), url=new.url, events=new.events, description=new.description,
            secret=secret,
        )
    return endpoint, secret


def list_all(conn: Connection) -> list[Endpoint]:
    with conn.transaction():
        return rows.list_endpoints(conn)


def remove(conn: Connection, endpoint_id: str) -> Endpoint:
    """Delete the endpoint, its deliveries and their attempts."""
    with conn.transaction():
        return _found(rows.delete_endpoint(conn, endpoint_id), endpoint_id)


def set_enabled(conn: Connection, endpoint_id: str, *, enabled: bool) -> Endpoint:
    """Enable, or disable (new events make no delivery to it; those queued wait until it is enabled)."""
    with conn.transaction():
        return _found(
            rows.set_enabled(conn, endpoint_id, enabled=enabled, reason="disabled by `midpay endpoints disable`"),
            endpoint_id,
        )


def rotate(conn: Connection, endpoint_id: str) -> tuple[Endpoint, str]:
    """A new secret for the endpoint; the old one signs beside it for 24 hours more."""
    secret = new_secret()
    with conn.transaction():
        endpoint = rows.rotate_secret(conn, endpoint_id, secret, overlap_seconds=ROTATION_OVERLAP_SECONDS)
    return _found(endpoint, endpoint_id), secret


def signing_secrets(conn: Connection) -> list[str]:
    """Every endpoint's secrets in each form, for redaction only."""
    with conn.transaction():
        stored = rows.signing_secrets(conn)
    return [form for secret in stored for form in secret_forms(secret)]


# --- the delivery log ------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryLog:
    """The deliveries asked for and, when asked, every attempt of each (oldest first)."""

    deliveries: list[Delivery]
    attempts: dict[tuple[str, str], list[Attempt]] | None


def delivery_log(
    conn: Connection, *, endpoint_id: str | None, order_id: str | None, failed_only: bool, limit: int,
    with_attempts: bool,
) -> DeliveryLog:
    with conn.transaction():
        if endpoint_id is not None:
            _found(rows.get_endpoint(conn, endpoint_id), endpoint_id)
        found = deliveries_log.list_deliveries(
            conn, endpoint_id=endpoint_id, order_id=order_id, failed_only=failed_only, limit=limit
        )
        if not with_attempts:
            return DeliveryLog(found, None)
        attempts: dict[tuple[str, str], list[Attempt]] = {(d.event_id, d.endpoint_id): [] for d in found}
        for attempt in deliveries_log.attempts_of(conn, found):
            attempts[(attempt.event_id, attempt.endpoint_id)].append(attempt)
    return DeliveryLog(found, attempts)


@dataclass(frozen=True)
class Resent:
    """What ``resend`` queued again, and what it left because a ``deliver`` process is sending it now."""

    queued: list[Delivery]
    in_flight: list[Delivery]


@dataclass(frozen=True)
class ResendChoice:
    """Which deliveries to queue again: those of ``event_ids``, or every failed one; maybe to one endpoint."""

    event_ids: list[str]
    failed_only: bool
    endpoint_id: str | None


def resend_choice(event_ids: Sequence[str], *, failed_only: bool, endpoint_id: str | None) -> ResendChoice:
    """The checked request of ``deliveries resend``: event ids or ``--failed``, one of the two (else exit 2)."""
    if bool(event_ids) == failed_only:
        raise UsageError("give the EVENT_IDs to send again, or --failed for every failed delivery (not both)")
    return ResendChoice(list(dict.fromkeys(event_ids)), failed_only, endpoint_id)


def resend(conn: Connection, choice: ResendChoice) -> Resent:
    """Queue the chosen deliveries again, due now.

    With an endpoint, each of the events gets a delivery to it if it had none (the
    endpoint was added, or disabled, after the event). Without one, an event with no
    delivery at all is NotFoundError, as is an event id payment_events does not have:
    then nothing is queued.
    """
    endpoint_id = choice.endpoint_id
    with conn.transaction():
        if endpoint_id is not None:
            _found(rows.get_endpoint(conn, endpoint_id), endpoint_id)
        if choice.event_ids:
            if endpoint_id is not None:
                known = deliveries_log.existing_events(conn, choice.event_ids)
            else:
                known = deliveries_log.events_with_deliveries(conn, choice.event_ids)
            _all_found(choice.event_ids, known, to_endpoint=endpoint_id is not None)
            if endpoint_id is not None:
                deliveries_log.add_deliveries(conn, choice.event_ids, endpoint_id)
        queued, in_flight = deliveries_log.resend(
            conn, event_ids=choice.event_ids or None, failed_only=choice.failed_only, endpoint_id=endpoint_id
        )
    return Resent(queued, in_flight)


def _all_found(event_ids: list[str], known: set[str], *, to_endpoint: bool) -> None:
    missing = [e for e in event_ids if e not in known]
    if not missing:
        return
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    if to_endpoint:
        raise NotFoundError(f"no such event: {missing[0][:SHOWN]!r}{more}; nothing was queued")
    raise NotFoundError(
        f"no delivery of event {missing[0][:SHOWN]!r}{more}; nothing was queued "
        "(--endpoint ID sends an event to an endpoint that had no delivery of it)"
    )
