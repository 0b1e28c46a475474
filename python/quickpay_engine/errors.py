"""The one exception hierarchy of quickpay-engine.

Errors raised by the Rust core arrive as subclasses of ``EngineError`` (defined in the
compiled module, re-exported here); the front end's own errors derive from
``QuickpayError``. The gRPC servicer maps both to status codes in one place.
"""

from quickpay_engine._engine import (
    BatchTooLarge,
    CapacityExceeded,
    ColumnError,
    ConfigInvalid,
    EngineError,
    FraudConfigError,
    HttpSetupError,
    InvalidBatch,
    LedgerClosed,
    RequestUndecodable,
    StateRefused,
    WalCorruption,
    WalFailure,
)

# At most this many characters of a caller's value are echoed in an error message: a
# message goes into gRPC metadata, and a 16 KB id must not make NOT_FOUND an error of
# its own (nor the engine a mirror for whatever a caller sends).
ECHO_MAX = 64


def echo(value: str) -> str:
    """``value`` quoted for an error message, cut to ``ECHO_MAX`` characters."""
    if len(value) <= ECHO_MAX:
        return repr(value)
    return f"{value[:ECHO_MAX]!r}... ({len(value)} characters)"


class QuickpayError(Exception):
    """Base class of the front end's errors."""


class ConfigError(QuickpayError):
    """A setting is missing or malformed; the message names it."""


class InvalidArgument(QuickpayError):
    """A request field is malformed (gRPC INVALID_ARGUMENT); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class IdempotencyConflict(QuickpayError):
    """The idempotency key was used before with another payload (FAILED_PRECONDITION)."""


class Overloaded(QuickpayError):
    """The engine is at a bound and refused the call before any work (RESOURCE_EXHAUSTED).

    ``retry_after_s``, when known, is how long the engine expects to need before the
    same call would be admitted (the servicer sends it as a retry hint)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(QuickpayError):
    """No such payment (NOT_FOUND)."""


class ShuttingDown(QuickpayError):
    """The server is draining and takes no new payments (UNAVAILABLE)."""


class NotOwner(QuickpayError):
    """The engine cannot prove it still owns its databases (the connection holding the
    ownership lock was lost): it settles nothing until it does (UNAVAILABLE, retry with
    the same key)."""


class OutcomePending(QuickpayError):
    """The gateway's answer is not known yet (UNAVAILABLE): the engine finishes the
    payment by itself (settled or voided); retry with the same key to learn which."""


class StoreUnavailable(QuickpayError):
    """The database was out of reach before any gateway was called: nothing was done
    (UNAVAILABLE; retry with the same key)."""


class StoreError(QuickpayError):
    """The database refused: wrong schema version, a constraint the input breaks."""


class ImportRowError(QuickpayError):
    """A subscriber file row is malformed; nothing from the file was loaded."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


__all__ = [
    "ECHO_MAX",
    "BatchTooLarge",
    "CapacityExceeded",
    "ColumnError",
    "ConfigError",
    "ConfigInvalid",
    "EngineError",
    "FraudConfigError",
    "HttpSetupError",
    "IdempotencyConflict",
    "ImportRowError",
    "InvalidArgument",
    "InvalidBatch",
    "LedgerClosed",
    "NotFound",
    "NotOwner",
    "Overloaded",
    "QuickpayError",
    "RequestUndecodable",
    "ShuttingDown",
    "StateRefused",
    "StoreError",
    "StoreUnavailable",
    "WalCorruption",
    "WalFailure",
    "echo",
]
