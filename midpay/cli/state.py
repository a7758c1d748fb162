"""What the top-level options leave for the commands, and the secrets nothing may print.

The bottom of the cli package: the boundary and the commands read it, it reads nothing of theirs.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from midpay.config import Settings


@dataclass
class State:
    """Reset by the root callback at every invocation (tests run many in one process)."""

    env_file: Path | None = None
    settings: "Settings | None" = None
    schema_checked: bool = False
    url: str | None = None


state = State()

_secrets_cache: dict[int, tuple["Settings", list[str]]] = {}


def secrets() -> list[str]:
    """What must never be printed: the server key and the database password, once settings are read.

    Computed once per settings (stdout asks at every write: a reconcile run's document is thousands).
    """
    settings = state.settings
    if settings is None:
        return []
    cached = _secrets_cache.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, settings.secrets())
        _secrets_cache.clear()
        _secrets_cache[id(settings)] = cached
    return cached[1]
