"""An endpoint down for good: its deliveries end ``failed``, another endpoint's still arrive, and
`midpay deliveries resend --failed` has them delivered once it is back.

"Down" is a refused connection: the endpoint's URL names a loopback port nobody listens
on; "back" is a Python receiver started on that very port afterwards. Both receivers
verify every request with PyPI's ``standardwebhooks``.
"""

from __future__ import annotations

import socket
from typing import Any

from ..helpers import wait_until
from .receivers.python_receiver import PythonReceiver
from .receivers.support import add_endpoint, attempts, deliveries, in_order, new_secret, pay

TINY = ("--retry-base", "0.01", "--give-up-after", "0.3")
ORDERS = ["ORD-DOWN-1", "ORD-DOWN-2"]
EXPECTED = sorted((o, n) for o in ORDERS for n in (1, 2, 3))  # pending, settlement, paid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _statuses(url: str, endpoint: str) -> set[str]:
    return {row["status"] for row in deliveries(url) if row["endpoint_id"] == endpoint}


def test_a_down_endpoint_fails_the_others_arrive_and_resend_failed_delivers_once_it_is_back(
    db_url: str, cli: Any
) -> None:
    port = _free_port()
    down_secret, up_secret = new_secret(), new_secret()
    with PythonReceiver([up_secret]) as up:
        down = add_endpoint(db_url, f"http://127.0.0.1:{port}/hooks/midpay", down_secret)
        other = add_endpoint(db_url, up.url, up_secret)
        pay(db_url, ORDERS)
        # Retried every few hundredths of a second until 0.3 s after the event, then failed for good.
        wait_until(lambda: cli("deliver", "--once", *TINY).exit_code in (0, 1) and _statuses(db_url, down)
                   == {"failed"}, 10, what="the down endpoint's deliveries failed for good")
        got = up.received()
    assert _statuses(db_url, other) == {"delivered"}
    assert sorted((g["order"], g["sequence"]) for g in got) == EXPECTED
    assert all(g["verified"] and g["answer"] == 204 for g in got) and in_order(got)
    refused = [a for a in attempts(db_url) if a["endpoint_id"] == down]
    assert len(refused) >= 6 and {a["error"] for a in refused} == {"connection refused"}

    listed = cli("deliveries", "--failed", "--json")
    assert listed.exit_code == 0 and {d["endpoint_id"] for d in listed.json()["deliveries"]} == {down}

    with PythonReceiver([down_secret], port=port) as back:
        resent = cli("deliveries", "resend", "--failed", "--json")
        assert resent.exit_code == 0, resent
        assert len(resent.json()["queued"]) == 6 and resent.json()["in_flight"] == []
        result = cli("deliver", "--once", "--json", *TINY)
        came_back = back.received()
    assert result.exit_code == 0, result
    assert result.json()["summary"] == {"delivered": 6, "retrying": 0, "failed": 0}
    assert sorted((g["order"], g["sequence"]) for g in came_back) == EXPECTED  # each once, none lost
    assert all(g["verified"] and g["answer"] == 204 for g in came_back) and in_order(came_back)
    assert _statuses(db_url, down) == {"delivered"} and _statuses(db_url, other) == {"delivered"}
    assert len(up.received()) == 6  # the endpoint that was up got nothing again
    assert cli("deliveries", "--failed", "--json").json() == {"deliveries": []}
