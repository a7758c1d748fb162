"""midpay.sandbox.shapes: safe file names for notifications, and the QRIS payload and QR image of a charge."""

from __future__ import annotations

import requests

from midpay.sandbox import qris_payload, safe_file_stem
from tests.sandbox.conftest import Client


def test_safe_file_stems_stay_apart() -> None:
    assert safe_file_stem("order-1") == "order-1"
    assert safe_file_stem("a/b") != safe_file_stem("a_b")
    assert "/" not in safe_file_stem("../../etc/passwd") and not safe_file_stem("../x").startswith(".")


def test_qr_code_and_qris_payload(client: Client) -> None:
    charged = client.charge("q-1", 789000, "qris")
    qr = charged["qr_string"]
    assert qr == qris_payload(charged["transaction_id"], 789000)
    assert qr.startswith("000201010212") and "5406789000.00" not in qr and "5409789000.00" in qr
    assert qr[-8:-4] == "6304"
    url = charged["actions"][0]["url"]
    with requests.get(url, timeout=5) as png:  # hotlinked: no auth
        assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
