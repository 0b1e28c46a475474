"""What a load sends: realistic Pay requests built from the subscriber file.

Most requests are payments a subscriber would make (a bill for a postpaid line, a
top-up for a prepaid one, by card, wallet, bank account or carrier balance); a
configurable share are malformed (a wrong msisdn format) or declined by the business
rules (msisdn not the account's, a top-up on a postpaid line).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import Plan, SubscriberRow

# Test card numbers (Luhn-valid, from the card schemes' published test ranges).
_TEST_PANS = ["4242424242424242", "5555555555554444", "378282246310005", "6011111111111117"]


@dataclass(frozen=True)
class Mix:
    """Shares of the load, each from 0 to 1; the rest are good payments."""

    invalid: float = 0.02
    declined: float = 0.03

    def __post_init__(self) -> None:
        if not (self.invalid >= 0 and self.declined >= 0 and self.invalid + self.declined <= 1):
            raise ValueError("shares must be non-negative and add up to at most 1")


def _method(rng: random.Random) -> pb.PaymentMethod:
    roll = rng.random()
    if roll < 0.6:
        pan = rng.choice(_TEST_PANS)
        return pb.PaymentMethod(
            card=pb.Card(pan=pan, expiry_month=rng.randint(1, 12), expiry_year=2031)
        )
    if roll < 0.85:
        return pb.PaymentMethod(
            wallet=pb.Wallet(provider="mpesa", wallet_id=f"w{rng.randrange(10**9)}")
        )
    if roll < 0.95:
        return pb.PaymentMethod(bank_account=pb.BankAccount(iban="GR1601101250000000012300695"))
    return pb.PaymentMethod(carrier_balance=pb.CarrierBalance())


def build_requests(
    subscribers: Sequence[SubscriberRow], count: int, seed: int, mix: Mix, run_id: str
) -> list[pb.PayRequest]:
    """``count`` requests, the same for the same inputs; keys are unique per ``run_id``."""
    payable = [s for s in subscribers if s.status.name != "CLOSED"]
    if not payable:
        raise ValueError("no subscriber that can pay: seed and import subscribers first")
    rng = random.Random(seed)
    requests = []
    for n in range(count):
        sub = rng.choice(payable)
        purpose = pb.BILL_PAYMENT if sub.plan is Plan.POSTPAID else pb.PREPAID_TOPUP
        # Amounts in the market's usual range: 1 to 40 units of the currency's major unit.
        amount = rng.randint(1, 40) * rng.choice([100, 50, 25])
        request = pb.PayRequest(
            idempotency_key=f"{run_id}-{n}",
            account_id=sub.account_id,
            msisdn=sub.msisdn,
            amount=pb.Money(amount_minor=amount, currency=sub.currency),
            purpose=purpose,
            method=_method(rng),
            channel=rng.choice(["app", "ussd", "web", "retail"]),
            device_id=f"dev-{rng.randrange(10**6)}",
            ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        )
        roll = rng.random()
        if roll < mix.invalid:
            request.msisdn = sub.msisdn.removeprefix("+")  # not E.164: INVALID_ARGUMENT
        elif roll < mix.invalid + mix.declined:
            # The right format, the wrong line: MSISDN_MISMATCH.
            request.msisdn = sub.msisdn[:-1] + str((int(sub.msisdn[-1]) + 1) % 10)
        requests.append(request)
    return requests
