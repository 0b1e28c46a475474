"""The stores' side of live subscriber changes, on SQLite and on PostgreSQL (one database
and three): each batch all or none, versions kept per account, ports within a batch, and
the audit trail still verifying."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BOTH_BACKENDS, CREATED, settings_for
from quickpay_engine.domain import LineStatus, Plan
from quickpay_engine.errors import InvalidArgument
from quickpay_engine.storage import open_store
from quickpay_engine.subscriber_changes import ChangeKind, NumberTaken, SubscriberChanges

pytestmark = BOTH_BACKENDS


def changes(*rows: tuple[str, int, int, str, str, str, str]) -> SubscriberChanges:
    """(account, version, kind, msisdn, plan, status, currency) each, KE lines."""
    batch = SubscriberChanges()
    for n, (account, version, kind, msisdn, plan, status, currency) in enumerate(rows):
        batch.add(
            f"c{n}", account, version, kind, msisdn, plan, status, currency, "KE", None,
            CREATED, opening_balance_minor=300,
        )  # fmt: skip
    return batch


@pytest.fixture
def store(data_dir: Path, database_urls: list[str] | None):  # type: ignore[no-untyped-def]
    opened = open_store(settings_for(data_dir, database_urls=database_urls))
    try:
        yield opened
    finally:
        opened.close()


def test_a_batch_applies_what_is_newer_and_counts_the_rest(store) -> None:  # type: ignore[no-untyped-def]
    A = ChangeKind.ACTIVATION
    first = store.apply_subscriber_changes(
        changes(
            ("acc-new", 4, A, "+254711000100", "PREPAID", "ACTIVE", "KES"),
            ("acc-pre", 2, ChangeKind.STATUS_CHANGE, "+254700000004", "PREPAID", "BARRED", "KES"),
            ("acc-new", 3, A, "+254711000101", "PREPAID", "CLOSED", "KES"),
        ),
        source="test",
    )
    assert (first.applied, first.stale, first.created) == (2, 1, frozenset({"acc-new"}))
    by_account = {r.account_id: r for r in first.rows}
    assert by_account["acc-new"].balance_minor == 300, "the opening balance of a new line"
    assert by_account["acc-pre"].balance_minor == 15_000, "a line held keeps its balance"
    line = store.subscriber("acc-pre")
    assert line is not None and line.status is LineStatus.BARRED
    assert store.subscriber_versions(["acc-new", "acc-pre", "acc-post"]) == {
        "acc-new": 4, "acc-pre": 2,
    }  # fmt: skip
    again = store.apply_subscriber_changes(
        changes(("acc-pre", 2, A, "+254700000004", "POSTPAID", "ACTIVE", "KES"))
    )
    assert (again.applied, again.stale, again.rows) == (0, 1, [])
    line = store.subscriber("acc-pre")
    assert line is not None and (line.plan, line.status) == (Plan.PREPAID, LineStatus.BARRED)
    assert store.verify() == []


def test_a_refused_change_writes_nothing_of_its_batch(store) -> None:  # type: ignore[no-untyped-def]
    S = ChangeKind.STATUS_CHANGE
    with pytest.raises(NumberTaken) as taken:
        store.apply_subscriber_changes(
            changes(
                ("acc-pre", 3, S, "+254700000004", "PREPAID", "SUSPENDED", "KES"),
                ("acc-new", 1, ChangeKind.ACTIVATION, "+306900000002", "PREPAID", "ACTIVE", "KES"),
            )
        )
    assert taken.value.field == "c1.msisdn"
    with pytest.raises(InvalidArgument) as currency:
        store.apply_subscriber_changes(
            changes(("acc-post", 1, S, "+306900000002", "POSTPAID", "ACTIVE", "KES"))
        )
    assert currency.value.field == "c0.currency"
    line = store.subscriber("acc-pre")
    assert line is not None and line.status is LineStatus.ACTIVE
    assert store.subscriber("acc-new") is None
    assert store.subscriber_versions(["acc-pre", "acc-new", "acc-post"]) == {}
    assert store.verify() == []


def test_numbers_swap_between_two_lines_in_one_batch(store) -> None:  # type: ignore[no-untyped-def]
    M = ChangeKind.MSISDN_CHANGE
    done = store.apply_subscriber_changes(
        changes(
            ("acc-pre", 1, M, "+254700000003", "PREPAID", "ACTIVE", "KES"),
            ("acc-pre-barred", 1, M, "+254700000004", "PREPAID", "BARRED", "KES"),
        )
    )
    assert done.applied == 2
    pre, barred = store.subscriber("acc-pre"), store.subscriber("acc-pre-barred")
    assert pre is not None and barred is not None
    assert (pre.msisdn, barred.msisdn) == ("+254700000003", "+254700000004")
    assert store.verify() == []


async def test_a_line_activated_live_settles_on_every_store(server, stub) -> None:  # type: ignore[no-untyped-def]
    """The RPC end to end on each backend (with three databases the store commits its
    batches by two-phase commit; the subscriber changes, billing's alone, commit there)."""
    from conftest import topup
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
    from test_subscribers_live import change

    summary = await stub.UpsertSubscribers(
        iter([change("acc-live-pg", 1, msisdn="+254711000400", opening_minor=100)]), timeout=30
    )
    assert (summary.applied, summary.created) == (1, 1)
    paid = await stub.Pay(
        topup("live-pg-1", account_id="acc-live-pg", msisdn="+254711000400"), timeout=30
    )
    assert paid.status == pb.SETTLED and paid.confirmation.balance_after.amount_minor == 5_100
    assert server.store.verify() == []
