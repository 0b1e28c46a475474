"""Labelled synthetic payment traffic for training and evaluating the fraud model.

The generative model (every draw from one ``numpy.random.Generator`` seeded by the
caller, so a seed gives the same traffic byte for byte):

Subscribers. A carrier base in one home country (``GB``; 3% of subscribers hold a
foreign nationality and card). 60% prepaid, 40% postpaid. Account age is log-normal
(median about two years); 4% of accounts open during the simulated period. Each has
one or two devices, a home IP /24, a share of the carrier's mobile CGNAT ranges
(shared by everyone, so "many accounts on one network" is normal there), a
preferred channel (app, web or USSD) and one or two cards (a keyed fingerprint and a
BIN; 97% of BINs domestic). 3% had their SIM swapped long ago.

Habits. Postpaid lines pay bills and part-payments about every ten days, a personal
amount (log-normal around 45.00, spread 25%), by card, wallet or bank account.
Prepaid lines top up 0.2 to 0.8 times a day, favourite amounts of 5 to 30.00, by card
or wallet; 10% of top-ups are for a family member's line. Payments happen between
08:00 and 23:00. 3% fail (insufficient funds) and half of those are retried within
minutes. Honest surprises: 1.5% of payments come from a new phone (which then becomes
the usual one), and 1.5% of subscribers swap their SIM legitimately during the period
and then pay from a new phone.

Attacks (label 1, ``attack`` names the kind), per 1,000 subscribers over 14 days:

1. SIM_SWAP_TAKEOVER (6): the victim's SIM is swapped; 0.5 to 10 hours later the
   attacker pays 1 to 4 large amounts (three to ten times the victim's habit) from a
   new device and network, with the victim's stored card or a stolen one. The victim
   pays nothing for two days.
2. CARD_TESTING (3): from one device and network, 10 to 40 stolen cards (mostly
   foreign or unknown BINs) are tried within minutes for small amounts on one to three
   freshly opened prepaid lines; three quarters are declined.
3. STOLEN_CARD_MANY_LINES (4): one stolen card tops up 5 to 15 prepaid lines (half
   fresh mule lines, half real customers of a black-market top-up seller) within three
   hours, from the seller's device.
4. ACCOUNT_TAKEOVER (8): an established account pays two to eight times its habit
   from a new device and network, mostly on the web, with its own card or a new one.
5. SLOW_LAUNDERING (3): one stolen card tops up a pool of 4 to 8 mule lines once or
   twice a day for 3 to 7 days, at ordinary amounts, at least two hours apart: under
   every velocity limit.

File format: a NumPy ``.npz`` (no pickles) with one array per column, all of one
length, in time order: the scorer's 14 columns (``account_ids``, ``msisdns``,
``card_bins``, ``device_ids``, ``ips``, ``channels``, ``countries`` as unicode;
``amounts_minor``, ``sim_swapped_at_s``, ``created_at_s`` int64; ``purposes``,
``methods``, ``plans`` uint8; ``card_fingerprints`` uint64), then ``at_s`` (int64),
``outcomes`` (uint8: 1 settled, 2 failed), ``labels`` (uint8: 1 fraud) and ``attacks``
(uint8, the numbers of ``ATTACKS``). The BIN table the traffic assumes is
``SIM_BIN_TABLE`` (synthetic BINs, not real issuers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quickpay_engine._engine import NO_TIME

# 2026-01-01T00:00:00Z: the simulated period starts here.
START_S = 1_767_225_600
DAY_S = 86_400
HOUR_S = 3_600
HOME = "GB"

# Contract numbers (protos/quickpay/v1/settlement.proto and validate/mod.rs).
PREPAID, POSTPAID = 1, 2
BILL_PAYMENT, PREPAID_TOPUP = 1, 2
CARD, WALLET, BANK_ACCOUNT = 1, 2, 3
SETTLED, FAILED = 1, 2

ATTACKS = {
    0: "NONE",
    1: "SIM_SWAP_TAKEOVER",
    2: "CARD_TESTING",
    3: "STOLEN_CARD_MANY_LINES",
    4: "ACCOUNT_TAKEOVER",
    5: "SLOW_LAUNDERING",
}
# Attack campaigns per 1,000 subscribers over 14 days.
ATTACK_RATES = {1: 6.0, 2: 3.0, 3: 4.0, 4: 8.0, 5: 3.0}

DOMESTIC_BINS = [f"4{n:05d}" for n in range(10_000, 10_040)]
FOREIGN_BINS = {
    "FR": ["513001", "513002"],
    "US": ["520001", "520002", "520003"],
    "NG": ["530001"],
    "BR": ["540001", "540002"],
    "IN": ["550001"],
}
# BINs absent from the table (a stolen card from an issuer the table does not know).
UNKNOWN_BINS = ["690001", "690002", "690003"]
SIM_BIN_TABLE = "# Synthetic BIN table of the fraud simulator (not real issuers).\n" + "".join(
    [f"{b},{HOME}\n" for b in DOMESTIC_BINS]
    + [f"{b},{cc}\n" for cc, bins in FOREIGN_BINS.items() for b in bins]
)
FOREIGN_COUNTRIES = list(FOREIGN_BINS)
CGNAT_PREFIXES = [f"100.64.{i}" for i in range(24)]

STRING_COLUMNS = (
    "account_ids",
    "msisdns",
    "card_bins",
    "device_ids",
    "ips",
    "channels",
    "countries",
)
COLUMNS = (
    "account_ids",
    "msisdns",
    "amounts_minor",
    "purposes",
    "methods",
    "card_fingerprints",
    "card_bins",
    "device_ids",
    "ips",
    "channels",
    "plans",
    "countries",
    "sim_swapped_at_s",
    "created_at_s",
)
DTYPES = {
    "amounts_minor": np.int64,
    "purposes": np.uint8,
    "methods": np.uint8,
    "card_fingerprints": np.uint64,
    "plans": np.uint8,
    "sim_swapped_at_s": np.int64,
    "created_at_s": np.int64,
    "at_s": np.int64,
    "outcomes": np.uint8,
    "labels": np.uint8,
    "attacks": np.uint8,
}


def _percent(factor: float) -> int:
    """A random factor as whole percent: amounts are scaled in integers, never floats."""
    return round(100 * factor)


@dataclass
class Subscriber:
    """One simulated line and its habits."""

    account_id: str
    msisdn: str
    plan: int
    country: str
    created_at_s: int
    sim_swapped_at_s: int
    devices: list[str]
    home_prefix: str
    channel: str
    cards: list[tuple[int, str]]
    method: int
    amount_minor: int
    rate_per_day: float
    family_msisdn: str | None = None
    quiet_until_s: int = 0
    swaps: list[int] = field(default_factory=list)

    def swapped_at(self, at_s: int) -> int:
        """The SIM swap time the subscriber table shows at `at_s`."""
        seen = [s for s in self.swaps if s <= at_s]
        return max(seen) if seen else self.sim_swapped_at_s


class _Sim:
    def __init__(self, seed: int, subscribers: int, days: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.days = days
        self.end_s = START_S + days * DAY_S
        self.rows: list[dict[str, object]] = []
        self.subs = [self._subscriber(i) for i in range(subscribers)]
        self.next_account = subscribers

    # Identities --------------------------------------------------------------------

    def _fp(self) -> int:
        return int(self.rng.integers(1, 2**63))

    def _device(self) -> str:
        return f"dev-{self._fp():016x}"

    def _prefix(self) -> str:
        r = self.rng.integers(1, 223, size=3)
        return f"{r[0]}.{r[1]}.{r[2]}"

    def _ip(self, prefix: str) -> str:
        return f"{prefix}.{int(self.rng.integers(1, 255))}"

    def _stolen_card(self, p_foreign: float, p_unknown: float = 0.0) -> tuple[int, str]:
        u = self.rng.random()
        if u < p_unknown:
            return self._fp(), str(self.rng.choice(UNKNOWN_BINS))
        if u < p_unknown + p_foreign:
            cc = str(self.rng.choice(FOREIGN_COUNTRIES))
            return self._fp(), str(self.rng.choice(FOREIGN_BINS[cc]))
        return self._fp(), str(self.rng.choice(DOMESTIC_BINS))

    def _subscriber(
        self, i: int, *, mule: bool = False, created_at_s: int | None = None
    ) -> Subscriber:
        rng = self.rng
        plan = PREPAID if mule or rng.random() < 0.6 else POSTPAID
        foreign = not mule and rng.random() < 0.03
        country = str(rng.choice(FOREIGN_COUNTRIES)) if foreign else HOME
        if created_at_s is None:
            if rng.random() < 0.04:
                created_at_s = START_S + int(rng.integers(0, self.days * DAY_S))
            else:
                created_at_s = START_S - int(rng.lognormal(np.log(730), 0.9) * DAY_S) - DAY_S
        bins = FOREIGN_BINS[country] if foreign else DOMESTIC_BINS
        cards = [(self._fp(), str(rng.choice(bins))) for _ in range(1 + int(rng.random() < 0.3))]
        if plan == PREPAID:
            method = CARD if rng.random() < 0.65 else WALLET
            amount = int(rng.choice([500, 1000, 1500, 2000, 3000], p=[0.2, 0.35, 0.15, 0.2, 0.1]))
            rate = float(rng.uniform(0.2, 0.8))
        else:
            method = int(rng.choice([CARD, WALLET, BANK_ACCOUNT], p=[0.5, 0.2, 0.3]))
            amount = int(rng.lognormal(np.log(4500), 0.5))
            rate = 0.1
        old_swap = rng.random() < 0.03
        return Subscriber(
            account_id=f"A{i:07d}",
            msisdn=f"+44770{i:07d}",
            plan=plan,
            country=country,
            created_at_s=created_at_s,
            sim_swapped_at_s=created_at_s + DAY_S if old_swap else NO_TIME,
            devices=[self._device() for _ in range(1 + int(rng.random() < 0.3))],
            home_prefix=self._prefix(),
            channel=str(rng.choice(["app", "web", "ussd"], p=[0.5, 0.25, 0.25])),
            cards=cards,
            method=method,
            amount_minor=amount,
            rate_per_day=rate,
        )

    def _mule(self, at_s: int) -> Subscriber:
        created = at_s - int(self.rng.integers(HOUR_S, 20 * DAY_S))
        sub = self._subscriber(self.next_account, mule=True, created_at_s=created)
        self.next_account += 1
        return sub

    # Rows ----------------------------------------------------------------------------

    def _emit(
        self,
        sub: Subscriber,
        at_s: int,
        amount_minor: int,
        *,
        method: int,
        card: tuple[int, str] | None,
        device: str,
        ip: str,
        channel: str,
        outcome: int,
        attack: int = 0,
        msisdn: str | None = None,
    ) -> None:
        fp, bin_ = card if card is not None and method == CARD else (0, "")
        self.rows.append(
            {
                "account_ids": sub.account_id,
                "msisdns": msisdn or sub.msisdn,
                "amounts_minor": max(1, int(amount_minor)),
                "purposes": PREPAID_TOPUP if sub.plan == PREPAID else BILL_PAYMENT,
                "methods": method,
                "card_fingerprints": fp,
                "card_bins": bin_,
                "device_ids": device,
                "ips": ip,
                "channels": channel,
                "plans": sub.plan,
                "countries": sub.country,
                "sim_swapped_at_s": sub.swapped_at(at_s),
                "created_at_s": sub.created_at_s,
                "at_s": int(at_s),
                "outcomes": outcome,
                "labels": int(attack != 0),
                "attacks": attack,
            }
        )

    def _daytime(self, day: int) -> int:
        return START_S + day * DAY_S + int(self.rng.uniform(8, 23) * HOUR_S)

    def legit(self, sub: Subscriber) -> None:
        """The subscriber's own payments over the period."""
        rng = self.rng
        if rng.random() < 0.015:
            sub.swaps.append(START_S + int(rng.integers(DAY_S, self.days * DAY_S)))
        times = sorted(
            self._daytime(int(d))
            for d in range(self.days)
            for _ in range(int(rng.poisson(sub.rate_per_day)))
        )
        if sub.family_msisdn is None and sub.plan == PREPAID and rng.random() < 0.3:
            sub.family_msisdn = f"+44771{int(rng.integers(0, 10**7)):07d}"
        for at_s in times:
            if at_s < sub.created_at_s or at_s < sub.quiet_until_s:
                continue
            swapped_recently = any(0 <= at_s - s < 3 * DAY_S for s in sub.swaps)
            if rng.random() < 0.015 or (swapped_recently and rng.random() < 0.6):
                sub.devices.insert(0, self._device())  # A new phone becomes the usual one.
            device = sub.devices[0] if rng.random() < 0.9 else sub.devices[-1]
            prefix = sub.home_prefix if rng.random() < 0.7 else str(rng.choice(CGNAT_PREFIXES))
            channel = (
                sub.channel if rng.random() < 0.85 else str(rng.choice(["app", "web", "ussd"]))
            )
            if sub.plan == PREPAID:
                amount = (
                    sub.amount_minor if rng.random() < 0.7 else int(rng.choice([500, 1000, 2000]))
                )
            else:
                amount = sub.amount_minor * _percent(rng.lognormal(0, 0.25)) // 100
            msisdn = sub.family_msisdn if sub.family_msisdn and rng.random() < 0.1 else None
            card = sub.cards[int(rng.integers(len(sub.cards)))]
            failed = rng.random() < 0.03
            kw: dict[str, Any] = dict(
                method=sub.method, card=card, device=device, channel=channel, msisdn=msisdn
            )
            self._emit(
                sub, at_s, amount, ip=self._ip(prefix), outcome=FAILED if failed else SETTLED, **kw
            )
            if failed and rng.random() < 0.5:
                retry_s = at_s + int(rng.integers(60, 600))
                self._emit(sub, retry_s, amount, ip=self._ip(prefix), outcome=SETTLED, **kw)

    # Attacks -------------------------------------------------------------------------

    def _victim(self) -> Subscriber:
        while True:
            sub = self.subs[int(self.rng.integers(len(self.subs)))]
            if sub.created_at_s < START_S and not sub.swaps:
                return sub

    def _attack_start(self) -> int:
        return START_S + int(self.rng.integers(2 * DAY_S, self.days * DAY_S - 6 * HOUR_S))

    def sim_swap_takeover(self) -> None:
        rng, victim = self.rng, self._victim()
        swap_s = self._attack_start()
        victim.swaps.append(swap_s)
        victim.quiet_until_s = swap_s + 2 * DAY_S
        device, prefix = self._device(), self._prefix()
        card = victim.cards[0] if rng.random() < 0.6 else self._stolen_card(0.5)
        method = CARD if card is not victim.cards[0] else victim.method
        at_s = swap_s + int(rng.uniform(0.5, 10) * HOUR_S)
        for _ in range(int(rng.integers(1, 5))):
            amount = victim.amount_minor * int(rng.integers(300, 1_001)) // 100
            self._emit(
                victim,
                at_s,
                amount,
                method=method,
                card=card,
                device=device,
                ip=self._ip(prefix),
                channel=str(rng.choice(["app", "web"])),
                outcome=SETTLED,
                attack=1,
            )
            at_s += int(rng.integers(60, 1_800))

    def card_testing(self) -> None:
        rng = self.rng
        at_s = self._attack_start()
        mules = [self._mule(at_s) for _ in range(int(rng.integers(1, 4)))]
        device, prefix = self._device(), self._prefix()
        for _ in range(int(rng.integers(10, 41))):
            mule = mules[int(rng.integers(len(mules)))]
            outcome = FAILED if rng.random() < 0.75 else SETTLED
            self._emit(
                mule,
                at_s,
                int(rng.integers(100, 501)),
                method=CARD,
                card=self._stolen_card(0.6, 0.3),
                device=device,
                ip=self._ip(prefix),
                channel="web",
                outcome=outcome,
                attack=2,
            )
            at_s += int(rng.integers(3, 40))

    def stolen_card_many_lines(self) -> None:
        rng = self.rng
        at_s = self._attack_start()
        card = self._stolen_card(0.6)
        device, prefix = self._device(), self._prefix()
        for _ in range(int(rng.integers(5, 16))):
            if rng.random() < 0.5:
                line = self._mule(at_s)
            else:
                line = self._victim()
                if line.plan != PREPAID:
                    line = self._mule(at_s)
            self._emit(
                line,
                at_s,
                int(rng.choice([1000, 2000, 3000, 5000])),
                method=CARD,
                card=card,
                device=device,
                ip=self._ip(prefix),
                channel="web",
                outcome=SETTLED,
                attack=3,
            )
            at_s += int(rng.integers(120, 1_200))

    def account_takeover(self) -> None:
        rng, victim = self.rng, self._victim()
        at_s = self._attack_start()
        device, prefix = self._device(), self._prefix()
        own = rng.random() < 0.5
        card = victim.cards[0] if own else self._stolen_card(0.4)
        method = victim.method if own else CARD
        channel = "web" if rng.random() < 0.7 else "app"
        for _ in range(int(rng.integers(1, 4))):
            amount = victim.amount_minor * int(rng.integers(200, 801)) // 100
            self._emit(
                victim,
                at_s,
                amount,
                method=method,
                card=card,
                device=device,
                ip=self._ip(prefix),
                channel=channel,
                outcome=SETTLED,
                attack=4,
            )
            at_s += int(rng.integers(120, 1_800))

    def slow_laundering(self) -> None:
        rng = self.rng
        start_s = START_S + int(rng.integers(DAY_S, max(2, self.days - 3) * DAY_S))
        card = self._stolen_card(0.7)
        mules = [self._mule(start_s) for _ in range(int(rng.integers(4, 9)))]
        devices = [self._device(), self._device()]
        for day in range(int(rng.integers(3, 8))):
            at_s = start_s + day * DAY_S + int(rng.integers(0, 4 * HOUR_S))
            for _ in range(int(rng.integers(1, 3))):
                if at_s >= self.end_s:
                    return
                mule = mules[int(rng.integers(len(mules)))]
                device = devices[int(rng.integers(2))]
                self._emit(
                    mule,
                    at_s,
                    int(rng.choice([1000, 1500, 2000, 3000])),
                    method=CARD,
                    card=card,
                    device=device,
                    ip=self._ip(str(rng.choice(CGNAT_PREFIXES))),
                    channel="app",
                    outcome=SETTLED,
                    attack=5,
                )
                at_s += int(rng.integers(2 * HOUR_S, 6 * HOUR_S))

    def run(self) -> dict[str, np.ndarray]:
        scale = len(self.subs) / 1_000 * self.days / 14
        makers = {
            1: self.sim_swap_takeover,
            2: self.card_testing,
            3: self.stolen_card_many_lines,
            4: self.account_takeover,
            5: self.slow_laundering,
        }
        # Attacks first: a takeover silences its victim, which the legit pass honours.
        for attack, rate in ATTACK_RATES.items():
            for _ in range(max(1, int(self.rng.poisson(rate * scale)))):
                makers[attack]()
        for sub in self.subs:
            self.legit(sub)
        self.rows.sort(key=lambda r: r["at_s"])  # type: ignore[arg-type, return-value]
        return {
            name: np.array([r[name] for r in self.rows], dtype=DTYPES.get(name, np.str_))
            for name in (*COLUMNS, "at_s", "outcomes", "labels", "attacks")
        }


def simulate(seed: int, subscribers: int = 2_000, days: int = 14) -> dict[str, np.ndarray]:
    """Labelled traffic of `subscribers` lines over `days` days, in time order."""
    if subscribers < 10 or days < 4:
        raise ValueError("simulate needs at least 10 subscribers and 4 days")
    return _Sim(seed, subscribers, days).run()


def save(traffic: dict[str, np.ndarray], path: Path) -> None:
    """Writes traffic as a compressed .npz (the format in the module docstring)."""
    with path.open("wb") as f:
        np.savez_compressed(f, **traffic)  # type: ignore[arg-type]


def load(path: Path) -> dict[str, np.ndarray]:
    """Reads a traffic .npz, checking that every column is there with one length."""
    with np.load(path, allow_pickle=False) as data:
        traffic = {name: data[name] for name in data.files}
    names = (*COLUMNS, "at_s", "outcomes", "labels", "attacks")
    missing = [n for n in names if n not in traffic]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    lengths = {len(traffic[n]) for n in names}
    if len(lengths) != 1:
        raise ValueError(f"{path}: columns of unequal length {sorted(lengths)}")
    return {n: traffic[n] for n in names}
