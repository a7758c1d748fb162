"""midpay.sandbox.reqlog: serve's request log escapes what it shows and never blocks the server."""

from __future__ import annotations

import threading

from tests.helpers import wait_until


def test_request_log_escapes_and_never_blocks() -> None:
    from midpay.sandbox.reqlog import QUEUE_SIZE, RequestLog, shown_path

    assert shown_path("/v2/a%2Fb/status?key=1") == "/v2/a%2Fb/status"
    assert shown_path("/v2/\x1b[31mx\x00/status") == "/v2/\\x1b[31mx\\x00/status"
    gate = threading.Event()
    written: list[str] = []

    def slow_write(line: str) -> None:  # a reader that does not read
        gate.wait(10)
        written.append(line)

    journal = RequestLog(slow_write)
    journal.start()
    for _ in range(QUEUE_SIZE + 50):  # never blocks, however full
        journal.record("GET", "/v2/x/status", 200, "201", 0.001)
    gate.set()
    wait_until(lambda: len(written) >= QUEUE_SIZE, 10, what="the queued lines to be written")
    journal.record("GET", "/v2/last/status", None, None, 0.5)
    journal.stop()
    assert any("request log lines dropped" in line for line in written)
    assert written[-1].endswith("GET /v2/last/status - - 500.0ms")
