"""How many connections PostgreSQL sees at once: the tests of midpay's connection bounds."""

from __future__ import annotations

import threading

import psycopg


class PeakConnections:
    """The most connections to the database of ``url`` seen at once (pg_stat_activity, polled until stopped).

    The sampler's own connection is not counted; with ``application_name``, only the
    connections that gave that name are.
    """

    def __init__(self, url: str, *, application_name: str | None = None) -> None:
        self.url, self.application_name = url, application_name
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND (%(name)s::text IS NULL OR application_name = %(name)s)",
                    {"name": self.application_name},
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self.samples += 1
                self._stop.wait(0.01)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
