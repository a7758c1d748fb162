"""``midpay.webhook:app``, the name deployments mounted before the web package, still finds the one app."""

from __future__ import annotations

import pytest

from tests.conftest import SERVER_KEY


def test_the_old_name_gives_the_web_packages_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://midpay@127.0.0.1:9/none")
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", SERVER_KEY)
    from midpay import webhook
    from midpay.web import app as web_app

    monkeypatch.setattr(web_app, "_default", None)  # made here, and forgotten after
    assert webhook.create_app is web_app.create_app
    mounted = webhook.app
    assert isinstance(mounted, web_app.WebhookApp)
    assert mounted is web_app.app  # made once, whichever name asked first
    mounted.close()
