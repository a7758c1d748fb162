"""`midpay deliver`: send the outbox's due deliveries to the shop's endpoints, signed, with retries.

One loop claims due deliveries (db/deliveries.py: leased, one order's events in
``sequence`` order per endpoint) as far as there are free workers; each worker renders
the event's body once (stored, so every retry sends the same bytes), signs it
(signing.py), POSTs it over the process's one ``requests`` session and records the
attempt. A 2xx delivers; anything else retries after ``retry_base`` × 2^(n−1) s (±20 %,
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
from midpay.outbox import signing
from midpay.outbox.deliver_record import Recorder

if TYPE_CHECKING:
    import requests

    from midpay.db.core import Connection

MAX_RETRY_DELAY = 7200.0
JITTER = 0.2
POLL_SECONDS = 1.0
STATISTICS_SECONDS = 10.0  # how often the loop checks that the claim's planner statistics are current
CHANNEL = "midpay_outbox"


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
        """How long a claimed delivery stays reserved: the request (connect and read, each up to the timeout)
        and room to record it. A process killed outright leaves its deliveries to others after this."""
        return self.timeout * 2 + 10.0


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


def new_session(concurrency: int) -> requests.Session:
    """The process's one HTTP session: a connection pool as large as the number of workers, no retries of its own."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # a proxy from the environment is no place for the shop's events
    return session


def post(session: requests.Session, delivery: store.Delivery, body: str, timeout: float) -> store.Attempt:
    """One signed POST of ``body``; what came of it (never raises for the receiver's failures)."""
    import requests

    now = time.time()
    headers = signing.headers(delivery.secrets, delivery.event_id, int(now), body)
    started = time.monotonic()
    code: int | None = None
    error: str | None = None
    try:
        with session.post(delivery.url, data=body.encode(), headers=headers, timeout=timeout,
                          allow_redirects=False, stream=True) as response:
            code = response.status_code
            response.raw.read(65_536, decode_content=False)  # the answer is not used: read a little, then let go
    except requests.Timeout:
        error = f"no answer within {timeout:g} s"
    except requests.ConnectionError as exc:
        error = _connection_error(exc)
    except requests.RequestException as exc:
        error = f"request failed: {exc.__class__.__name__}"
    duration = int((time.monotonic() - started) * 1000)
    if code is not None and not 200 <= code < 300:
        error = f"HTTP {code}"
    ok = code is not None and 200 <= code < 300
    return store.Attempt(status_code=code, duration_ms=duration, error=error, delivered=ok, gone=code == 410,
                         started_at=datetime.fromtimestamp(now, UTC))


def _connection_error(exc: BaseException) -> str:
    """The failure in our own words: the exception's text repeats the URL (and any password in it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset by the receiver"
        seen = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and isinstance(
            seen.args[0], BaseException) else None)
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
    from midpay.db import outbox
    from midpay.outbox.events import render

    events = outbox.events_by_id(conn, event_ids)
    made: dict[str, str | store.Attempt] = {}
    rendered: dict[str, str] = {}
    for event in events:
        try:
            rendered[event.id] = render(event)
        except Exception as exc:  # noqa: BLE001 - a document that cannot be made is this event's failure only
            made[event.id] = _unrendered(exc)
    made.update(store.store_bodies(conn, rendered) if rendered else {})
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
        session = new_session(self.options.concurrency)
        listener = None if self.options.once else threading.Thread(target=self._listen, daemon=True)
        executor = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="midpay-deliver")
        try:
            if listener is not None:
                listener.start()
            recorder = Recorder(pool, give_up_after=self.options.give_up_after)
            self._loop(conn, executor, lambda d, b: self._send(recorder, session, d, b))
        finally:
            self.stop()
            executor.shutdown(wait=True)
            session.close()
            pool.close()
            conn.close()
        return self.summary

    def _loop(
        self, conn: Connection, executor: ThreadPoolExecutor, send: Callable[[store.Delivery, Body], None]
    ) -> None:
        opts = self.options
        due_before = store.database_clock(conn) if opts.once else None
        inflight: set[Future[None]] = set()
        statistics_checked = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            if time.monotonic() - statistics_checked >= STATISTICS_SECONDS:
                store.refresh_statistics(conn)
                statistics_checked = time.monotonic()
            inflight = _reap(inflight)
            free = opts.concurrency - len(inflight)
            claimed = store.claim_due(conn, limit=free, lease_seconds=opts.lease_seconds,
                                      due_before=due_before) if free else []
            inflight.update(executor.submit(send, d, b) for d, b in zip(claimed, bodies(conn, claimed), strict=True))
            if opts.once and not inflight:
                return
            timeout = POLL_SECONDS
            if len(claimed) < free and not opts.once:
                next_due = store.seconds_to_next_due(conn)
                timeout = POLL_SECONDS if next_due is None else min(POLL_SECONDS, next_due)
            if len(claimed) < free or not claimed:
                self._wake.wait(timeout)
        wait(inflight)
        _reap(inflight)

    def _send(self, recorder: Recorder, session: requests.Session, delivery: store.Delivery, body: Body) -> None:
        opts = self.options
        try:
            attempt = post(session, delivery, body, opts.timeout) if isinstance(body, str) else body
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


def _reap(inflight: set[Future[None]]) -> set[Future[None]]:
    """The futures still running; a worker's failure (PostgreSQL lost) is raised here, in the loop."""
    running = {f for f in inflight if not f.done()}
    for f in inflight - running:
        f.result()
    return running


def deliver(url: str, options: Options, *, on_attempt: OnAttempt | None = None,
            started: Callable[[Deliverer], None] | None = None) -> Summary:
    """Run a deliverer over ``url`` (``started`` gets it first, to wire ``stop`` to a signal)."""
    deliverer = Deliverer(url, options, on_attempt=on_attempt)
    if started is not None:
        started(deliverer)
    return deliverer.run()
