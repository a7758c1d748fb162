"""A PostgreSQL of one test (or module) alone, on midpay's embedded layer, that the test may reconfigure or kill.

Never the session's server: a test that kills its postmaster or changes its
authentication leaves every other test alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import psycopg

from midpay import embedded
from tests.helpers import wait_until


class PrivatePostgres:
    """An embedded PostgreSQL in its own temporary home."""

    def __init__(self, prefix: str = "midpay-own-pg-") -> None:
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.home.chmod(0o711)  # as root the server runs as nobody, who must pass through
        try:
            self.server = embedded.start(self.home)
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise

    @property
    def pgdata(self) -> Path:
        return embedded.data_dir(self.home)

    def url(self, database: str = "postgres") -> str:
        return embedded.url(self.server, database)

    def kill(self) -> None:
        """SIGKILL the postmaster, and wait until it no longer answers."""
        assert self.server.pid is not None
        os.kill(self.server.pid, signal.SIGKILL)
        wait_until(self._gone, 10, what="the killed server to stop answering")

    def _gone(self) -> bool:
        try:
            psycopg.connect(self.url(), connect_timeout=1).close()
        except psycopg.OperationalError:
            return True
        return False

    def close(self) -> None:
        try:
            embedded.stop(self.home)
        except Exception:  # noqa: BLE001, S110 - it may have been killed on purpose
            pass
        socket_dir = self.server.socket_dir
        if socket_dir is not None and socket_dir != self.pgdata and socket_dir.name.startswith("midpay-pg-"):
            shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
