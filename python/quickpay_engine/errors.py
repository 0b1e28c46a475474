"""The one exception hierarchy of quickpay-engine.

Errors raised by the Rust core arrive as subclasses of ``EngineError`` (defined in the
compiled module, re-exported here); the front end's own errors derive from
``QuickpayError``. The gRPC servicer maps both to status codes in one place.
"""

from quickpay_engine._engine import (
    BatchTooLarge,
    CapacityExceeded,
    EngineError,
    FraudConfigError,
    InvalidBatch,
)


class QuickpayError(Exception):
    """Base class of the front end's errors."""


class ConfigError(QuickpayError):
    """A setting is missing or malformed; the message names it."""


class ImportRowError(QuickpayError):
    """A subscriber file row is malformed; nothing from the file was loaded."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


__all__ = [
    "BatchTooLarge",
    "CapacityExceeded",
    "ConfigError",
    "EngineError",
    "FraudConfigError",
    "ImportRowError",
    "InvalidBatch",
    "QuickpayError",
]
