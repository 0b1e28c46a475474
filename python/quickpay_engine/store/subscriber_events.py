"""The rows of live subscriber changes (UpsertSubscribers, the feed): the lines, their
versions and the outbox events, which both stores write, with their own parameter mark,
in the transaction that applies the changes."""

from __future__ import annotations

from typing import Any

from quickpay_engine.store.audit import canonical
from quickpay_engine.subscriber_changes import (
    ChangePlan,
    NumberTaken,
    SubscriberChanges,
    audit_content,
    placeholder_msisdn,
)

# The event kind of one applied change (NATS subject quickpay.settlement.subscriber_change;
# docs/contract.md, Events).
EVENT_KIND = "subscriber_change"
# What of the audit row an event leaves out: the caller's name stays in the trail.
_NOT_IN_EVENT = ("kind", "account_id", "source", "at_us")


def event_rows(
    changes: SubscriberChanges, plan: ChangePlan, now_us: int
) -> list[tuple[object, ...]]:
    """The outbox row of each applied change, in order: the line as it became, as its
    audit row has it but for the caller. The id derives from the account and version,
    which apply at most once, so a redelivered change adds no second event."""
    events: list[tuple[object, ...]] = []
    for i in plan.applied:
        content = audit_content(changes, i, i in plan.opened, "", now_us)
        payload = {k: v for k, v in content.items() if k not in _NOT_IN_EVENT}
        account, version = changes.account_ids[i], changes.versions[i]
        events.append(
            (f"evt_{EVENT_KIND}_{account}_{version}", EVENT_KIND, "", account,
             canonical(payload), now_us)
        )  # fmt: skip
    return events


def write_lines(
    db: Any,
    mark: str,
    taken: type[Exception],
    changes: SubscriberChanges,
    plan: ChangePlan,
    now_us: int,
) -> None:
    """Writes the planned lines and versions through ``db`` (a sqlite3 connection or a
    psycopg cursor, in an open transaction; ``mark`` its parameter mark). Numbers may
    move between the batch's lines (a port): each line held gives up its number first,
    so only a number another line keeps is a conflict (``taken``, the driver's unique
    violation), refused as ``NumberTaken`` naming the change."""
    m = mark
    db.executemany(
        f"UPDATE subscribers SET msisdn = {m} WHERE account_id = {m}",  # noqa: S608
        [(placeholder_msisdn(a), a) for a in plan.lines if a not in plan.created],
    )
    insert = (
        "INSERT INTO subscribers (account_id, msisdn, plan, status, currency, balance_minor,"  # noqa: S608
        " opening_balance_minor, country, sim_swapped_at_s, created_at_s)"
        f" VALUES ({', '.join([m] * 10)})"
    )
    update = (
        f"UPDATE subscribers SET msisdn = {m}, plan = {m}, status = {m}, country = {m},"  # noqa: S608
        f" sim_swapped_at_s = {m}, created_at_s = {m} WHERE account_id = {m}"
    )
    for account, r in plan.lines.items():
        try:
            if account in plan.created:
                db.execute(
                    insert,
                    (account, r.msisdn, int(r.plan), int(r.status), r.currency,
                     r.balance_minor, r.balance_minor, r.country, r.sim_swapped_at_s,
                     r.created_at_s),
                )  # fmt: skip
            else:
                db.execute(
                    update,
                    (r.msisdn, int(r.plan), int(r.status), r.country, r.sim_swapped_at_s,
                     r.created_at_s, account),
                )  # fmt: skip
        except taken:
            label = changes.labels[plan.last[account]]
            raise NumberTaken(f"{label}.msisdn", f"{r.msisdn} is another line's number") from None
    db.executemany(
        "INSERT INTO subscriber_versions (account_id, version, kind, changed_at_us)"  # noqa: S608
        f" VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (account_id) DO UPDATE SET"
        " version = excluded.version, kind = excluded.kind,"
        " changed_at_us = excluded.changed_at_us",
        [(a, v, int(k), now_us) for a, (v, k) in plan.versions.items()],
    )
