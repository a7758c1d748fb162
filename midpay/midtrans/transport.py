"""How the gateway's calls travel: urllib3's retry policy, the pooled fast path, transport errors.

``gateway`` owns the decisions (which errors mean what); this module only moves bytes.
``Pooled`` sends a call straight on the urllib3 connection pool of the gateway's own
``requests`` adapter, configured by requests exactly as ``Session.send`` would find it
(TLS verification, CA bundle, pool size, retries), without the per-call work requests adds
around it (URL parsing, cookie jars, hooks, redirect handling), which at reconcile's
concurrency is most of a status call's CPU time. Its failures are raised as the same
``requests`` exceptions ``HTTPAdapter.send`` raises, so the gateway maps one set.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPConnectionPool, Timeout
from urllib3.util.retry import Retry

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 3  # seconds: a Retry-After beyond this would eat the Idempotency-Key lifetime
BACKOFF_CAP = 2.0


class _Retry(Retry):
    """urllib3's Retry with ``Retry-After`` capped, whatever the urllib3 version."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_CAP)


def build_retry(retries: int, backoff: float) -> Retry:
    """The urllib3 retry policy described in the module docstring."""
    return _Retry(
        total=retries,
        connect=retries,
        status=retries,
        read=False,  # re-raise read errors at once: the request was sent, retrying could double-act
        other=0,
        redirect=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        backoff_factor=backoff,
        backoff_max=BACKOFF_CAP,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last 5xx/429 reaches the error mapping below
        raise_on_redirect=False,
    )


def was_sent(exc: requests.ConnectionError) -> bool:
    """Whether a connection error happened after the request went out (a dropped answer)."""
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, u3.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, u3.ProtocolError | u3.ReadTimeoutError)


def connect_reason(exc: requests.RequestException) -> str:
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, u3.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, u3.NameResolutionError):
        return "the host name did not resolve"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused the connection"
    if isinstance(exc, requests.ConnectTimeout):
        return "the connection timed out"
    if isinstance(reason, u3.NewConnectionError):
        return "the connection was refused or the host is unreachable"
    return f"the connection failed ({type(exc).__name__})"


class Pooled:
    """Calls on the urllib3 pool of ``adapter`` for ``base`` (no proxy), answered as ``requests.Response``."""

    def __init__(self, adapter: HTTPAdapter, base: str, verify: bool | str) -> None:
        self.adapter, self.base, self.verify = adapter, base, verify
        self._prefix = urlsplit(base).path.rstrip("/")
        self._pool: HTTPConnectionPool | None = None

    def pool(self) -> HTTPConnectionPool:
        """The pool requests itself would use for ``base`` (found once; the adapter keeps it)."""
        if self._pool is None:
            probe = requests.Request("GET", self.base + "/").prepare()
            pool = self.adapter.get_connection_with_tls_context(probe, self.verify, proxies={}, cert=None)
            self.adapter.cert_verify(pool, self.base, self.verify, None)  # type: ignore[no-untyped-call]
            assert isinstance(pool, HTTPConnectionPool)
            self._pool = pool
        return self._pool

    def send(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> requests.Response:
        """One call, its answer read whole; failures raised as HTTPAdapter.send raises them."""
        if body is not None:
            headers = {**headers, "Content-Length": str(len(body))}
        try:
            raw = self.pool().urlopen(
                method, self._prefix + path, body=body, headers=headers, redirect=False, assert_same_host=False,
                preload_content=True, decode_content=True, retries=self.adapter.max_retries,
                timeout=Timeout(connect=timeout, read=timeout),
            )
        except (u3.ProtocolError, OSError) as exc:
            raise requests.ConnectionError(exc) from exc
        except u3.MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(reason, u3.NewConnectionError):
                raise requests.ConnectTimeout(exc) from exc
            if isinstance(reason, u3.ResponseError):
                raise requests.exceptions.RetryError(exc) from exc
            if isinstance(reason, u3.SSLError):
                raise requests.exceptions.SSLError(exc) from exc
            raise requests.ConnectionError(exc) from exc
        except u3.ClosedPoolError as exc:
            raise requests.ConnectionError(exc) from exc
        except u3.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        except u3.ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc) from exc
        except u3.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except u3.HTTPError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        response = requests.Response()
        response.status_code = raw.status
        response.reason = raw.reason or ""
        response.headers = CaseInsensitiveDict(raw.headers)
        response._content = raw.data  # read whole: the connection is back in the pool
        response.url = self.base + path
        response.raw = raw
        return response
