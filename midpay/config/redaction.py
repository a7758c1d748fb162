"""Keeping secrets out of everything midpay stores or prints.

Three layers, from the edge inwards:

* ``scrub`` cleans a decoded Midtrans answer before anything stores or shows it: any
  string holding the server key or its Basic-auth token (an echoed ``Authorization``
  header, a debug dump) becomes ``***``, and so does every value under a header-like key
  (``Authorization``, ``Proxy-Authorization``, ``Cookie``…), at any depth.
* ``redact`` replaces secrets in one message (errors go through it).
* ``RedactingStream`` wraps stdout and stderr of the command line as a last resort:
  whatever reaches them is redacted line by line.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import IO, Any

MASK = "***"
MIN_SECRET = 3  # shorter fragments would mask ordinary text
_HEADER_KEYS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "server_key"})


def key_forms(server_key: str) -> list[str]:
    """The server key and every way Basic auth encodes it (``key:``, with or without padding, URL-safe).

    The base64 of the key's first 3·n bytes starts every encoding of a string that starts
    with the key, so masking it hides the token even when it was cut or re-padded.
    """
    if not server_key:
        return []
    forms = [server_key]
    raw = server_key.encode()
    for data in (raw + b":", raw, raw[: len(raw) - len(raw) % 3]):
        if len(data) < MIN_SECRET:
            continue
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            token = encode(data).decode("ascii")
            forms += [token, token.rstrip("=")]
    return _unique(forms)


def _unique(values: Iterable[str]) -> list[str]:
    return sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret replaced by ``***`` (longest first)."""
    return _redact(text, _unique(secrets))


def _redact(text: str, ordered: list[str]) -> str:
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub(value: Any, secrets: list[str]) -> Any:
    """A JSON value with the secrets masked in every string and header-like entries masked whole."""
    return _scrub(value, _unique(secrets))


def _scrub(value: Any, ordered: list[str]) -> Any:
    if isinstance(value, str):
        return _redact(value, ordered)
    if isinstance(value, list):
        return [_scrub(v, ordered) for v in value]
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        for k, v in value.items():
            key = _redact(k, ordered) if isinstance(k, str) else k
            if isinstance(k, str) and k.strip().lower() in _HEADER_KEYS:
                cleaned[key] = MASK
            else:
                cleaned[key] = _scrub(v, ordered)
        return cleaned
    return value


def scrub_text(text: str, value: Any, secrets: list[str]) -> Any:
    """``scrub(value)`` for ``value`` decoded from the JSON ``text``; skipped when ``text`` has nothing to mask.

    It has nothing when the text holds no escape sequence (which could spell a secret
    or a key in other characters), no secret, and no header-like key name in any case.
    """
    if "\\" in text or any(secret in text for secret in secrets):
        return scrub(value, secrets)
    lowered = text.lower()
    if any(name in lowered for name in _HEADER_KEYS):
        return scrub(value, secrets)
    return value


class RedactingStream:
    """A text stream that redacts what passes through it, a line at a time.

    Complete lines are redacted and written at once; a partial line waits for its end
    or for ``flush`` (prompts and progress bars flush), so a secret split across two
    writes of one line is still found. ``secrets`` is asked at each write: settings are
    read lazily, after the stream is installed.
    """

    def __init__(self, stream: IO[str], secrets: Callable[[], list[str]]) -> None:
        self._stream = stream
        self._secrets = secrets
        self._pending = ""

    @property
    def wrapped(self) -> IO[str]:
        return self._stream

    def write(self, text: str) -> int:
        secrets = self._secrets()
        if not secrets:
            if self._pending:
                self._stream.write(self._pending)
                self._pending = ""
            return self._stream.write(text)
        data = self._pending + text
        cut = data.rfind("\n") + 1
        self._pending = data[cut:]
        if cut:
            self._stream.write(redact(data[:cut], secrets))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending, self._secrets()))
            self._pending = ""
        self._stream.flush()

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
