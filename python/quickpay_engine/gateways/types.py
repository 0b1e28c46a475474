"""What the saga hands a gateway and what it gets back: plain values, no I/O.

A card number travels only inside ``Card`` and only in memory: its ``repr`` masks it,
so a log line or a traceback that prints an instrument never carries the full PAN
(invariant 7). The simulator receives it in a request body over loopback, exactly as
a real acquirer would, and keeps only the last four digits and a keyed fingerprint.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from quickpay_engine._engine import Sales
from quickpay_engine.domain import MethodKind


class GatewayOutcome(enum.IntEnum):
    """Result of one gateway operation; the numbers are stable (logged and stored)."""

    CAPTURED = 1  # money taken: the saga's point of no return has been passed
    DECLINED = 2  # the issuer or provider said no; nothing is held anywhere
    FAILED = 3  # no gateway took the payment; proven nothing is captured anywhere
    UNKNOWN = 4  # a gateway may hold it; resolve later with GatewayRouter.status()
    AUTHORIZED = 5  # held, not captured (authorize without capture)
    VOIDED = 6  # an authorization or same-day capture cancelled; nothing settles
    REFUNDED = 7  # the whole captured amount was returned
    PARTIALLY_REFUNDED = 8  # part of the captured amount was returned
    NOT_FOUND = 9  # the gateway has never processed this merchant reference


# Stable decline reasons, as the simulator and the adapters spell them; the engine's
# PayResponse.decline_reason carries them unchanged.
DECLINE_REASONS = (
    "INSUFFICIENT_FUNDS",
    "DO_NOT_HONOUR",
    "EXPIRED_CARD",
    "INVALID_CARD_NUMBER",
    "SUSPECTED_FRAUD",
    "LIMIT_EXCEEDED",
)

# Stable failure codes of the router (GatewayResult.reason when outcome is FAILED or
# UNKNOWN).
NO_GATEWAY_ROUTE = "NO_GATEWAY_ROUTE"  # no configured gateway takes this method+currency
GATEWAY_UNAVAILABLE = "GATEWAY_UNAVAILABLE"  # every candidate was down or its breaker open
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # the caller's deadline passed before any attempt
UNRESOLVED = "UNRESOLVED"  # a sale's outcome could not be looked up before the deadline
REFUND_EXCEEDS_CAPTURED = "REFUND_EXCEEDS_CAPTURED"  # refunds may not pass the capture
NOT_VOIDABLE = "NOT_VOIDABLE"  # refunded or settled on an earlier business day: refund it
INVALID_REQUEST = "INVALID_REQUEST"  # the gateway refused the request's shape (a bug)


METHOD_NAMES = {
    MethodKind.CARD: "card",
    MethodKind.WALLET: "wallet",
    MethodKind.BANK_ACCOUNT: "bank_account",
    MethodKind.CARRIER_BALANCE: "carrier_balance",
}
METHOD_BY_NAME = {name: kind for kind, name in METHOD_NAMES.items()}


@dataclass(frozen=True, slots=True, repr=False)
class Card:
    """A card as the payer typed it. Lives in memory only; never logged or stored."""

    pan: str
    expiry_month: int
    expiry_year: int

    def __repr__(self) -> str:
        return f"Card(****{self.pan[-4:]}, {self.expiry_month:02d}/{self.expiry_year})"

    def wire(self) -> dict[str, object]:
        """The request body's method object (sent over loopback only)."""
        return {
            "kind": "card",
            "pan": self.pan,
            "expiry_month": self.expiry_month,
            "expiry_year": self.expiry_year,
        }

    @property
    def kind(self) -> MethodKind:
        """Always CARD."""
        return MethodKind.CARD


@dataclass(frozen=True, slots=True)
class Wallet:
    """A mobile-money or e-wallet account at a provider."""

    provider: str
    wallet_id: str

    def wire(self) -> dict[str, object]:
        """The request body's method object."""
        return {"kind": "wallet", "provider": self.provider, "wallet_id": self.wallet_id}

    @property
    def kind(self) -> MethodKind:
        """Always WALLET."""
        return MethodKind.WALLET


@dataclass(frozen=True, slots=True)
class BankAccount:
    """A direct debit from an IBAN."""

    iban: str

    def wire(self) -> dict[str, object]:
        """The request body's method object."""
        return {"kind": "bank_account", "iban": self.iban}

    @property
    def kind(self) -> MethodKind:
        """Always BANK_ACCOUNT."""
        return MethodKind.BANK_ACCOUNT


@dataclass(frozen=True, slots=True)
class CarrierBalance:
    """Paid from the line's own credit; routed only if a gateway is configured for it."""

    def wire(self) -> dict[str, object]:
        """The request body's method object."""
        return {"kind": "carrier_balance"}

    @property
    def kind(self) -> MethodKind:
        """Always CARRIER_BALANCE."""
        return MethodKind.CARRIER_BALANCE


Instrument = Card | Wallet | BankAccount | CarrierBalance


@dataclass(frozen=True, slots=True)
class SaleRequest:
    """One payment to authorize and capture; ``payment_id`` is the merchant reference."""

    payment_id: str
    amount_minor: int
    currency: str
    instrument: Instrument


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """What one router call established about one payment.

    ``reason`` is a stable UPPER_SNAKE code: the decline reason when DECLINED, the
    failure code (NO_GATEWAY_ROUTE, GATEWAY_UNAVAILABLE, ...) when FAILED or UNKNOWN,
    empty otherwise. ``attempts`` lists "gateway:what happened" in order, for the
    audit trail and logs.
    """

    payment_id: str
    outcome: GatewayOutcome
    gateway: str = ""
    gateway_reference: str = ""
    reason: str = ""
    captured_minor: int = 0
    refunded_minor: int = 0
    currency: str = ""
    attempts: tuple[str, ...] = field(default=())


def sales_of_requests(requests: Sequence[SaleRequest], deadlines: Sequence[float]) -> Sales:
    """The core's ``Sales`` of ``SaleRequest``s (the one-object-per-sale form), each
    with its absolute deadline on the router's clock."""
    pans, months, years, providers, wallet_ids, ibans = [], [], [], [], [], []
    for r in requests:
        m = r.instrument
        card, wallet = isinstance(m, Card), isinstance(m, Wallet)
        pans.append(m.pan if card else "")  # type: ignore[union-attr]
        months.append(m.expiry_month if card else 0)  # type: ignore[union-attr]
        years.append(m.expiry_year if card else 0)  # type: ignore[union-attr]
        providers.append(m.provider if wallet else "")  # type: ignore[union-attr]
        wallet_ids.append(m.wallet_id if wallet else "")  # type: ignore[union-attr]
        ibans.append(m.iban if isinstance(m, BankAccount) else "")
    return Sales(
        [r.payment_id for r in requests], [r.amount_minor for r in requests],
        [r.currency for r in requests], [r.instrument.kind for r in requests],
        pans, months, years, providers, wallet_ids, ibans, list(deadlines),
    )  # fmt: skip


def sale_request(sales: Sales, i: int) -> SaleRequest:
    """Row ``i`` of ``sales`` as a ``SaleRequest`` (for the rare sale sent on its own)."""
    row = sales.row(i)
    payment_id, amount, currency, kind, pan, month, year, provider, wallet_id, iban, _ = row
    instrument: Instrument
    match kind:
        case MethodKind.CARD:
            instrument = Card(pan, month, year)
        case MethodKind.WALLET:
            instrument = Wallet(provider, wallet_id)
        case MethodKind.BANK_ACCOUNT:
            instrument = BankAccount(iban)
        case _:
            instrument = CarrierBalance()
    return SaleRequest(payment_id, amount, currency, instrument)


class SaleOutcomes:
    """What a ``GatewayRouter.sale_columns`` call established, as columns, one row per
    payment: the fields of ``GatewayResult`` but the payment id (the request's);
    ``attempts`` only for the payments that have any."""

    __slots__ = (
        "attempts", "captured_minor", "currencies", "gateways", "outcomes", "reasons",
        "references", "refunded_minor",
    )  # fmt: skip

    def __init__(self, n: int) -> None:
        self.outcomes: list[GatewayOutcome] = [GatewayOutcome.UNKNOWN] * n
        self.gateways: list[str] = [""] * n
        self.references: list[str] = [""] * n
        self.reasons: list[str] = [""] * n
        self.captured_minor: list[int] = [0] * n
        self.refunded_minor: list[int] = [0] * n
        self.currencies: list[str] = [""] * n
        self.attempts: dict[int, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.outcomes)

    def set(self, i: int, result: GatewayResult) -> None:
        """Row ``i`` from one payment's ``GatewayResult``."""
        self.outcomes[i] = result.outcome
        self.gateways[i] = result.gateway
        self.references[i] = result.gateway_reference
        self.reasons[i] = result.reason
        self.captured_minor[i] = result.captured_minor
        self.refunded_minor[i] = result.refunded_minor
        self.currencies[i] = result.currency
        if result.attempts:
            self.attempts[i] = result.attempts
        else:
            self.attempts.pop(i, None)

    def result(self, i: int, payment_id: str) -> GatewayResult:
        """Row ``i`` as a ``GatewayResult``."""
        return GatewayResult(
            payment_id, self.outcomes[i], self.gateways[i], self.references[i],
            self.reasons[i], self.captured_minor[i], self.refunded_minor[i],
            self.currencies[i], self.attempts.get(i, ()),
        )  # fmt: skip
