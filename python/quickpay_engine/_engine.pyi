"""Type stubs of the compiled core (engine/src/python.rs)."""

from typing import final

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

# Fraud scoring (engine/src/python/fraud.rs).

FRAUD_FEATURE_COUNT: int
FRAUD_REASONS_MAX: int
FRAUD_KEYS_MAX_DEFAULT: int

class FraudConfigError(EngineError):
    """A fraud model, rules or BIN file cannot be used; the message names the place."""

@final
class FraudScorer:
    """The fraud scorer: one per engine, the single owner of the fraud state.

    Every scoring method takes the same 14 columns of equal length: account_ids,
    msisdns (the line paid for; "" if unknown), amounts_minor (int64), purposes and
    methods (uint8, the contract's numbers), card_fingerprints (uint64 keyed hash of
    the card, 0 when not a card), card_bins (first 6 to 8 digits, "" if none),
    device_ids, ips, channels, plans (uint8: 1 prepaid, 2 postpaid), countries (ISO
    3166 alpha-2 of the subscriber), sim_swapped_at_s (int64, NO_TIME if never) and
    created_at_s (int64). Batches are at most BATCH_MAX rows.

    Settlement semantics (wired by the pipeline): DECLINE is status DECLINED with
    decline_reason FRAUD_DECLINED; REVIEW is declined with FRAUD_REVIEW and queued for
    review, unless the request carries a valid subscriber assertion (step-up) and the
    score is below the decline threshold, in which case it proceeds.
    """

    def __new__(
        cls,
        model_json: str,
        rules: str = "",
        bin_table: str = "",
        *,
        review_threshold: int | None = None,
        decline_threshold: int | None = None,
        keys_max: int = ...,
    ) -> FraudScorer:
        """Builds a scorer from model JSON, rules and BIN table texts.

        Thresholds default to the model file's; keys_max bounds every per-key map
        (at the bound a key not seen recently is evicted, by CLOCK).
        Raises FraudConfigError for a bad file.
        """
    @property
    def model_id(self) -> str:
        """The model file's model_id."""
    @property
    def thresholds(self) -> tuple[int, int]:
        """The (review, decline) score thresholds in force."""
    def tracked(self) -> tuple[int, int, int, int, int]:
        """Tracked keys per map: (accounts, msisdns, cards, devices, IP prefixes)."""
    def score(
        self,
        account_ids: list[str],
        msisdns: list[str],
        amounts_minor: npt.NDArray[np.int64],
        purposes: npt.NDArray[np.uint8],
        methods: npt.NDArray[np.uint8],
        card_fingerprints: npt.NDArray[np.uint64],
        card_bins: list[str],
        device_ids: list[str],
        ips: list[str],
        channels: list[str],
        plans: npt.NDArray[np.uint8],
        countries: list[str],
        sim_swapped_at_s: npt.NDArray[np.int64],
        created_at_s: npt.NDArray[np.int64],
        now_s: int,
    ) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
        """Scores a batch in order, recording each payment as an attempt.

        Returns scores (0..1000), decisions (0 APPROVE, 1 REVIEW, 2 DECLINE) and reason
        codes of shape (n, FRAUD_REASONS_MAX), 0 padding unused slots.
        """
    def observe(
        self,
        account_ids: list[str],
        msisdns: list[str],
        amounts_minor: npt.NDArray[np.int64],
        purposes: npt.NDArray[np.uint8],
        methods: npt.NDArray[np.uint8],
        card_fingerprints: npt.NDArray[np.uint64],
        card_bins: list[str],
        device_ids: list[str],
        ips: list[str],
        channels: list[str],
        plans: npt.NDArray[np.uint8],
        countries: list[str],
        sim_swapped_at_s: npt.NDArray[np.int64],
        created_at_s: npt.NDArray[np.int64],
        outcomes: npt.NDArray[np.uint8],
        now_s: int,
    ) -> None:
        """Records outcomes of scored payments: 0 not attempted, 1 settled, 2 failed."""
    def replay(
        self,
        account_ids: list[str],
        msisdns: list[str],
        amounts_minor: npt.NDArray[np.int64],
        purposes: npt.NDArray[np.uint8],
        methods: npt.NDArray[np.uint8],
        card_fingerprints: npt.NDArray[np.uint64],
        card_bins: list[str],
        device_ids: list[str],
        ips: list[str],
        channels: list[str],
        plans: npt.NDArray[np.uint8],
        countries: list[str],
        sim_swapped_at_s: npt.NDArray[np.int64],
        created_at_s: npt.NDArray[np.int64],
        at_s: npt.NDArray[np.int64],
        outcomes: npt.NDArray[np.uint8],
        with_features: bool = False,
    ) -> tuple[
        npt.NDArray[np.uint16],
        npt.NDArray[np.uint8],
        npt.NDArray[np.uint16],
        npt.NDArray[np.float64] | None,
    ]:
        """Replays traffic: each payment scored at its own time, its outcome observed next.

        With with_features, the last item is the float64 feature rows of shape
        (n, FRAUD_FEATURE_COUNT), columns named by fraud_feature_names().
        """

def fraud_feature_names() -> list[str]:
    """The model's feature names, in feature-row column order."""

def fraud_reason_codes() -> list[tuple[int, str]]:
    """Every reason code as (number, name); 0 is NONE."""

def fraud_decisions() -> list[tuple[int, str]]:
    """Every decision as (number, name): APPROVE 0, REVIEW 1, DECLINE 2."""
