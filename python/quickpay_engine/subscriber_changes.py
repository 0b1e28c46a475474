"""Live changes to the subscriber base (UpsertSubscribers, the --subscriber-events feed).

A change carries the whole line as the carrier's system holds it after the change (the
fields of the CSV import but the balance), what happened to it (its kind) and the
carrier's version of the account's record. A change whose version is not above the
one the store holds for its account is stale: ignored and counted, never applied, so a
replay or an out-of-order delivery changes nothing.

A batch travels as columns (``SubscriberChanges``); ``plan_changes`` decides, against
what the store holds, which of its changes apply and what each account becomes. Both
stores use it inside the transaction that writes the result.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from quickpay_engine._engine import currency_exponent
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.errors import InvalidArgument, echo


class ChangeKind(enum.IntEnum):
    """What happened to a line; numbers as the contract's SubscriberChangeKind."""

    ACTIVATION = 1
    STATUS_CHANGE = 2
    SIM_SWAP = 3
    MSISDN_CHANGE = 4
    PLAN_CHANGE = 5


# The audit row kind of one applied change (store/audit_check.py checks its fields).
AUDIT_KIND = "subscriber.changed"
# The largest version a change may carry: the stores keep it as a signed 64-bit integer.
VERSION_MAX = 2**63 - 1
# Times are whole seconds since 1970 up to the year 9999 (RFC 3339's range).
TIME_MAX_S = 253_402_300_799
# An opening balance is at most 18 digits of minor units, as the CSV import's.
BALANCE_ABS_MAX = 10**18 - 1

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(slots=True)
class SubscriberChanges:
    """A batch of changes as columns of equal length, in the order they came. ``labels``
    name each change in an error ("changes[17]", "message 5"), so a refusal points at
    the change its sender knows."""

    labels: list[str] = field(default_factory=list)
    account_ids: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    kinds: list[ChangeKind] = field(default_factory=list)
    msisdns: list[str] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    statuses: list[LineStatus] = field(default_factory=list)
    currencies: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    sim_swapped_at_s: list[int | None] = field(default_factory=list)
    created_at_s: list[int] = field(default_factory=list)
    opening_balances_minor: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.account_ids)

    def index_of(self, label: str) -> int | None:
        """The place of the change ``label`` names, None when none of these."""
        try:
            return self.labels.index(label)
        except ValueError:
            return None

    def prefix(self, n: int) -> SubscriberChanges:
        """The first ``n`` changes."""
        return SubscriberChanges(*(getattr(self, f)[:n] for f in self.__slots__))  # type: ignore[attr-defined]

    def suffix(self, n: int) -> SubscriberChanges:
        """The changes from the ``n``-th on."""
        return SubscriberChanges(*(getattr(self, f)[n:] for f in self.__slots__))  # type: ignore[attr-defined]

    def add(
        self,
        label: str,
        account_id: str,
        version: int,
        kind: int,
        msisdn: str,
        plan: str,
        status: str,
        currency: str,
        country: str,
        sim_swapped_at_s: int | None,
        created_at_s: int | None,
        opening_balance_minor: int = 0,
    ) -> None:
        """Checks one change and appends it; ``InvalidArgument`` names ``label.FIELD``
        (nothing is appended then). Plan and status are their names, as in the CSV."""

        def bad(name: str, why: str) -> InvalidArgument:
            return InvalidArgument(f"{label}.{name}", why)

        if not _ACCOUNT_ID.fullmatch(account_id):
            raise bad("account_id", f"{echo(account_id)} must be 1 to 64 of [A-Za-z0-9_-]")
        if not 1 <= version <= VERSION_MAX:
            raise bad("version", f"{version} must be above 0 and at most 2^63-1")
        try:
            change = ChangeKind(kind)
        except ValueError:
            names = ", ".join(k.name for k in ChangeKind)
            raise bad("kind", f"{kind} is not one of {names}") from None
        if not _E164.fullmatch(msisdn):
            raise bad("msisdn", f"{echo(msisdn)} must be E.164 ('+' then 8 to 15 digits)")
        if plan not in Plan.__members__:
            raise bad("plan", f"{echo(plan)} must be PREPAID or POSTPAID")
        if status not in LineStatus.__members__:
            raise bad("status", f"{echo(status)} must be ACTIVE, SUSPENDED, BARRED or CLOSED")
        if len(currency) != 3 or currency_exponent(currency) is None:
            raise bad("currency", f"{echo(currency)} must be an ISO 4217 code with a minor unit")
        if not _COUNTRY.fullmatch(country):
            raise bad("country", f"{echo(country)} must be an ISO 3166 alpha-2 code such as GR")
        if sim_swapped_at_s is None:
            if change is ChangeKind.SIM_SWAP:
                raise bad("sim_swapped_at", "a SIM_SWAP change needs the swap's time")
        elif not 0 <= sim_swapped_at_s <= TIME_MAX_S:
            raise bad("sim_swapped_at", f"{sim_swapped_at_s} s is not a time from 1970 to 9999")
        if created_at_s is None:
            raise bad("created_at", "is required")
        if not 0 <= created_at_s <= TIME_MAX_S:
            raise bad("created_at", f"{created_at_s} s is not a time from 1970 to 9999")
        if abs(opening_balance_minor) > BALANCE_ABS_MAX:
            raise bad("opening_balance_minor", "must be at most 18 digits of minor units")
        self.labels.append(label)
        self.account_ids.append(account_id)
        self.versions.append(version)
        self.kinds.append(change)
        self.msisdns.append(msisdn)
        self.plans.append(Plan[plan])
        self.statuses.append(LineStatus[status])
        self.currencies.append(currency)
        self.countries.append(country)
        self.sim_swapped_at_s.append(sim_swapped_at_s)
        self.created_at_s.append(created_at_s)
        self.opening_balances_minor.append(opening_balance_minor)


class NumberTaken(InvalidArgument):
    """A change gives its line a number another line keeps: refused, unless a later
    change of the same stream frees the number (a port between two lines)."""


@dataclass(frozen=True, slots=True)
class HeldLine:
    """What the store holds of an account a batch changes: its version (0 for none:
    imported, never changed live), currency and balance."""

    version: int
    currency: str
    balance_minor: int


@dataclass(slots=True)
class ChangePlan:
    """What a batch does, decided against the store's ``HeldLine`` of each account."""

    applied: list[int] = field(default_factory=list)  # indexes of the changes applied
    stale: int = 0
    # Each changed account's line after the batch, in first-change order, and the
    # index of the last change that set it (which a refusal of the write names).
    lines: dict[str, SubscriberRow] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)  # accounts new to the store
    opened: set[int] = field(default_factory=set)  # indexes of the changes that opened them
    versions: dict[str, tuple[int, ChangeKind]] = field(default_factory=dict)


def plan_changes(changes: SubscriberChanges, held: Mapping[str, HeldLine]) -> ChangePlan:
    """Goes through ``changes`` in order: each one newer than its account's version
    (as held, or as an earlier change of the batch left it) applies, the others are
    stale. A line's currency never changes (``InvalidArgument`` naming the change); a
    new line opens with its first change's opening balance, and a line held keeps its
    balance."""
    plan = ChangePlan()
    for i, account in enumerate(changes.account_ids):
        line = held.get(account)
        now = plan.versions.get(account, (line.version if line else 0, ChangeKind.ACTIVATION))
        if changes.versions[i] <= now[0]:
            plan.stale += 1
            continue
        currency = changes.currencies[i]
        before = plan.lines.get(account)
        held_currency = before.currency if before else line.currency if line else currency
        if currency != held_currency:
            raise InvalidArgument(
                f"{changes.labels[i]}.currency",
                f"account {account} is held in {held_currency}; a line's currency never"
                f" changes (open a new account for {echo(currency)})",
            )
        if before is not None:
            balance = before.balance_minor
        elif line is not None:
            balance = line.balance_minor
        else:
            balance = changes.opening_balances_minor[i]
            plan.created.add(account)
            plan.opened.add(i)
        plan.lines[account] = SubscriberRow(
            account, changes.msisdns[i], changes.plans[i], changes.statuses[i], currency,
            balance, changes.countries[i], changes.sim_swapped_at_s[i], changes.created_at_s[i],
        )  # fmt: skip
        plan.last[account] = i
        plan.versions[account] = (changes.versions[i], changes.kinds[i])
        plan.applied.append(i)
    return plan


def audit_content(
    changes: SubscriberChanges, i: int, created: bool, source: str, at_us: int
) -> dict[str, object]:
    """The audit row of applied change ``i``: the whole line as it became, who sent it
    (the caller, or the feed's subject) and whether it opened the line."""
    return {
        "kind": AUDIT_KIND,
        "account_id": changes.account_ids[i],
        "version": changes.versions[i],
        "change": changes.kinds[i].name,
        "msisdn": changes.msisdns[i],
        "plan": changes.plans[i].name,
        "status": changes.statuses[i].name,
        "currency": changes.currencies[i],
        "country": changes.countries[i],
        "sim_swapped_at_s": changes.sim_swapped_at_s[i],
        "created_at_s": changes.created_at_s[i],
        "opened": created,
        "opening_balance_minor": changes.opening_balances_minor[i] if created else None,
        "source": source,
        "at_us": at_us,
    }


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """What the store did with a batch: the count of changes applied and stale, the
    accounts it opened, and every changed account's line as it is now (balance
    included), for the engine, the ledger and fraud scoring."""

    applied: int
    stale: int
    created: frozenset[str]
    rows: list[SubscriberRow]


# Each change's placeholder number while a batch moves numbers between its lines (a
# port): not E.164, so never a real line's, and unique by account.
def placeholder_msisdn(account_id: str) -> str:
    return "#" + account_id
