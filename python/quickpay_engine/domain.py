"""Plain domain types: payments, outcomes, codes. Imports nothing of ours.

Money is always an ``int`` in minor units with its currency beside it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Plan(enum.IntEnum):
    """Numbers shared with the Rust core (validate::Plan)."""

    PREPAID = 1
    POSTPAID = 2


class LineStatus(enum.IntEnum):
    """Service state of a line; numbers shared with the Rust core (validate::Status)."""

    ACTIVE = 1
    SUSPENDED = 2
    BARRED = 3
    CLOSED = 4


class Purpose(enum.IntEnum):
    """The contract's Purpose numbers."""

    UNSPECIFIED = 0
    BILL_PAYMENT = 1
    PREPAID_TOPUP = 2


class MethodKind(enum.IntEnum):
    """Which PaymentMethod arm is set; numbers shared with the Rust core."""

    MISSING = 0
    CARD = 1
    WALLET = 2
    BANK_ACCOUNT = 3
    CARRIER_BALANCE = 4


class PaymentStatus(enum.IntEnum):
    """The contract's PaymentStatus numbers."""

    UNSPECIFIED = 0
    SETTLED = 1
    DECLINED = 2
    FAILED = 3
    REFUNDED = 4
    PARTIALLY_REFUNDED = 5


@dataclass(frozen=True, slots=True)
class Method:
    """A payment method as the engine keeps it: never a full card number (invariant 7)."""

    kind: MethodKind
    display: str  # "card ****4242", "wallet mpesa", "iban GR16...7890", "carrier balance"


@dataclass(frozen=True, slots=True, repr=False)
class MethodDetail:
    """What validation reads from a request beyond ``Method``: the full card number,
    expiry, wallet, IBAN and subscriber assertion. Held in memory for validation only;
    never stored, and its repr shows nothing (invariant 7)."""

    card_pan: str = ""
    card_expiry_month: int = 0
    card_expiry_year: int = 0
    wallet_provider: str = ""
    wallet_id: str = ""
    iban: str = ""
    subscriber_assertion: str = ""

    def __repr__(self) -> str:
        return "MethodDetail(<redacted>)"


NO_DETAIL = MethodDetail()


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """One Pay request after decoding, before validation."""

    idempotency_key: str
    fingerprint: str  # hex digest of the canonical request: the same key with another
    # payload is refused
    account_id: str
    msisdn: str
    amount_minor: int
    currency: str
    purpose: Purpose
    method: Method
    channel: str
    device_id: str
    ip: str
    # Only on a freshly decoded request; a stored intent has NO_DETAIL.
    detail: MethodDetail = field(default=NO_DETAIL, repr=False, compare=False)
    # When the caller stops waiting, on the event loop's clock (time.monotonic); None
    # when it set no deadline. Gateway calls get what is left of it.
    deadline: float | None = field(default=None, repr=False, compare=False)
    # The caller that sent it, as the access file names it ("" without one): a gateway
    # may read back only the payments it sent.
    sender: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a settled payment hands back to the caller."""

    confirmation_id: str
    ledger_sequence: int
    settled_at_us: int
    gateway: str
    gateway_reference: str
    balance_after_minor: int
    currency: str
    service_state_after: LineStatus


@dataclass(frozen=True, slots=True)
class FraudAssessment:
    """The fraud scorer's view of one payment: score 0..1000, APPROVE / REVIEW /
    DECLINE, and the names of the features that weighed most."""

    score: int
    decision: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one payment, as stored and as replayed."""

    payment_id: str
    idempotency_key: str
    status: PaymentStatus
    decline_reason: str = ""
    decline_detail: str = ""
    confirmation: Confirmation | None = None
    replayed: bool = False
    fraud: FraudAssessment | None = None


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment as GetPayment returns it."""

    intent: PaymentIntent
    outcome: Outcome
    created_at_us: int
    refunded_minor: int


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """One subscriber as the carrier's billing system exports it."""

    account_id: str
    msisdn: str
    plan: Plan
    status: LineStatus
    currency: str
    balance_minor: int
    country: str
    sim_swapped_at_s: int | None
    created_at_s: int


# The kinds of event the outbox carries; WatchSettlements filters on these names, and
# the relay publishes each to the NATS subject quickpay.settlement.<kind>.
EVENT_KINDS = (
    "settlement", "decline", "refund", "service_state", "adjustment", "subscriber_change"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event as written in the same transaction as the change it describes."""

    cursor: int
    event_id: str
    kind: str
    payment_id: str
    account_id: str
    payload: dict[str, object]
    created_at_us: int


@dataclass(frozen=True, slots=True)
class BilledCapture:
    """A payment billing settled through the gateway: what the report must show."""

    payment_id: str
    gateway_reference: str
    amount_minor: int
    currency: str
    settled_at_us: int
    refunded: bool = False


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One thing that does not agree. The id is stable across re-runs of one report."""

    discrepancy_id: str
    category: str
    payment_id: str
    gateway_reference: str
    gateway_amount_minor: int | None
    billing_amount_minor: int | None
    currency: str
    detail: str
