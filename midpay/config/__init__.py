"""Settings, resolved once at start-up.

Precedence, highest first:
  1. real environment variables;
  2. the file named by ``midpay --env-file PATH`` (an error if it cannot be read);
  3. ``.env`` in the current directory, when present;
  4. the defaults below.

Secrets (the server key, the database password) are kept out of ``repr`` and are
available to ``redact`` so that no error line can echo them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from midpay.errors import ConfigError

SANDBOX_API_URL = "https://api.sandbox.midtrans.com"
PRODUCTION_API_URL = "https://api.midtrans.com"
DEFAULT_TIMEOUT = 10.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


ROOT_HOME = Path("/var/lib/midpay")


def default_home() -> Path:
    """The per-user data directory, e.g. ``~/.local/share/midpay``; for root, ``/var/lib/midpay``.

    Root's own home is normally closed to other users, and the embedded PostgreSQL
    runs as an unprivileged user that must reach its data (see ``embedded.access``).
    """
    import platformdirs

    if os.name == "posix" and os.geteuid() == 0:
        return ROOT_HOME
    return Path(platformdirs.user_data_dir("midpay", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything midpay reads from its environment. Secrets never show in repr."""

    database_url: str | None = field(default=None, repr=False)
    server_key: str | None = field(default=None, repr=False)
    is_production: bool = False
    api_url: str = SANDBOX_API_URL
    timeout: float = DEFAULT_TIMEOUT
    home: Path = field(default_factory=default_home)

    def __repr__(self) -> str:
        db = "embedded" if self.database_url == "embedded" else ("set" if self.database_url else "unset")
        key = "set" if self.server_key else "unset"
        return (
            f"Settings(database_url=<{db}>, server_key=<{key}>, is_production={self.is_production}, "
            f"api_url={self.api_url!r}, timeout={self.timeout}, home={str(self.home)!r})"
        )

    def require_database_url(self) -> str:
        """The database URL as libpq should read it (see ``dburl``), or a configuration error."""
        from midpay.config import dburl

        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: give a postgresql:// URL, or DATABASE_URL=embedded "
                "for a local PostgreSQL that midpay starts itself"
            )
        if self.database_url == "embedded":
            return self.database_url
        return dburl.normalize(self.database_url)

    def require_server_key(self) -> str:
        """The Midtrans server key, or a configuration error naming the variable."""
        if not self.server_key:
            raise ConfigError(
                "MIDTRANS_SERVER_KEY is not set: use your Midtrans server key "
                "(for `midpay sandbox serve`, the development key it prints at start)"
            )
        return self.server_key

    def secrets(self) -> list[str]:
        """Strings that must never be printed: the server key (and its Basic-auth token), the database password."""
        from midpay.config.redaction import MIN_SECRET, key_forms

        found: list[str] = key_forms(self.server_key) if self.server_key else []
        if self.database_url and self.database_url != "embedded":
            found.extend(_url_passwords(self.database_url))
        return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET]


def _url_passwords(url: str) -> list[str]:
    from midpay.config import dburl

    found = dburl.passwords(url)
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
    except ValueError:
        pass
    # urlsplit gives up on some malformed URLs (an unbalanced "[" say): a tolerant
    # pattern still finds the password between "user:" and "@".
    found.extend(m.group(1) for m in re.finditer(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@", url, re.I))
    return found


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of every secret in ``text`` by ``***``."""
    from midpay.config.redaction import redact as _redact

    return _redact(text, secrets)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _parse_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"MIDPAY_TIMEOUT must be a number of seconds, not {raw!r}") from None
    if not 0 < value <= 600:
        raise ConfigError(f"MIDPAY_TIMEOUT must be between 0 and 600 seconds, not {raw!r}")
    return value


def _parse_api_url(raw: str) -> str:
    """MIDTRANS_API_URL: http(s), a host, a valid port, nothing a request could not be sent to."""
    url = raw.strip()
    shown = url[:100]
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"MIDTRANS_API_URL must not contain spaces or control characters, not {shown!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        raise ConfigError(f"MIDTRANS_API_URL is not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(f"MIDTRANS_API_URL must be an http:// or https:// URL with a host, not {shown!r}")
    if port == 0:
        raise ConfigError(f"MIDTRANS_API_URL has port 0, which nothing listens on: {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("MIDTRANS_API_URL must not carry a user name or password (the server key is sent apart)")
    if parts.query or parts.fragment:
        raise ConfigError(f"MIDTRANS_API_URL must be a base URL without ?query or #fragment, not {shown!r}")
    return url


def _parse_home(raw: str) -> Path:
    """MIDPAY_HOME: a directory, or a path where one can be made (not a file, not under a file)."""
    home = Path(raw).expanduser()
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == home else f"is under {probe}, which is a file"
        raise ConfigError(f"MIDPAY_HOME must be a directory, but {home} {what}")
    return home


def read_env_file(path: Path) -> dict[str, str]:
    """Variables of a dotenv file; unreadable files are a usage error (exit 2)."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise ConfigError(f"cannot read env file {path}: no such file")
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.__class__.__name__}") from None
    return {k: v for k, v in values.items() if v is not None}


def load_settings(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from the environment and a dotenv file (precedence in the module doc)."""
    env = dict(os.environ if environ is None else environ)
    file_values: dict[str, str] = {}
    if env_file is not None:
        file_values = read_env_file(env_file)
    elif Path(".env").is_file():
        file_values = read_env_file(Path(".env"))
    merged = {**file_values, **env}

    def get(name: str) -> str | None:
        value = merged.get(name)
        return value if value not in (None, "") else None

    is_production = _parse_bool("MIDTRANS_IS_PRODUCTION", get("MIDTRANS_IS_PRODUCTION") or "false")
    server_key = get("MIDTRANS_SERVER_KEY")
    if server_key is not None:
        server_key = server_key.strip()
    if is_production and server_key and server_key.startswith("SB-"):
        raise ConfigError(
            "MIDTRANS_SERVER_KEY looks like a sandbox key (SB-…) but MIDTRANS_IS_PRODUCTION=true: "
            "use the production key, or set MIDTRANS_IS_PRODUCTION=false"
        )
    api_url = _parse_api_url(get("MIDTRANS_API_URL") or (PRODUCTION_API_URL if is_production else SANDBOX_API_URL))
    timeout = _parse_timeout(get("MIDPAY_TIMEOUT") or str(DEFAULT_TIMEOUT))
    home_raw = get("MIDPAY_HOME")
    home = _parse_home(home_raw) if home_raw else default_home()
    return Settings(
        database_url=get("DATABASE_URL"),
        server_key=server_key,
        is_production=is_production,
        api_url=api_url.rstrip("/"),
        timeout=timeout,
        home=home,
    )
