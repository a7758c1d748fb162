"""The Standard Webhooks signature midpay puts on every delivery.

A receiver checks ``webhook-signature`` against HMAC-SHA256 over
``"{webhook-id}.{webhook-timestamp}.{body}"``, keyed with the bytes that the endpoint's
secret (``whsec_`` + base64) encodes. While a secret rotates, the header carries one
``v1,<base64>`` per secret, space-separated, and a receiver holding either secret
accepts the request. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_…`` secret stands for (the base64 after the prefix, decoded)."""
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(encoded, validate=True)


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One ``v1,<base64>`` signature of ``body`` under ``secret``."""
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: one signature per secret, space-separated, the current one first."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets)


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, with the body's content type."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }
