"""Sending the sandbox's notifications as Midtrans does: a file each, and POSTs with retries.

Each notification is written to ``notify_dir`` at once (``<order>-<status>-<n>.json``)
and POSTed to ``notify_url`` (plus or instead of the URLs a charge named in
``X-Append-Notification`` / ``X-Override-Notification``, up to 3) by a few delivery
threads, so an API answer never waits for a notification target.

Retries follow Midtrans' table, by the answer of the latest attempt:

    2xx            delivered, no retry
    500            retried once
    503            retried four times
    400, 404       retried twice
    301, 302, 303  no retry (Midtrans does not follow them)
    307, 308       followed with POST and the same body, at most 5 hops, within the attempt
    anything else, a timeout or a refused connection: retried five times

Retry n waits (2 min, 10 min, 30 min, 90 min, 210 min)[n-1] after the previous attempt,
times ``retry_scale`` (0.001 makes the first wait 120 ms); the sandbox uses these upper
bounds with no random shift. Each attempt (and each redirect hop) is recorded in
``stats()["deliveries"]``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urljoin

from midpay.midtrans.notifications import JAKARTA

from .shapes import safe_file_stem
from .state import Notice
from .stats import Stats

log = logging.getLogger(__name__)

NOTIFY_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "Veritrans"}
RETRY_DELAYS = (120.0, 600.0, 1800.0, 5400.0, 12600.0)
MAX_REDIRECTS = 5
WORKERS = 4


def retries_for(status: int | None) -> int:
    """How many retries Midtrans makes after an attempt answered ``status`` (None: no answer)."""
    if status is None:
        return 5
    if 200 <= status < 300 or status in (301, 302, 303):
        return 0
    return {500: 1, 503: 4, 400: 2, 404: 2}.get(status, 5)


@dataclass
class Delivery:
    """One notification on its way to one URL."""

    notice: Notice
    url: str
    body: bytes
    attempt: int = 1  # the number of the next attempt; 1 is the first delivery
    first_done: threading.Event = field(default_factory=threading.Event)


class Notifier:
    """Writes and delivers notices; ``__call__`` returns the deliveries it scheduled."""

    def __init__(
        self,
        *,
        stats: Stats,
        notify_url: str | None,
        notify_dir: Path | None,
        retry_scale: float = 1.0,
        timeout: float = 15.0,
    ) -> None:
        if isinstance(retry_scale, bool) or not isinstance(retry_scale, int | float) or retry_scale < 0:
            raise ValueError("notify_retry_scale must be a number >= 0")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError("notify_timeout must be a number > 0")
        self.stats = stats
        self.notify_url = notify_url
        self.notify_dir = notify_dir
        self.retry_scale = float(retry_scale)
        self.timeout = float(timeout)
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._local = threading.local()

    def __call__(self, notices: Sequence[Notice]) -> list[Delivery]:
        deliveries = []
        for notice in notices:
            if self.notify_dir is not None:
                self._write(self.notify_dir, notice)
            targets = notice.override if notice.override is not None else (self.notify_url, *notice.append)
            for url in dict.fromkeys(u for u in targets if u):
                deliveries.append(Delivery(notice, url, json.dumps(notice.body).encode()))
        if deliveries:
            with self._cond:
                if self._stopping:
                    return []
                self._start_workers()
                for delivery in deliveries:
                    self._push(delivery, 0.0)
        return deliveries

    def wait_first(self, deliveries: Sequence[Delivery]) -> None:
        """Until each delivery's first attempt has its answer (or failed)."""
        for delivery in deliveries:
            delivery.first_done.wait(self.timeout * (MAX_REDIRECTS + 1) + 5)

    def idle(self, timeout: float) -> bool:
        """Wait until no delivery is scheduled or under way; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    def start(self) -> None:
        with self._cond:
            self._stopping = False

    def stop(self) -> None:
        """Drop scheduled retries; attempts under way end within their timeout (daemon threads)."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            workers, self._workers = self._workers, []
            self._cond.notify_all()
        deadline = time.monotonic() + 0.5  # a worker inside a POST finishes on its own (daemon thread)
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- delivery threads --

    def _start_workers(self) -> None:  # self._cond held
        while len(self._workers) < WORKERS:
            worker = threading.Thread(target=self._work, name="midpay-sandbox-notify", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _push(self, delivery: Delivery, delay: float) -> None:  # self._cond held
        heapq.heappush(self._queue, (time.monotonic() + delay, next(self._order), delivery))
        self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        delivery = heapq.heappop(self._queue)[2]
                        self._in_flight += 1
                        break
                    self._cond.wait(self._queue[0][0] - now if self._queue else None)
            try:
                self._deliver(delivery)
            except Exception:  # a sandbox bug must not kill the delivery thread
                log.exception("sandbox notification delivery failed")
            finally:
                delivery.first_done.set()
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _deliver(self, delivery: Delivery) -> None:
        url = delivery.url
        for hop in range(MAX_REDIRECTS + 1):
            status, error, location = self._post(url, delivery.body)
            record = {
                "order_id": delivery.notice.order_id,
                "transaction_status": delivery.notice.status,
                "notification": delivery.notice.number,
                "url": url,
                "attempt": delivery.attempt,
                "hop": hop,
                "at": datetime.now(JAKARTA).isoformat(timespec="milliseconds"),
                "http_status": status,
                "error": error,
                "redirected_to": None,
                "next_retry_in": None,
            }
            if status in (307, 308) and location:
                if hop == MAX_REDIRECTS:
                    record["error"] = f"more than {MAX_REDIRECTS} redirects"
                    break
                url = record["redirected_to"] = urljoin(url, location)
                self.stats.delivery(record, None)
                continue
            break
        delivered = status is not None and 200 <= status < 300
        final: str | None = "posted" if delivered else "failed"
        too_many_hops = status in (307, 308) and record["error"] is not None
        retries_done = delivery.attempt - 1
        if not delivered and not too_many_hops and retries_done < retries_for(status):
            record["next_retry_in"] = delay = RETRY_DELAYS[retries_done] * self.retry_scale
            final = None
            delivery.attempt += 1
            with self._cond:
                if not self._stopping:
                    self._push(delivery, delay)
        if final == "failed":
            log.warning("sandbox gave up on the notification of %r to %s", delivery.notice.order_id, delivery.url)
        self.stats.delivery(record, final)

    def _post(self, url: str, body: bytes) -> tuple[int | None, str | None, str | None]:
        """(HTTP status, error, Location) of one POST; no redirect is followed here."""
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            with session.post(
                url, data=body, headers=NOTIFY_HEADERS, timeout=(self.timeout, self.timeout), allow_redirects=False
            ) as response:
                return response.status_code, None, response.headers.get("Location")
        except requests.Timeout:
            return None, "timeout", None
        except requests.RequestException as exc:
            return None, type(exc).__name__, None

    def _write(self, directory: Path, notice: Notice) -> None:
        path = directory / f"{safe_file_stem(notice.order_id)}-{notice.status}-{notice.number}.json"
        partial = path.with_name(path.name + ".part")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(notice.body, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, path)  # readers never see half a file
        except OSError as exc:
            log.warning("sandbox could not write %s: %s", path, exc.strerror)
            self.stats.bump("notifications", "failed")
            return
        self.stats.bump("notifications", "written")
