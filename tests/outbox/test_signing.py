"""The Standard Webhooks signature: the spec's own example, both real packages, a rotating secret."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from midpay.outbox import signing

from .receivers import npm

# The example in the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
NEW = "whsec_" + base64.b64encode(bytes(range(24))).decode()
BODY = '{"id":"evt_1","type":"payment.paid","data":{"order_id":"ORD-é"}}'


def test_the_specification_example() -> None:
    assert signing.sign([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_pypi_standardwebhooks_verifies_and_refuses_a_changed_body() -> None:
    now = int(time.time())
    headers = signing.headers([NEW], "evt_1", now, BODY)
    assert Webhook(NEW).verify(BODY.encode(), headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace("paid", "refund").encode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY.encode(), headers)


def test_while_a_secret_rotates_either_one_verifies() -> None:
    headers = signing.headers([NEW, OLD], "evt_1", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (NEW, OLD):
        assert Webhook(secret).verify(BODY.encode(), headers)["id"] == "evt_1"


def test_npm_standardwebhooks_verifies_both_signatures_of_a_rotation() -> None:
    here = npm.installed()
    node = shutil.which("node")
    assert node is not None
    headers = signing.headers([NEW, OLD], "evt_1", int(time.time()), BODY)
    request = json.dumps({"body": BODY, "headers": headers})
    for secret, expected in ((NEW, 0), (OLD, 0), ("whsec_" + base64.b64encode(b"x" * 24).decode(), 1)):
        proc = subprocess.run([node, "verify.js", secret], cwd=here, input=request, capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == expected, proc.stderr
        if expected == 0:
            assert proc.stdout.strip() == "evt_1"


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError):
        signing.sign(["whsec_not base64!"], "evt_1", 1, BODY)
