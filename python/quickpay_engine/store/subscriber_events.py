"""The outbox events of live subscriber changes (UpsertSubscribers, the feed), which both
stores write in the transaction that applies the changes."""

from __future__ import annotations

from quickpay_engine.store.audit import canonical
from quickpay_engine.subscriber_changes import ChangePlan, SubscriberChanges, audit_content

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
