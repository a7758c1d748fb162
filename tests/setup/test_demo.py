"""`midpay demo`: a notification arrives over HTTP at a real `midpay listen`, and the payment's
events arrive, signed, at the shop's app it stands up (a receiver that refuses what does not verify)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from midpay import embedded
from midpay.outbox import endpoints, signing
from midpay.setup.demo_events import ShopApp, signature_verifies
from tests.conftest import REPO

# The example in the Standard Webhooks specification: the demo's check agrees with it, not only with midpay.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SPEC_BODY = b'{"test": 2432232314}'


def test_the_demo_delivers_its_notification_to_listen_and_its_events_to_the_shop(tmp_path: Path) -> None:
    # Outside pytest's own directory, which is closed to the user the server runs as under root.
    root = Path(tempfile.mkdtemp(prefix="midpay-listen-demo-"))
    root.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"}
    env.update(MIDPAY_HOME=str(root / "home"), PYTHONPATH=str(REPO), COLUMNS="120", NO_COLOR="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "midpay", "demo"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        log = (root / "home" / "demo" / "listen.log").read_text() if proc.returncode == 0 else ""
    finally:  # the demo stops the PostgreSQL it started; should it fail to, the test does
        embedded.stop(root / "home" / "demo")
        shutil.rmtree(root, ignore_errors=True)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    notified = "POST /midtrans/notification answered 200 (applied, pending -> settlement)"
    assert f"Midtrans notified it over HTTP: {notified}" in out
    assert '"outcome": "applied"' in log
    assert log.rstrip().endswith('"message": "Shutting down: Master"}')  # stopped, not left running

    order_id = re.search(r"midpay status (\S+)", out)
    assert order_id is not None
    got = re.findall(r"the shop's app received (\S+) for order (\S+), sequence (\d+): signature verified", out)
    # Every change of the payment, in its order; payment.paid with the change that set paid_at.
    assert got == [
        ("payment.pending", order_id[1], "1"),
        ("payment.settlement", order_id[1], "2"),
        ("payment.paid", order_id[1], "3"),
    ], out[-3000:]
    assert "NOT verified" not in out
    assert "deliver: 3 delivered, 0 retrying, 0 failed" in out
    assert "midpay endpoints add http://127.0.0.1:" in out and "  midpay deliver --once" in out
    assert "whsec_" not in out  # the secret went to the receiver, never to the screen


def test_the_demo_check_verifies_the_specification_example_and_refuses_a_change() -> None:
    now = int(SPEC_HEADERS["webhook-timestamp"])
    assert signature_verifies(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now)
    assert not signature_verifies(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY.replace(b"4", b"5"), now)
    assert not signature_verifies(SPEC_SECRET, {**SPEC_HEADERS, "webhook-id": "msg_other"}, SPEC_BODY, now)
    assert not signature_verifies(endpoints.new_secret(), SPEC_HEADERS, SPEC_BODY, now)
    assert not signature_verifies(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now + 301)  # a replay, too late
    assert not signature_verifies(SPEC_SECRET, {**SPEC_HEADERS, "webhook-timestamp": "soon"}, SPEC_BODY, now)
    rotating = {**SPEC_HEADERS, "webhook-signature": "v1,bm90IGl0 " + SPEC_HEADERS["webhook-signature"]}
    assert signature_verifies(SPEC_SECRET, rotating, SPEC_BODY, now)  # either of two signatures will do


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    with requests.post(url, data=body, headers=headers, timeout=5) as response:
        return response.status_code


def test_the_shop_app_refuses_a_bad_signature_and_keeps_an_event_once() -> None:
    secret = endpoints.new_secret()
    body = json.dumps({"id": "evt_1", "type": "payment.paid", "sequence": 3, "data": {"order_id": "[b]ORD-1"}})
    good = signing.headers([secret], "evt_1", int(time.time()), body)
    forged = signing.headers([endpoints.new_secret()], "evt_1", int(time.time()), body)
    with ShopApp() as shop:
        assert _post(shop.url, body.encode(), good) == 401  # no endpoint yet: nothing can verify
        shop.secret = secret
        assert _post(shop.url, body.encode(), forged) == 401
        assert _post(shop.url, body.encode(), good) == 204
        assert _post(shop.url, body.encode(), good) == 204  # a retry: acknowledged, kept once
        got = shop.arrivals()
    assert [(a.type, a.order_id, a.sequence, a.verified) for a in got] == [
        ("payment.paid", "[b]ORD-1", "3", False),
        ("payment.paid", "[b]ORD-1", "3", False),
        ("payment.paid", "[b]ORD-1", "3", True),
    ]
