"""Reading ``DATABASE_URL`` when its password was not percent-encoded.

Passwords are often pasted as they are: ``postgresql://shop:p@ss/w#rd?@db.internal/shop``.
libpq splits such a URL at the first ``@`` or ``/`` and then tries to reach a host
made of the password's tail, and its error names that "host" (the password leaks).
midpay reads the user name and password up to the **last** ``@`` of the URL instead,
checks that what follows is a host list, an optional database name and ``key=value``
parameters, and hands libpq the same URL with the user name and password
percent-encoded. (A literal ``@`` in a parameter value must therefore be written ``%40``.)
A URL that still does not read is refused with a message that quotes none of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from midpay.errors import ConfigError

_SCHEME = re.compile(r"(postgres(?:ql)?://)(.*)", re.IGNORECASE | re.DOTALL)
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9._~%-]*)(?::[0-9]*)?")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^&#]*")
_VALID_ESCAPES = re.compile(r"%[0-9A-Fa-f]{2}")
REFUSAL = (
    "DATABASE_URL is not a postgresql:// URL midpay can read (it is not repeated here, it may hold "
    "the password): write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE with @ : / ? # % in the "
    "user name or password percent-encoded (%40 %3A %2F %3F %23 %25)"
)


@dataclass(frozen=True)
class Credentials:
    """The user name and password of a URL as libpq will read them (decoded), and as written."""

    user: str
    password: str | None
    written_password: str | None


def _host_part_ok(host_part: str) -> bool:
    """Whether ``hosts[/database][?key=value&…]`` is what libpq expects after the ``@``."""
    head, _, query = host_part.partition("?")
    hosts, _, database = head.partition("/")
    if not all(_HOST.fullmatch(h) for h in hosts.split(",")):
        return False
    if any(ch in database for ch in "@#"):
        return False
    return not query or all(_PARAM.fullmatch(p) for p in query.split("&"))


def _decode(part: str) -> str:
    """Percent-decode only well-formed escapes; a lone ``%`` is a literal character."""
    return _VALID_ESCAPES.sub(lambda m: unquote(m.group()), part)


def split(url: str) -> tuple[str, Credentials | None, str] | None:
    """``(scheme, credentials or None, host part)`` of a postgresql:// URL, or None if it does not read."""
    found = _SCHEME.fullmatch(url.strip())
    if found is None:
        return None
    scheme, rest = found.groups()
    at = rest.rfind("@")
    if at < 0:
        return (scheme, None, rest) if _host_part_ok(rest) else None
    userinfo, host_part = rest[:at], rest[at + 1:]
    if not _host_part_ok(host_part):
        return None
    user, colon, password = userinfo.partition(":")
    credentials = Credentials(_decode(user), _decode(password) if colon else None, password if colon else None)
    return scheme, credentials, host_part


def normalize(url: str) -> str:
    """``url`` with its user name and password percent-encoded for libpq; ConfigError if it does not read.

    Keyword/value connection strings (``host=… dbname=…``) are returned as they are.
    """
    if not _SCHEME.match(url.strip()):
        return url
    parts = split(url)
    if parts is None:
        raise ConfigError(REFUSAL)
    scheme, credentials, host_part = parts
    if credentials is None:
        return url.strip()
    userinfo = quote(credentials.user, safe="")
    if credentials.password is not None:
        userinfo += ":" + quote(credentials.password, safe="")
    return f"{scheme}{userinfo}@{host_part}"


def passwords(url: str) -> list[str]:
    """Every form in which the password of ``url`` could be printed: as written, decoded, encoded."""
    found: list[str] = []
    parts = split(url) if _SCHEME.match(url.strip()) else None
    if parts is not None and parts[1] is not None and parts[1].password:
        credentials = parts[1]
        assert credentials.password is not None and credentials.written_password is not None
        found += [credentials.written_password, credentials.password, quote(credentials.password, safe="")]
    # libpq's own reading (first "@" before the first "/") and keyword strings, in case
    # an error message quotes what libpq took for the password.
    libpq = re.match(r"(?is)postgres(?:ql)?://[^:/@]*:([^@/]*)@", url.strip())
    if libpq:
        found.append(libpq.group(1))
    found += re.findall(r"password\s*=\s*'((?:[^'\\]|\\.)*)'", url)
    found += re.findall(r"password\s*=\s*([^'\s&][^\s&]*)", url)
    return list(dict.fromkeys(f for f in found if f))
