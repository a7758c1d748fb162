"""Every error midpay raises on purpose, and the exit code each one means.

    MidpayError                      exit 1: something was rejected or failed
    ├── UsageError                   exit 2: bad flag, bad argument, unreadable file
    ├── ConfigError                  exit 2: missing, malformed or contradictory configuration
    │   ├── GatewayAuthError         exit 2: Midtrans refused the server key (401)
    │   ├── DatabaseRefused          exit 2: PostgreSQL refused DATABASE_URL (password, role, database)
    │   └── SchemaNotReady           exit 2: migrations pending or unknown: run `midpay migrate`
    ├── InvalidPayload               exit 1: a notification or answer body is malformed
    ├── NotFoundError                exit 1: no such order (here or at Midtrans)
    │   └── TransactionNotFound      exit 1: Midtrans says "Transaction doesn't exist." (404)
    ├── MidtransRejected             exit 1: Midtrans answered with a business error (412, 414, …)
    │   └── DuplicateOrder           exit 1: the order id was used before (406 on charge)
    ├── MigrationError               exit 1: a migration file failed or was refused
    ├── DataConflict                 exit 1: PostgreSQL refused a write (a unique id already taken, …)
    ├── Interrupted                  exit 130: stopped by SIGINT or SIGTERM
    └── DependencyError              exit 3: a dependency could not be reached
        ├── DatabaseUnavailable      exit 3: PostgreSQL could not be reached
        └── GatewayError             exit 3: Midtrans could not be reached or answered nonsense
            ├── GatewayUnavailable   exit 3: never sent, or 5xx/429 after retries
            │   └── GatewayUnreachable  exit 3: never sent: connection refused, DNS, connect timeout
            ├── OutcomeUnknown       exit 3: sent, but no answer came (read timeout)
            └── GatewayProtocolError exit 3: the answer was not Midtrans-shaped

Messages are single lines meant for operators and never contain a secret: the
caller formats them from order ids, status codes and Midtrans' status_message only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MidpayError(Exception):
    """Base of every deliberate midpay failure; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(MidpayError):
    """The command line or an input file is unusable as given."""

    exit_code = 2


class ConfigError(MidpayError):
    """Configuration is missing, malformed or contradictory."""

    exit_code = 2


class GatewayAuthError(ConfigError):
    """Midtrans answered 401: wrong server key or wrong environment."""


class DatabaseRefused(ConfigError):
    """PostgreSQL was reached but refused the connection: password, role, database name, pg_hba."""


class SchemaNotReady(ConfigError):
    """The database's migrations are not the ones this midpay expects (pending, unknown or edited)."""


class InvalidPayload(MidpayError):
    """A body is malformed: not JSON, not an object, a field missing or of the wrong form."""


class NotFoundError(MidpayError):
    """The order does not exist (in the database or at Midtrans)."""

    @classmethod
    def order(cls, order_id: str) -> NotFoundError:
        """No payment of ``order_id`` in the database: the one wording of it."""
        return cls(f"no such order: {order_id}")


class TransactionNotFound(NotFoundError):
    """Midtrans does not know the transaction (body status_code 404)."""


class MidtransRejected(MidpayError):
    """Midtrans understood the request and refused it; `status_code` is the body's code."""

    def __init__(self, message: str, status_code: str = "", body: dict[str, object] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.body = body or {}


class DuplicateOrder(MidtransRejected):
    """Midtrans refused a charge because the order id was already used (406)."""


class MigrationError(MidpayError):
    """A migration failed, was edited after being applied, or is out of order."""


class DataConflict(MidpayError):
    """PostgreSQL refused a write for this item: a unique value already taken, say."""


class Interrupted(MidpayError):
    """The command was stopped by SIGINT (Ctrl-C) or SIGTERM before it finished."""

    exit_code = 130


class DependencyError(MidpayError):
    """A dependency (PostgreSQL or Midtrans) could not be reached."""

    exit_code = 3


class DatabaseUnavailable(DependencyError):
    """PostgreSQL could not be reached or dropped the connection."""


class GatewayError(DependencyError):
    """Midtrans could not be reached or did not answer usefully."""


class GatewayUnavailable(GatewayError):
    """The request was never accepted: connection refused, DNS, or 5xx/429 after retries."""


class GatewayUnreachable(GatewayUnavailable):
    """The request never left: connection refused, the host name did not resolve, connect timeout, TLS."""


class OutcomeUnknown(GatewayError):
    """The request was sent but no answer arrived; Midtrans may or may not have acted."""


class GatewayProtocolError(GatewayError):
    """The answer was not JSON or not shaped like a Midtrans answer (a proxy page, say)."""


@contextmanager
def midtrans_failures(unknown: str, note: str) -> Iterator[None]:
    """What a failed call to Midtrans inside the block means for the caller's order.

    ``OutcomeUnknown`` (sent, no answer) is raised again with ``unknown`` as its message;
    any other ``GatewayError`` keeps its class and message, ``; note`` added.
    """
    try:
        yield
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(unknown) from exc
    except GatewayError as exc:
        raise type(exc)(f"{exc}; {note}") from exc
