"""Sending the sandbox's notifications: written to a directory and POSTed to a URL."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .shapes import safe_file_stem
from .state import Notice, Stats

log = logging.getLogger(__name__)

NOTIFY_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "Veritrans"}


class Notifier:
    """Delivers each notice to ``notify_dir`` (one file each) and ``notify_url``."""

    def __init__(self, *, stats: Stats, notify_url: str | None, notify_dir: Path | None) -> None:
        self.stats = stats
        self.notify_url = notify_url
        self.notify_dir = notify_dir

    def __call__(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            if self.notify_dir is not None:
                self._write(self.notify_dir, notice)
            if self.notify_url is not None:
                self._post(self.notify_url, notice.body)

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

    def _post(self, url: str, body: dict[str, Any]) -> None:
        import requests

        try:
            response = requests.post(url, timeout=(5, 15), data=json.dumps(body), headers=NOTIFY_HEADERS)
            response.close()
            posted = response.ok
        except requests.RequestException as exc:
            log.warning("sandbox could not POST the notification of %r: %s", body.get("order_id"), type(exc).__name__)
            posted = False
        self.stats.bump("notifications", "posted" if posted else "failed")
