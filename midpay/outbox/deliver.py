"""`midpay deliver`: send the outbox's due deliveries to the shop's endpoints, signed, with retries.

One loop claims due deliveries (db/deliveries.py: leased, one order's events in
``sequence`` order per endpoint) in batches: whenever no more than ``concurrency``
are held, as many as make ``BACKLOG`` × ``concurrency`` (one claim per batch, not per
finished request). It renders the batch's new bodies once (stored, so every retry sends
the same bytes); each worker signs its delivery (signing.py), POSTs it (``Sender``: the
process's connection pools) and records the attempt (deliver_record.py: in groups).
A 2xx delivers; anything else retries after ``retry_base`` × 2^(n−1) s (±20 %,
at most two hours apart) until ``give_up_after`` seconds after the event, then the
delivery fails; 410 Gone also disables the endpoint.

The loop wakes on PostgreSQL's NOTIFY ``midpay_outbox`` (sent by the outbox trigger at
commit), when a worker finishes, when the next retry comes due, and at least once a
second (a transaction-mode pooler drops notifications). ``stop`` ends it after the
requests in flight are finished.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from midpay.db import deliveries as store
from midpay.db import outbox
from midpay.outbox import signing
from midpay.outbox.deliver_record import Recorder

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse, HTTPConnectionPool

    from midpay.db.core import Connection

MAX_RETRY_DELAY = 7200.0
JITTER = 0.2
POLL_SECONDS = 1.0
STATISTICS_SECONDS = 10.0  # how often the loop checks that the claim's planner statistics are current
CHANNEL = "midpay_outbox"
BACKLOG = 2  # deliveries held per worker: one being sent, one claimed and waiting for the next free worker


@dataclass(frozen=True)
class Options:
    """How a run sends: the command's flags."""

    once: bool = False
    concurrency: int = 8
    retry_base: float = 5.0
    give_up_after: float = 3 * 86_400.0
    timeout: float = 10.0

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery stays reserved: its wait for a worker and its own request (each request
        connects and reads, each up to the timeout) and room to record it. A process killed outright leaves its
        deliveries to others after this."""
        return self.timeout * 2 * BACKLOG + 10.0


@dataclass
class Summary:
    """What this run did with its attempts."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: str | None) -> None:
        with self.lock:
            if status == "delivered":
                self.delivered += 1
            elif status == "failed":
                self.failed += 1
            elif status == "pending":
                self.retrying += 1


def retry_delay(attempt: int, base: float, *, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next try after failed attempt number ``attempt`` (1, 2, …): base × 2^(n−1), ±20 %, ≤ 2 h."""
    exponent = min(attempt - 1, 64)  # 2^64 × any base is past the cap already
    delay = min(base * 2.0**exponent, MAX_RETRY_DELAY)
    return min(delay * rng(1 - JITTER, 1 + JITTER), MAX_RETRY_DELAY)


class Sender:
    """POSTs straight on urllib3 connection pools that one ``requests`` adapter sets up.

    The pools are the ones ``requests`` itself would use (TLS verification and CA bundle,
    pool size, no retries), found once per endpoint URL; each POST then skips the work
    ``requests`` adds around a call (URL parsing and preparing, cookie jars, hooks,
    redirect handling, environment lookups), which at delivery rates was most of
    deliver's CPU time. No proxy from the environment: no place for the shop's events.
    """

    def __init__(self, concurrency: int) -> None:
        from requests.adapters import HTTPAdapter

        self._adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency, max_retries=0)
        self._targets: dict[str, tuple[HTTPConnectionPool, str, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def target(self, url: str) -> tuple[HTTPConnectionPool, str, dict[str, str]]:
        """The pool for ``url``, its request target (path and query) and the Basic auth its user info asks for."""
        found = self._targets.get(url)
        if found is None:
            import requests
            from requests.utils import get_auth_from_url
            from urllib3 import HTTPConnectionPool
            from urllib3.util import make_headers, parse_url

            with self._lock:
                probe = requests.Request("POST", url).prepare()
                pool = self._adapter.get_connection_with_tls_context(probe, True, proxies={}, cert=None)
                self._adapter.cert_verify(pool, str(probe.url), True, None)  # type: ignore[no-untyped-call]
                assert isinstance(pool, HTTPConnectionPool)
                user, password = get_auth_from_url(str(probe.url))
                auth = make_headers(basic_auth=f"{user}:{password}") if user or password else {}
                found = (pool, parse_url(str(probe.url)).request_uri, auth)
                self._targets[url] = found
        return found

    def close(self) -> None:
        self._adapter.close()


def post(sender: Sender, delivery: store.Delivery, body: str, timeout: float) -> store.Attempt:
    """One signed POST of ``body``; what came of it (never raises for the receiver's failures)."""
    import urllib3.exceptions as u3
    from urllib3 import Timeout

    now = time.time()
    data = body.encode()
    code: int | None = None
    error: str | None = None
    started = time.monotonic()
    try:
        pool, target, auth = sender.target(delivery.url)
        headers = signing.headers(delivery.secrets, delivery.event_id, int(now), body)
        headers.update(auth)
        headers["content-length"] = str(len(data))
        response = pool.urlopen("POST", target, body=data, headers=headers, retries=False, redirect=False,
                                assert_same_host=False, preload_content=False, decode_content=False,
                                timeout=Timeout(connect=timeout, read=timeout))
        code = response.status
        _let_go(response)
    except u3.NewConnectionError as exc:  # before TimeoutError: urllib3 makes it a kind of connect timeout
        error = _connection_error(exc)
    except u3.TimeoutError:
        error = f"no answer within {timeout:g} s"
    except (u3.ProtocolError, u3.SSLError, OSError) as exc:
        error = _connection_error(exc)
    except (u3.HTTPError, ValueError) as exc:
        error = f"request failed: {exc.__class__.__name__}"
    duration = int((time.monotonic() - started) * 1000)
    if code is not None and not 200 <= code < 300:
        error = f"HTTP {code}"
    ok = code is not None and 200 <= code < 300
    return store.Attempt(status_code=code, duration_ms=duration, error=error, delivered=ok, gone=code == 410,
                         started_at=datetime.fromtimestamp(now, UTC))


def _let_go(response: BaseHTTPResponse) -> None:
    """The answer is not used: read a little of it, then the connection goes back to the pool (or, if more is
    left, or reading it failed, is closed)."""
    import urllib3.exceptions as u3

    try:
        response.read(65_536, decode_content=False)
    except (u3.HTTPError, OSError):
        pass  # the status line is the answer; the connection goes
    finally:
        if not response.closed:
            response.close()
        response.release_conn()


def _connection_error(exc: BaseException) -> str:
    """The failure in our own words: the exception's text repeats the URL (and any password in it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset by the receiver"
        seen = seen.__cause__ or seen.__context__ or next(
            (a for a in seen.args if isinstance(a, BaseException)), None)
    text = str(exc)
    if "RemoteDisconnected" in text or "closed connection without response" in text:
        return "the receiver closed the connection without an answer"
    if "Name or service not known" in text or "nodename nor servname" in text or "resolve" in text:
        return "the host name did not resolve"
    return f"connection failed ({exc.__class__.__name__})"


def bodies(conn: Connection, claimed: list[store.Delivery]) -> list[str | store.Attempt]:
    """Each delivery's body: the stored one, or rendered now and stored (the first to store wins), in one go.

    An event that cannot be rendered (a snapshot no longer readable, say) gets a failed
    attempt instead, retried like any other, not the end of the process; a lost
    PostgreSQL still is.
    """
    missing = sorted({d.event_id for d in claimed if d.body is None})
    made: dict[str, str | store.Attempt] = {}
    if missing:
        try:
            made.update(_render(conn, missing))
        except Exception as exc:  # noqa: BLE001 - re-raised when PostgreSQL is lost
            _unless_connection_lost(exc)
            for event_id in missing:  # one unreadable snapshot spoils a batch: find which, one by one
                try:
                    made.update(_render(conn, [event_id]))
                except Exception as one:  # noqa: BLE001 - as above
                    _unless_connection_lost(one)
                    made[event_id] = _unrendered(one)
    return [d.body if d.body is not None else made.get(d.event_id) or _unrendered(None) for d in claimed]


def _render(conn: Connection, event_ids: list[str]) -> dict[str, str | store.Attempt]:
    from midpay.outbox.events import render

    events = outbox.events_by_id(conn, event_ids)
    made: dict[str, str | store.Attempt] = {}
    rendered: dict[str, str] = {}
    for event in events:
        try:
            rendered[event.id] = render(event)
        except Exception as exc:  # noqa: BLE001 - a document that cannot be made is this event's failure only
            made[event.id] = _unrendered(exc)
    made.update(outbox.store_bodies(conn, rendered) if rendered else {})
    return made


def _unless_connection_lost(exc: Exception) -> None:
    from midpay.db import map_error

    if map_error(exc) is not None:
        raise exc


def _unrendered(exc: BaseException | None) -> store.Attempt:
    reason = "the event is gone" if exc is None else exc.__class__.__name__
    return store.Attempt(status_code=None, duration_ms=0, error=f"the event could not be rendered: {reason}",
                         delivered=False, gone=False)


Body = str | store.Attempt  # what a worker is handed: the body to send, or the attempt that rendering it was
OnAttempt = Callable[[store.Delivery, store.Attempt, "str | None"], None]


class Deliverer:
    """One `deliver` process: the claiming loop, its workers, the LISTEN connection; ``stop`` winds it down."""

    def __init__(self, url: str, options: Options, *, on_attempt: OnAttempt | None = None) -> None:
        self.url = url
        self.options = options
        self.on_attempt = on_attempt
        self.summary = Summary()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Claim nothing more; the requests in flight are finished and recorded, then ``run`` returns."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> Summary:
        """Send until stopped (or, with ``once``, until nothing that was due at the start is left); the summary."""
        from midpay.db import connect, open_pool

        conn = connect(self.url, autocommit=True)  # every statement of db/deliveries.py is its own transaction
        pool = open_pool(self.url, self.options.concurrency)
        sender = Sender(self.options.concurrency)
        listener = None if self.options.once else threading.Thread(target=self._listen, daemon=True)
        executor = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="midpay-deliver")
        try:
            if listener is not None:
                listener.start()
            recorder = Recorder(pool, give_up_after=self.options.give_up_after)
            self._loop(conn, executor, lambda d, b: self._send(recorder, sender, d, b))
        finally:
            self.stop()
            executor.shutdown(wait=True, cancel_futures=True)
            sender.close()
            pool.close()
            conn.close()
        return self.summary

    def _loop(
        self, conn: Connection, executor: ThreadPoolExecutor, send: Callable[[store.Delivery, Body], None]
    ) -> None:
        opts = self.options
        due_before = store.database_clock(conn) if opts.once else None
        inflight: dict[Future[None], store.Delivery] = {}
        statistics_checked = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            if time.monotonic() - statistics_checked >= STATISTICS_SECONDS:
                store.refresh_statistics(conn)
                statistics_checked = time.monotonic()
            inflight = _reap(inflight)
            room = BACKLOG * opts.concurrency - len(inflight)
            claimed = store.claim_due(conn, limit=room, lease_seconds=opts.lease_seconds,
                                      due_before=due_before) if len(inflight) <= opts.concurrency else []
            made = bodies(conn, claimed)
            inflight.update((executor.submit(send, d, b), d) for d, b in zip(claimed, made, strict=True))
            if opts.once and not inflight:
                return
            if len(inflight) > opts.concurrency:  # enough in hand: on when a worker finishes
                self._wake.wait(POLL_SECONDS)
            elif len(claimed) < room:  # nothing more due now: on at a NOTIFY, a finished worker, a retry due
                next_due = None if opts.once else store.seconds_to_next_due(conn)
                self._wake.wait(POLL_SECONDS if next_due is None else min(POLL_SECONDS, next_due))
        unsent = [d for f, d in inflight.items() if f.cancel()]  # claimed, not started: not sent after a stop
        if unsent:
            store.release(conn, unsent)
        wait(inflight)
        _reap(inflight)

    def _send(self, recorder: Recorder, sender: Sender, delivery: store.Delivery, body: Body) -> None:
        opts = self.options
        try:
            attempt = post(sender, delivery, body, opts.timeout) if isinstance(body, str) else body
            status = recorder.record(delivery, attempt, retry_delay(delivery.attempts + 1, opts.retry_base))
            self.summary.count(status)
            if self.on_attempt is not None:
                self.on_attempt(delivery, attempt, status)
        finally:
            self._wake.set()

    def _listen(self) -> None:
        """Wake the loop on every NOTIFY midpay_outbox; without the connection, the loop's polling is left."""
        from midpay.db import connect

        try:
            conn = connect(self.url, autocommit=True)
        except Exception:  # noqa: BLE001 - polling goes on without it; the loop reports a lost database itself
            return
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            while not self._stopping.is_set():
                for _ in conn.notifies(timeout=POLL_SECONDS):
                    self._wake.set()
                    if self._stopping.is_set():
                        break
        except Exception:  # noqa: BLE001 - as above: a lost listener leaves the once-a-second poll
            return
        finally:
            conn.close()


def _reap(inflight: dict[Future[None], store.Delivery]) -> dict[Future[None], store.Delivery]:
    """The deliveries still being sent or waiting for a worker; a worker's failure (PostgreSQL lost) is raised
    here, in the loop."""
    for f in inflight:
        if f.done() and not f.cancelled():
            f.result()
    return {f: d for f, d in inflight.items() if not f.done()}


def deliver(url: str, options: Options, *, on_attempt: OnAttempt | None = None,
            started: Callable[[Deliverer], None] | None = None) -> Summary:
    """Run a deliverer over ``url`` (``started`` gets it first, to wire ``stop`` to a signal)."""
    deliverer = Deliverer(url, options, on_attempt=on_attempt)
    if started is not None:
        started(deliverer)
    return deliverer.run()
