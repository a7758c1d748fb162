"""The Node receiver (receiver.js, verifying with npm's ``standardwebhooks``) behind the Python receiver's interface."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent


class NodeReceiver:
    """``with NodeReceiver(secrets) as r:`` runs ``node receiver.js`` until the block ends."""

    kind = "node"

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = list(secrets)
        self._proc: subprocess.Popen[str] | None = None
        self._port = 0
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hooks/midpay"

    def __enter__(self) -> NodeReceiver:
        node = shutil.which("node")
        assert node is not None
        self._proc = subprocess.Popen(
            [node, str(HERE / "receiver.js")], cwd=HERE, text=True, stdout=subprocess.PIPE,
            env={**os.environ, "RECEIVER_SECRETS": json.dumps(self.secrets)},
        )
        assert self._proc.stdout is not None
        self._port = int(json.loads(self._proc.stdout.readline())["port"])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        self._session.close()

    def control(self, *, answer: int | None = None, mode: str | None = None) -> None:
        doc: dict[str, Any] = {}
        if answer is not None:
            doc["answer"] = answer
        if mode is not None:
            doc["mode"] = mode
        self._session.post(f"http://127.0.0.1:{self._port}/_control", json=doc, timeout=5).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        answer = self._session.get(f"http://127.0.0.1:{self._port}/_received", timeout=5)
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()
        return found
