"""Type stubs of the compiled core (engine/src/python.rs)."""

import numpy as np
import numpy.typing as npt

BATCH_MAX: int
NO_TIME: int

class EngineError(Exception):
    """Base class of every engine error."""

class BatchTooLarge(EngineError):
    """A batch is over the engine's bound."""

class InvalidBatch(EngineError):
    """Columns of unequal length or an unknown enum number."""

class CapacityExceeded(EngineError):
    """An engine table is at its bound."""

class Engine:
    """The engine: one per process, the single owner of the in-memory state."""

    def __init__(self) -> None: ...
    def subscriber_count(self) -> int:
        """Number of subscribers the engine knows."""
    def upsert_subscribers(
        self,
        account_ids: list[str],
        msisdns: list[str],
        plans: npt.NDArray[np.uint8],
        statuses: npt.NDArray[np.uint8],
        currencies: list[str],
        balances_minor: npt.NDArray[np.int64],
        countries: list[str],
        sim_swapped_at_s: npt.NDArray[np.int64],
        created_at_s: npt.NDArray[np.int64],
    ) -> None:
        """Inserts or replaces subscribers, given as columns of equal length."""
    def set_states(
        self,
        account_ids: list[str],
        balances_minor: npt.NDArray[np.int64],
        statuses: npt.NDArray[np.uint8],
    ) -> None:
        """Records settled balances and service states."""
    def validate(
        self,
        idempotency_keys: list[str],
        account_ids: list[str],
        msisdns: list[str],
        amounts_minor: npt.NDArray[np.int64],
        currencies: list[str],
        purposes: npt.NDArray[np.uint8],
        methods: npt.NDArray[np.uint8],
    ) -> npt.NDArray[np.uint16]:
        """Validates a batch given as columns; returns one reject code per row."""

def reject_codes() -> list[tuple[int, str, str, str]]:
    """Every reject code as (number, name, field, text)."""

def currency_exponent(code: str) -> int | None:
    """The ISO 4217 minor-unit exponent of a currency, or None when it is not one."""
