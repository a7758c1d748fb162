"""``gunicorn midpay.webhook:app``: the name deployments mount, kept since the app moved to ``midpay.web.app``.

Nothing lives here: ``app`` and ``create_app`` are the web package's own.
"""

from __future__ import annotations

from midpay.web.app import __getattr__, create_app  # noqa: F401 - the module-level __getattr__ makes `app`

__all__ = ["create_app"]  # and ``app``, made on first use by ``midpay.web.app.__getattr__``
