"""Midtrans Core API (`/v2`) over one ``requests.Session``: the only module that speaks HTTP to Midtrans.

Every call returns Midtrans' decoded JSON object, or raises one midpay error:

    answer                                         raises
    HTTP 2xx, body status_code 200/201/202/407     (returned; 407 = expired is a normal answer)
    HTTP 401 or body 401                           GatewayAuthError (with a hint on the key/URL)
    body 404                                       TransactionNotFound
    body 406 on charge                             DuplicateOrder
    other body 3xx/4xx (400, 402, 412, 414, ...)   MidtransRejected (Midtrans' status_message)
    HTTP 5xx/429 after the retries                 GatewayUnavailable
    not JSON / not an object / no status_code      GatewayProtocolError
    connection refused, DNS, connect timeout       GatewayUnreachable (a GatewayUnavailable: never sent)
    read timeout, connection dropped mid-answer    OutcomeUnknown (sent; Midtrans may have acted)

Retries are urllib3's, mounted on the session: connection failures and HTTP
429/500/502/503/504 are retried for GET and POST alike, because every POST carries an
``Idempotency-Key`` (valid five minutes at Midtrans; the backoff stays within seconds).
Read timeouts are never retried: a stalled Midtrans costs one ``timeout``, and the caller
learns the outcome is unknown. With the gateway's own session (no proxy), each call
goes straight to the urllib3 pool of the session's adapter (``transport.Pooled``), set
up by requests as ``Session.send`` would find it, without requests' per-call work; a
session passed in is used through ``Session.send``.

The server key is sent as the Basic-auth user name and appears in no message or repr;
every decoded answer is scrubbed of it (and of its Basic-auth token) before it is
returned, so nothing downstream can store or print an echo of it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
import uuid
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

import midpay
from midpay.config.redaction import key_forms, redact, scrub_text
from midpay.errors import (
    DuplicateOrder,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayUnavailable,
    GatewayUnreachable,
    MidtransRejected,
    OutcomeUnknown,
    TransactionNotFound,
)
from midpay.midtrans.transport import RETRY_AFTER_CAP, RETRY_STATUSES, Pooled, build_retry, connect_reason, was_sent

__all__ = [
    "AUTH_HINT", "IDEMPOTENCY_KEY_MAX", "PAYMENT_TYPES", "RETRY_AFTER_CAP", "RETRY_STATUSES", "Gateway",
    "basic_auth_header", "build_retry",
]

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 46  # Midtrans silently ignores longer keys
PAYMENT_TYPES: Final = ("gopay", "qris")
AUTH_HINT = "check MIDTRANS_SERVER_KEY and MIDTRANS_IS_PRODUCTION/MIDTRANS_API_URL"
_OK_CODES: Final = frozenset({"407"})  # expired: a normal answer for status and expire
_REFUND_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)


class _ServerKeyAuth(requests.auth.AuthBase):
    """HTTP Basic with the server key as user name and an empty password; opaque in repr."""

    def __init__(self, server_key: str) -> None:
        self._header = basic_auth_header(server_key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def on(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the Authorization header added (a new dict)."""
        return {**headers, "Authorization": self._header}

    def __repr__(self) -> str:
        return "<server key auth>"


def basic_auth_header(server_key: str) -> str:
    """The ``Authorization`` header value Midtrans expects for ``server_key``."""
    token = base64.b64encode(f"{server_key}:".encode()).decode("ascii")
    return f"Basic {token}"


class Gateway:
    """A Midtrans Core API client: one session, pooled connections, retries, mapped errors."""

    def __init__(
        self,
        *,
        base_url: str,
        server_key: str,
        timeout: float = 10.0,
        pool_size: int = 16,
        retries: int = 3,
        backoff: float = 0.2,
        session: requests.Session | None = None,
        user_agent: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http:// or https:// URL")
        if not server_key:
            raise ValueError("server_key is empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self._secrets = key_forms(server_key)
        self._auth = _ServerKeyAuth(server_key)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent or f"midpay/{midpay.__version__}",
        }
        # A session passed in is used as it is (its adapters decide pooling and retries)
        # and stays the caller's to close.
        self._owns_session = session is None
        self._pooled: Pooled | None = None
        if session is None:
            session = requests.Session()
            # Read proxy and CA settings from the environment once, here: with trust_env
            # on, requests re-scans os.environ on every call (a third of a status call's time).
            session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
            ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if ca_bundle:
                session.verify = ca_bundle
            session.trust_env = False  # also keeps ~/.netrc from replacing the server key
            adapter = HTTPAdapter(
                pool_connections=pool_size,
                pool_maxsize=pool_size,
                max_retries=build_retry(retries, backoff),
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session
        self._verify: bool | str = session.verify if session.verify is not None else True
        # The base URL as requests prepares it (IDNA host, quoting), once; paths are already quoted.
        self._base = str(requests.Request("GET", self.base_url + "/").prepare().url).rstrip("/")
        if self._owns_session and not session.proxies:
            # Calls go straight to the adapter's urllib3 pool (``transport``): requests'
            # own per-call work is most of a status call's CPU time under reconcile.
            self._pooled = Pooled(adapter, self._base, self._verify)
        self.last_date: str | None = None  # the Date header of the last answer (``midpay doctor``'s clock check)

    def __repr__(self) -> str:
        return f"Gateway(base_url={self.base_url!r}, timeout={self.timeout:g})"

    def close(self) -> None:
        """Release the pooled connections (only of a session this gateway created)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the Core API ---------------------------------------------------------------

    def charge(
        self,
        *,
        order_id: str,
        gross_amount: int,
        payment_type: str = "gopay",
        idempotency_key: str,
        expiry_minutes: int | None = None,
    ) -> dict[str, Any]:
        """POST /v2/charge: a GoPay (or QRIS with acquirer GoPay) payment for ``order_id``."""
        _check_order_id(order_id)
        if isinstance(gross_amount, bool) or not isinstance(gross_amount, int) or gross_amount <= 0:
            raise ValueError("gross_amount must be a positive whole number of rupiah")
        if payment_type not in PAYMENT_TYPES:
            raise ValueError(f"payment_type must be one of {', '.join(PAYMENT_TYPES)}")
        body: dict[str, Any] = {
            "payment_type": payment_type,
            "transaction_details": {"order_id": order_id, "gross_amount": gross_amount},
        }
        if payment_type == "qris":
            body["qris"] = {"acquirer": "gopay"}
        if expiry_minutes is not None:
            if isinstance(expiry_minutes, bool) or not isinstance(expiry_minutes, int) or expiry_minutes <= 0:
                raise ValueError("expiry_minutes must be a positive whole number")
            body["custom_expiry"] = {"expiry_duration": expiry_minutes, "unit": "minute"}
        return self._call("POST", "/v2/charge", "charge", order_id, body=body, idempotency_key=idempotency_key)

    def status(self, order_id: str) -> dict[str, Any]:
        """GET /v2/{order_id}/status (a transaction id works too)."""
        _check_order_id(order_id)
        return self._call("GET", f"/v2/{_path_id(order_id)}/status", "status check", order_id)

    def cancel(self, order_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v2/{order_id}/cancel: void a pending payment."""
        _check_order_id(order_id)
        return self._call(
            "POST", f"/v2/{_path_id(order_id)}/cancel", "cancel", order_id, idempotency_key=idempotency_key
        )

    def expire(self, order_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v2/{order_id}/expire: end a pending payment now (answer code 407)."""
        _check_order_id(order_id)
        return self._call(
            "POST", f"/v2/{_path_id(order_id)}/expire", "expire", order_id, idempotency_key=idempotency_key
        )

    def refund(
        self,
        order_id: str,
        *,
        refund_key: str,
        amount: int | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST /v2/{order_id}/refund; the same ``refund_key`` again never pays twice."""
        _check_order_id(order_id)
        if not _REFUND_KEY_RE.fullmatch(refund_key):
            raise ValueError("refund_key must be 1-100 letters, digits, '-' or '_'")
        body: dict[str, Any] = {"refund_key": refund_key}
        if amount is not None:
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise ValueError("amount must be a positive whole number of rupiah")
            body["amount"] = amount
        if reason is not None:
            body["reason"] = reason[:255]
        return self._call(
            "POST",
            f"/v2/{_path_id(order_id)}/refund",
            "refund",
            order_id,
            body=body,
            idempotency_key=idempotency_key,
        )

    # -- plumbing --------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        order_id: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        if method == "POST":
            key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
            if not key or len(key) > IDEMPOTENCY_KEY_MAX:
                raise ValueError(f"idempotency_key must be 1-{IDEMPOTENCY_KEY_MAX} characters")
            headers["Idempotency-Key"] = key
        what = f"{operation} of order {order_id!r}"
        data = json.dumps(body).encode() if body is not None else None
        started = time.monotonic()
        try:
            if self._pooled is not None:
                response = self._pooled.send(method, path, headers=self._auth.on(headers), body=data,
                                             timeout=self.timeout)
            else:
                response = self.session.send(
                    self._prepare(method, path, headers, data),
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                    proxies=self.session.proxies,
                    verify=self.session.verify,
                )
        except requests.ConnectTimeout as exc:
            raise GatewayUnreachable(
                f"{what}: could not connect to Midtrans at {self.base_url}: {connect_reason(exc)}"
            ) from exc
        except requests.ReadTimeout as exc:
            detail = f"no answer within {self.timeout:g} s (timed out)"
            raise OutcomeUnknown(self._unknown(what, method, detail)) from exc
        except requests.ConnectionError as exc:
            if was_sent(exc):
                raise OutcomeUnknown(self._unknown(what, method, "the connection dropped before an answer")) from exc
            raise GatewayUnreachable(
                f"{what}: could not connect to Midtrans at {self.base_url}: {connect_reason(exc)}"
            ) from exc
        except requests.RequestException as exc:  # ChunkedEncodingError, ContentDecodingError, ...
            raise OutcomeUnknown(self._unknown(what, method, f"the answer was cut off ({type(exc).__name__})")) from exc
        self.last_date = response.headers.get("Date")
        log.debug(
            "%s %s -> HTTP %s in %.0f ms", method, path, response.status_code, (time.monotonic() - started) * 1000
        )
        return self._judge(response, what, operation)

    def _prepare(self, method: str, path: str, headers: dict[str, str], data: bytes | None) -> requests.PreparedRequest:
        """The request for a session passed in, prepared by hand: Request.prepare would parse
        the URL and merge cookies and hooks again on every call."""
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = self._base + path
        prepared.headers = CaseInsensitiveDict(headers)
        if data is not None:
            prepared.body = data
            prepared.headers["Content-Length"] = str(len(data))
        self._auth(prepared)
        return prepared

    def _unknown(self, what: str, method: str, detail: str) -> str:
        if method == "GET":
            return f"{what}: {detail}"
        return f"{what}: request sent but {detail}; Midtrans may or may not have acted, check the status"

    def _clean(self, text: str, limit: int = 200) -> str:
        """``text`` on one line, without secrets, at most ``limit`` characters."""
        text = " ".join(redact(text, self._secrets).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _judge(self, response: requests.Response, what: str, operation: str) -> dict[str, Any]:
        http = response.status_code
        decoded: object = None
        text = ""
        try:
            text = response.content.decode("utf-8")
            decoded = json.loads(text)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            decoded = None
        # Before anything keeps or shows the answer: an echoed Authorization header, the
        # key or its token anywhere in it, at any depth, becomes "***".
        decoded = scrub_text(text, decoded, self._secrets)
        body: dict[str, Any] | None = decoded if isinstance(decoded, dict) else None
        code = body.get("status_code") if body is not None else None
        message = self._clean(str(body.get("status_message") or "")) if body is not None else ""

        if http == 401 or code == "401":
            raise GatewayAuthError(f"{what}: Midtrans refused the server key (401); {AUTH_HINT}")
        if http == 429 or http >= 500:
            detail = f" ({message})" if message else ""
            tries = f" after {self.retries} retries" if self._owns_session else ""
            raise GatewayUnavailable(f"{what}: Midtrans answered HTTP {http}{detail}{tries}")
        if body is None or not isinstance(code, str) or not code.isdigit():
            if http == 202:
                raise OutcomeUnknown(
                    f"{what}: Midtrans is still processing an earlier request with this Idempotency-Key"
                )
            raise GatewayProtocolError(self._not_midtrans(response, what, decoded))
        number = int(code)
        if 200 <= number < 300 or code in _OK_CODES:
            if http >= 300:  # a success code under an error status: believe neither
                raise GatewayProtocolError(self._not_midtrans(response, what, decoded))
            return body
        said = f"{code} {message}".strip()
        if code == "404":
            raise TransactionNotFound(f"{what}: Midtrans does not know this transaction ({said})")
        if code == "406" and operation == "charge":
            raise DuplicateOrder(f"{what}: the order id was used before ({said})", code, body)
        if code == "429" or number >= 500:
            raise GatewayUnavailable(f"{what}: Midtrans could not process it now ({said})")
        raise MidtransRejected(f"{what}: Midtrans refused it ({said})", code, body)

    def _not_midtrans(self, response: requests.Response, what: str, decoded: object) -> str:
        content_type = response.headers.get("Content-Type", "no content type").split(";")[0].strip()
        if decoded is not None and not isinstance(decoded, dict):
            shape = f"JSON {type(decoded).__name__}, not an object"
        elif isinstance(decoded, dict):
            shape = "a JSON object without a status_code"
        else:
            shape = "not JSON"
        # Redact before cutting, so that no fragment of a secret survives the cut.
        snippet = self._clean(response.content[:65536].decode("utf-8", "replace"), 80)
        return (
            f"{what}: the answer is not Midtrans-shaped (HTTP {response.status_code}, {content_type}, {shape}): "
            f"{snippet!r}; is MIDTRANS_API_URL right?"
        )


def _check_order_id(order_id: str) -> None:
    if not isinstance(order_id, str) or not order_id:
        raise ValueError("order_id must be a non-empty string")


def _path_id(order_id: str) -> str:
    """``order_id`` as one path segment: '/', '#', '?', spaces and '%' all percent-encoded."""
    return quote(order_id, safe="")
