"""What the top-level options leave for the commands, and the secrets nothing may print.

The bottom of the cli package: the boundary and the commands read it, it reads nothing of theirs.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
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
    # Endpoint signing secrets this invocation read or made: redacted like the server key. ``shown``: the
    # forms of the one secret the command hands over (endpoints add, rotate-secret), which stdout may print.
    signing_secrets: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)


state = State()

_secrets_cache: dict[int, tuple["Settings", list[str]]] = {}


def add_secrets(values: Iterable[str], *, shown: bool = False) -> None:
    """Redact ``values`` too from now on (errors, stderr, stdout); ``shown``: stdout may print these."""
    new = [v for v in values if v not in state.signing_secrets]
    state.signing_secrets = [*state.signing_secrets, *new]
    if shown:
        state.shown = [*state.shown, *values]


def stdout_secrets() -> list[str]:
    """What stdout must not print: ``secrets()`` but the signing secret the command hands over."""
    found = secrets()
    return [s for s in found if s not in state.shown] if state.shown else found


def secrets() -> list[str]:
    """What must never be printed: the server key and the database password, once settings are read, and the
    endpoint signing secrets this invocation read or made.

    Computed once per settings (stdout asks at every write: a reconcile run's document is thousands).
    """
    base = _settings_secrets()
    return [*base, *state.signing_secrets] if state.signing_secrets else base


def _settings_secrets() -> list[str]:
    settings = state.settings
    if settings is None:
        return []
    cached = _secrets_cache.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, settings.secrets())
        _secrets_cache.clear()
        _secrets_cache[id(settings)] = cached
    return cached[1]
