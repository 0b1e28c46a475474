"""What a load sends: realistic Pay requests built from the subscriber file.

Most requests are payments a subscriber would make (a bill for a postpaid line, a
top-up for a prepaid one, by card, wallet, bank account or carrier balance). Configurable
shares are:

- invalid: malformed (an msisdn not in E.164), answered INVALID_ARGUMENT;
- declined: well-formed but refused by the business rules (the msisdn is not the
  account's), answered DECLINED with MSISDN_MISMATCH;
- fraud: shaped like card testing (one device and one IP paying for many accounts, by
  card, at the top of the amount range), for the fraud scorer to catch;
- duplicate: a retry of an earlier request with the same idempotency key and payload,
  answered with the stored outcome marked ``replayed``.

A mix comes from flags or from a TOML or JSON file whose keys are ``Mix``'s fields.
"""

from __future__ import annotations

import itertools
import json
import random
import tomllib
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import Plan, SubscriberRow

# Test card numbers (Luhn-valid, from the card schemes' published test ranges).
_TEST_PANS = ["4242424242424242", "5555555555554444", "378282246310005", "6011111111111117"]
METHODS = ("card", "wallet", "bank_account", "carrier_balance")
# What each request was meant to be; the report counts what was sent by kind.
KINDS = ("good", "invalid", "declined", "fraud", "duplicate")
# Duplicates retry one of this many most recent requests; older ones are forgotten
# (evicted first in, first out), so the memory of a long run stays bounded.
RECENT_MAX = 1_024
# One device and one IP per this many fraud-like requests: the card-testing burst.
FRAUD_BURST = 50


@dataclass(frozen=True)
class Mix:
    """Shares of the load, each from 0 to 1; what is left are good payments.

    ``bill_share`` is the share of bill payments (postpaid lines) among payments, the rest
    being top-ups (prepaid lines); None follows the subscriber file's own proportion.
    ``methods`` weighs the payment methods (relative weights, not shares).
    """

    invalid: float = 0.02
    declined: float = 0.03
    fraud: float = 0.0
    duplicate: float = 0.0
    bill_share: float | None = None
    # Carrier balance is off by default: the engine refuses it for top-ups and a
    # postpaid line has no credit to pay a bill with, so it would only add declines.
    methods: dict[str, float] = field(
        default_factory=lambda: {
            "card": 0.6,
            "wallet": 0.28,
            "bank_account": 0.12,
            "carrier_balance": 0.0,
        }
    )

    def __post_init__(self) -> None:
        shares = (self.invalid, self.declined, self.fraud, self.duplicate)
        if not all(0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise ValueError(
                "invalid, declined, fraud and duplicate shares must be between 0 and 1"
                " and add up to at most 1"
            )
        if self.bill_share is not None and not 0 <= self.bill_share <= 1:
            raise ValueError("bill_share must be between 0 and 1")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown payment methods {sorted(unknown)}; known: {METHODS}")
        if any(w < 0 for w in self.methods.values()) or sum(self.methods.values()) <= 0:
            raise ValueError("method weights must be non-negative with a positive total")

    @classmethod
    def from_file(cls, path: Path, **overrides: object) -> Mix:
        """A mix from a TOML or JSON file, with ``overrides`` (not None) on top."""
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def parse_methods(text: str) -> dict[str, float]:
    """``card=0.6,wallet=0.4`` as a weight per method."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--methods {text!r}: expected NAME=WEIGHT,... ({METHODS})")
        weights[name.strip()] = float(value)
    return weights


# A digit doubled, less 9 past 9: Luhn's weight on every other digit.
_DOUBLED = str.maketrans("0123456789", "0246813579")


def subscriber_pan(account_id: str) -> str:
    """A Luhn-valid Visa number of the subscriber's own: real subscribers each pay with
    their card, and one card across thousands of lines is what card testing looks like."""
    body = "4" + str(zlib.crc32(account_id.encode()) * 7919 + 10**13)[-14:]
    # From the right, every other digit doubled, starting with the body's last one
    # (the check digit, appended, will be the first undoubled).
    tail = body[::-1]
    total = sum(map(int, tail[0::2].translate(_DOUBLED))) + sum(map(int, tail[1::2]))
    return body + str(-total % 10)


def _method(rng: random.Random, name: str, account_id: str = "") -> dict[str, object]:
    """A PaymentMethod's fields, as the message constructor takes them: a nested dict
    builds the request in one step, where a PaymentMethod built first is then copied
    into it (about 1.3 µs a request, of the load generator's few)."""
    if name == "card":
        pan = subscriber_pan(account_id) if account_id else rng.choice(_TEST_PANS)
        return {"card": {"pan": pan, "expiry_month": rng.randint(1, 12), "expiry_year": 2031}}
    if name == "wallet":
        return {"wallet": {"provider": "mpesa", "wallet_id": f"w{rng.randrange(10**9)}"}}
    if name == "bank_account":
        return {"bank_account": {"iban": "GR1601101250000000012300695"}}
    return {"carrier_balance": {}}


def _home_ip(account_id: str) -> str:
    """A stable private address per subscriber."""
    h = zlib.crc32(account_id.encode())
    return f"10.{h >> 16 & 255}.{h >> 8 & 255}.{(h & 255) or 1}"


class RequestSource:
    """An endless, deterministic stream of requests: the same seed gives the same load.

    Keys are ``{run_id}-{n}``, unique per run, except duplicates, which reuse a recent key
    on purpose. Requests are built as they are asked for, so a run by duration needs no
    count up front.
    """

    def __init__(
        self, subscribers: Sequence[SubscriberRow], seed: int, mix: Mix, run_id: str
    ) -> None:
        payable = [s for s in subscribers if s.status.name != "CLOSED"]
        if not payable:
            raise ValueError("no subscriber that can pay: seed and import subscribers first")
        postpaid = [s for s in payable if s.plan is Plan.POSTPAID]
        prepaid = [s for s in payable if s.plan is Plan.PREPAID]
        if mix.bill_share is not None and (
            (mix.bill_share > 0 and not postpaid) or (mix.bill_share < 1 and not prepaid)
        ):
            raise ValueError("bill_share asks for a plan the subscriber file does not have")
        self._rng = random.Random(seed)
        self._all = _Deck(payable, self._rng)
        self._postpaid = _Deck(postpaid, self._rng)
        self._prepaid = _Deck(prepaid, self._rng)
        self._mix = mix
        self._run_id = run_id
        self._n = 0
        self._recent: deque[pb.PayRequest] = deque(maxlen=RECENT_MAX)
        self._method_names = [m for m in METHODS if mix.methods.get(m, 0) > 0]
        # Accumulated once: random.choices with cum_weights draws exactly as with the
        # weights it would otherwise accumulate on every call.
        self._method_cum_weights = list(
            itertools.accumulate(mix.methods[m] for m in self._method_names)
        )
        self._fraud_device = ""
        self._fraud_ip = ""
        # What each postpaid line still owes as this load pays it down (assuming the
        # payments settle), so a good bill payment never overpays past the engine's
        # allowance: a subscriber pays what is owed, then small amounts.
        self._owed = {s.account_id: s.balance_minor for s in postpaid}

    def __iter__(self) -> Iterator[tuple[str, pb.PayRequest]]:
        return self

    def __next__(self) -> tuple[str, pb.PayRequest]:
        """The next request and the kind it was meant to be (one of ``KINDS``)."""
        mix, rng = self._mix, self._rng
        roll = rng.random()
        if roll < mix.duplicate and self._recent:
            return "duplicate", rng.choice(self._recent)
        roll -= mix.duplicate
        request = self._payment()
        kind = "good"
        if roll < mix.invalid:
            request.msisdn = request.msisdn.removeprefix("+")  # not E.164: INVALID_ARGUMENT
            kind = "invalid"
        elif roll < mix.invalid + mix.declined:
            # The right format, the wrong line: MSISDN_MISMATCH.
            digit = (int(request.msisdn[-1]) + 1) % 10
            request.msisdn = request.msisdn[:-1] + str(digit)
            kind = "declined"
        elif roll < mix.invalid + mix.declined + mix.fraud:
            self._make_fraud_like(request)
            kind = "fraud"
        self._recent.append(request)
        return kind, request

    def take(self, count: int) -> list[pb.PayRequest]:
        """The next ``count`` requests."""
        return [next(self)[1] for _ in range(count)]

    def _payment(self) -> pb.PayRequest:
        rng, mix = self._rng, self._mix
        if mix.bill_share is None:
            sub = self._all.draw()
        else:
            sub = (self._postpaid if rng.random() < mix.bill_share else self._prepaid).draw()
        purpose = pb.BILL_PAYMENT if sub.plan is Plan.POSTPAID else pb.PREPAID_TOPUP
        # Amounts in the market's usual range: 1 to 40 units of the currency's major unit
        # (the engine's smallest top-up is one unit), in steps of a quarter unit.
        amount = rng.randint(4, 160) * 25
        if purpose == pb.BILL_PAYMENT:
            owed = self._owed[sub.account_id]
            amount = min(amount, owed) if owed > 0 else min(amount, 100)
            self._owed[sub.account_id] = owed - amount
        method = rng.choices(self._method_names, cum_weights=self._method_cum_weights)[0]
        request = pb.PayRequest(
            idempotency_key=f"{self._run_id}-{self._n}",
            account_id=sub.account_id,
            msisdn=sub.msisdn,
            amount={"amount_minor": amount, "currency": sub.currency},
            purpose=purpose,
            method=_method(rng, method, sub.account_id),
            channel=rng.choice(["app", "ussd", "web", "retail"]),
            # A subscriber pays from their own phone and home network, as real ones do;
            # only the fraud-like share comes from strangers' devices.
            device_id=f"dev-{sub.account_id}",
            ip=_home_ip(sub.account_id),
        )
        self._n += 1
        return request

    def _make_fraud_like(self, request: pb.PayRequest) -> None:
        # Card testing: bursts of payments for unrelated accounts from one device and
        # one IP, by card, at the top of the usual amount range.
        rng = self._rng
        if not self._fraud_device or rng.random() < 1 / FRAUD_BURST:
            self._fraud_device = f"dev-x{rng.randrange(10**6)}"
            self._fraud_ip = f"203.0.113.{rng.randrange(1, 255)}"
        request.device_id = self._fraud_device
        request.ip = self._fraud_ip
        request.channel = "web"
        request.amount.amount_minor = 40 * rng.choice([100, 50])
        request.method.CopyFrom(pb.PaymentMethod(**_method(rng, "card")))


class _Deck:
    """Subscribers dealt in a shuffled order, each once, then shuffled again: at a peak
    many different subscribers pay, and none pays again before every other has. Drawn
    with replacement instead, a fast load would have the same lines pay seconds apart,
    which fraud scoring's velocity windows rightly decline, so the settled rate would
    measure the subscriber file's size rather than the engine."""

    def __init__(self, rows: Sequence[SubscriberRow], rng: random.Random) -> None:
        self._rows = list(rows)
        self._rng = rng
        self._next = len(self._rows)  # shuffled at the first draw

    def draw(self) -> SubscriberRow:
        if self._next >= len(self._rows):
            self._rng.shuffle(self._rows)
            self._next = 0
        row = self._rows[self._next]
        self._next += 1
        return row


def build_requests(
    subscribers: Sequence[SubscriberRow], count: int, seed: int, mix: Mix, run_id: str
) -> list[pb.PayRequest]:
    """``count`` requests, the same for the same inputs; keys are unique per ``run_id``."""
    return RequestSource(subscribers, seed, mix, run_id).take(count)
