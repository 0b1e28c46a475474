"""The PostgreSQL store against the real server: the SQLite store's meaning on one database
and on three (billing, AR, provisioning) as two-phase commit participants; migrations."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import SUBSCRIBERS
from pg_support import (
    create_database,
    drop_database,
    prepared_transactions,
    require,
    reset_database,
)
from quickpay_engine.domain import (
    Discrepancy,
    LineStatus,
    Method,
    MethodKind,
    PaymentIntent,
    PaymentStatus,
    Plan,
    Purpose,
    SubscriberRow,
)
from quickpay_engine.errors import StoreError
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.audit import verify
from quickpay_engine.store.pg_migrations import latest, migrate
from quickpay_engine.store.postgres import PostgresStore, PostgresUrls
from quickpay_engine.store.sqlite import IDEMPOTENCY_CONFLICT, RefundRow

# The audit chain's key of these stores (the data dir's audit.key in a real one).
AUDIT_KEY = b"q" * 32


@dataclasses.dataclass
class Databases:
    """The store under test and where each of its domains lives."""

    store: PostgresStore
    urls: PostgresUrls

    def rows(self, domain: str, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.urls.of(domain)) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, domain: str, sql: str) -> None:
        with psycopg.connect(self.urls.of(domain), autocommit=True) as conn:
            conn.execute(sql)

    def finish_refund(self, refund_id: str, reference: str, now_us: int):
        """``finish_refund`` through the path the layout calls for."""
        if not self.urls.split:
            return self.store.finish_refund(refund_id, reference, now_us)
        gid = f"qp:test:refund:{refund_id}:{now_us}"
        result = self.store.prepare_refund(refund_id, reference, gid, now_us)
        self.store.commit_prepared(gid)
        return result

    def commit(self, decisions: list[Decision], now_us: int):
        """One batch through the path the layout calls for: a local commit on one
        database, prepare and commit prepared on three."""
        if not self.urls.split:
            return self.store.commit_batch(decisions, now_us)
        gid = f"qp:test:{now_us}:{decisions[0].payment_id}"
        result = self.store.prepare_batch(decisions, gid, now_us)
        self.store.commit_prepared(gid)
        return result


@pytest.fixture(scope="module")
def made() -> Iterator[list[str]]:
    """Three databases for the module, emptied before each test that uses them."""
    require()
    urls = [create_database() for _ in range(3)]
    try:
        yield urls
    finally:
        for url in urls:
            drop_database(url)


def chain(store: PostgresStore) -> tuple[int, object]:
    """(rows that verify, the first break) of the store's audit trail under its key."""
    report = verify(store.audit_rows(), store.audit_key)
    return report.good, report.broken


@contextlib.contextmanager
def databases(made: list[str], count: int) -> Iterator[Databases]:
    """A store over ``count`` empty databases (1: every domain in one; 3: billing, AR
    and provisioning apart), seeded with the shared subscribers."""
    used = made[:count]
    for url in used:
        reset_database(url)
    urls = PostgresUrls(used[0], used[-1], used[1 % count])
    dbs = Databases(PostgresStore(urls, AUDIT_KEY), urls)
    try:
        dbs.store.import_subscribers(SUBSCRIBERS)
        yield dbs
    finally:
        dbs.store.close()
    left = prepared_transactions(used)
    assert not left, f"prepared transactions left behind: {left}"


@pytest.fixture(params=[1, 3], ids=["one", "three"])
def dbs(request: pytest.FixtureRequest, made: list[str]) -> Iterator[Databases]:
    """Each layout in turn."""
    with databases(made, request.param) as opened:
        yield opened


@pytest.fixture
def one(made: list[str]) -> Iterator[Databases]:
    """Every domain in one database."""
    with databases(made, 1) as opened:
        yield opened


@pytest.fixture
def three(made: list[str]) -> Iterator[Databases]:
    """Billing, AR and provisioning in three databases."""
    with databases(made, 3) as opened:
        yield opened


def intent(key: str, account: str = "acc-post-barred", amount: int = 3_000) -> PaymentIntent:
    sub = next(s for s in SUBSCRIBERS if s.account_id == account)
    purpose = Purpose.BILL_PAYMENT if sub.plan is Plan.POSTPAID else Purpose.PREPAID_TOPUP
    return PaymentIntent(
        idempotency_key=key,
        fingerprint=f"fp-{key}",
        account_id=account,
        msisdn=sub.msisdn,
        amount_minor=amount,
        currency=sub.currency,
        purpose=purpose,
        method=Method(MethodKind.CARD, "card ****4242"),
        channel="app",
        device_id="dev",
        ip="192.0.2.1",
    )


def settle(key: str, **kw: object) -> Decision:
    return Decision(
        f"pay_{key}", intent(key, **kw), gateway="acq-a", gateway_reference=f"ref-{key}"
    )


TABLES = [
    ("billing", "payments"),
    ("billing", "billing_records"),
    ("ar", "ar_entries"),
    ("provisioning", "provisioning_changes"),
    ("billing", "audit_log"),
    ("billing", "outbox"),
]


def counts(dbs: Databases) -> list[int]:
    return [dbs.rows(d, f"SELECT count(*) FROM {t}")[0][0] for d, t in TABLES]


def test_one_settlement_writes_every_domain_in_its_database(dbs: Databases) -> None:
    (outcome,), states = dbs.commit([settle("a1", amount=8_000)], now_us=1)
    assert outcome.status is PaymentStatus.SETTLED
    assert outcome.confirmation.service_state_after is LineStatus.ACTIVE
    assert [(s.account_id, s.balance_minor, s.status) for s in states] == [
        ("acc-post-barred", 0, LineStatus.ACTIVE)
    ]
    assert dbs.rows(
        "billing", "SELECT payment_id, kind, amount_minor, balance_after_minor FROM billing_records"
    ) == [("pay_a1", "PAYMENT", 8_000, 0)]
    assert dbs.rows(
        "ar", "SELECT ar_account, debit_minor, credit_minor FROM ar_entries ORDER BY leg"
    ) == [("gateway_clearing:acq-a", 8_000, 0), ("receivable:acc-post-barred", 0, 8_000)]
    assert dbs.rows(
        "provisioning", "SELECT state_before, state_after, rule_id FROM provisioning_changes"
    ) == [(3, 1, "postpaid-barred-paid-up")]
    assert [k for (k,) in dbs.rows("billing", "SELECT kind FROM outbox ORDER BY cursor")] == [
        "service_state",
        "settlement",
    ]
    if dbs.urls.split:
        # Each domain wrote only its own database.
        assert dbs.rows("ar", "SELECT count(*) FROM payments") == [(0,)]
        assert dbs.rows("billing", "SELECT count(*) FROM ar_entries") == [(0,)]
        assert dbs.rows("billing", "SELECT count(*) FROM provisioning_changes") == [(0,)]
    assert chain(dbs.store) == (1, None)
    assert dbs.store.verify() == []


def test_redo_of_a_batch_changes_nothing(dbs: Databases) -> None:
    batch = [settle("r1"), settle("r2", account="acc-pre-barred", amount=500)]
    first, _ = dbs.commit(batch, now_us=1)
    before = counts(dbs)
    again, states = dbs.commit(batch, now_us=2)
    assert [o.replayed for o in again] == [True, True]
    assert [o.payment_id for o in again] == [o.payment_id for o in first]
    assert states == []
    assert counts(dbs) == before
    assert dbs.store.subscriber("acc-post-barred").balance_minor == 5_000
    assert dbs.store.subscriber("acc-pre-barred").balance_minor == 500


def test_one_bad_payment_does_not_sink_the_batch(dbs: Databases) -> None:
    dbs.commit([settle("b0")], now_us=1)
    clash = Decision("pay_other", intent("b0", amount=1))  # key b0 is taken by pay_b0
    outcomes, _ = dbs.commit([settle("b1"), clash, settle("b2")], now_us=2)
    assert [o.status for o in outcomes] == [PaymentStatus.SETTLED] * 3
    assert outcomes[1].replayed and outcomes[1].payment_id == "pay_b0"
    assert dbs.store.subscriber("acc-post-barred").balance_minor == 8_000 - 3 * 3_000
    assert chain(dbs.store) == (3, None)
    assert dbs.store.verify() == []


def test_an_ar_row_clash_in_its_own_database_fails_that_payment_alone(dbs: Databases) -> None:
    # A leftover AR leg for pay_c2 (say, from a hand fix): the AR insert fails, which in the
    # split layout is a different database from the one the payment row went to.
    dbs.execute(
        "ar",
        "INSERT INTO ar_entries (document_id, payment_id, leg, ar_account, debit_minor,"
        " credit_minor, currency, created_at_us) VALUES ('pay_c2', 'pay_c2', 1, 'x', 1, 0,"
        " 'EUR', 0)",
    )
    outcomes, _ = dbs.commit([settle("c1"), settle("c2"), settle("c3")], now_us=1)
    assert [o.status for o in outcomes] == [
        PaymentStatus.SETTLED,
        PaymentStatus.FAILED,
        PaymentStatus.SETTLED,
    ]
    assert outcomes[1].decline_reason == "STORE_REJECTED"
    assert dbs.store.get_payment(payment_id="pay_c2") is None
    assert dbs.rows("billing", "SELECT count(*) FROM billing_records") == [(2,)]
    assert dbs.store.subscriber("acc-post-barred").balance_minor == 8_000 - 2 * 3_000


def test_ledgers_balance_balances_equal_history_and_verify_is_clean(dbs: Databases) -> None:
    rng = random.Random(5)
    payable = [s for s in SUBSCRIBERS if s.status is not LineStatus.CLOSED]
    for batch in range(10):
        decisions = [
            settle(
                f"p{batch}-{n}",
                account=rng.choice(payable).account_id,
                amount=rng.randint(1, 9_999),
            )
            for n in range(rng.randint(1, 30))
        ]
        dbs.commit(decisions, now_us=batch + 1)
    sums = dbs.rows(
        "ar", "SELECT currency, sum(debit_minor), sum(credit_minor) FROM ar_entries GROUP BY 1"
    )
    assert len(sums) == 2 and all(debits == credits for _, debits, credits in sums)
    for sub in payable:
        ((paid,),) = dbs.rows(
            "billing",
            "SELECT coalesce(sum(amount_minor), 0) FROM billing_records WHERE account_id = %s",
            (sub.account_id,),
        )
        sign = -1 if sub.plan is Plan.POSTPAID else 1
        assert dbs.store.subscriber(sub.account_id).balance_minor == sub.balance_minor + sign * paid
    assert dbs.store.verify() == []
    # The near miss: one AR leg without its partner breaks two invariants, and verify sees
    # it in whichever database holds the AR ledger.
    dbs.execute(
        "ar",
        "INSERT INTO ar_entries (document_id, payment_id, leg, ar_account, debit_minor,"
        " credit_minor, currency, created_at_us) VALUES ('pay_p0-0', 'pay_p0-0', 3, 'x', 5, 0,"
        " 'EUR', 0)",
    )
    problems = dbs.store.verify()
    assert any(p.startswith("AR ledger out of balance") for p in problems), problems
    assert any("AR legs do not carry its amount" in p and "pay_p0-0" in p for p in problems)


def test_ar_and_refunds_are_checked_against_billing_account_by_account(dbs: Databases) -> None:
    """AR per subscriber account against billing's movements, and refunds against their
    payments, in whichever database holds AR; ``account_nets`` is billing's side of
    the ledger check."""
    store = dbs.store
    dbs.commit([settle("n1"), settle("n2", account="acc-pre", amount=700)], now_us=1)
    store.begin_refund(RefundRow("ref_n1", "rk-n1", "pay_n1", 1_000, "EUR", "x", created_at_us=2))
    dbs.finish_refund("ref_n1", "gref", now_us=3)
    assert store.verify() == []
    nets = {a: (c, n) for a, c, n in store.account_nets()}
    assert nets["acc-post-barred"] == ("EUR", 2_000) and nets["acc-pre"] == ("KES", 700)
    assert nets["acc-post"] == ("EUR", 0)
    # The refund's AR debit moved to another subscriber: AR still balances.
    dbs.execute(
        "ar",
        "UPDATE ar_entries SET ar_account = 'receivable:acc-post'"
        " WHERE document_id = 'ref_n1' AND leg = 1",
    )
    problems = store.verify()
    assert (
        "AR account does not sum to billing's movements (AR account, AR net, billing net):"
        " receivable:acc-post, -1000, 0"
    ) in problems, problems
    assert not any(p.startswith("AR ledger out of balance") for p in problems)
    dbs.execute(
        "billing", "UPDATE billing_records SET amount_minor = 999 WHERE record_id = 'ref_n1'"
    )
    assert any(
        p.startswith("refund not matching its payment") and "ref_n1" in p for p in store.verify()
    )


def test_declines_are_history_audit_and_events_but_move_no_money(dbs: Databases) -> None:
    decline = Decision("pay_d1", intent("d1"), decline_reason="MSISDN_MISMATCH", decline_detail="x")
    (outcome,), states = dbs.commit([decline], now_us=1)
    assert outcome.status is PaymentStatus.DECLINED and states == []
    assert dbs.rows("billing", "SELECT count(*) FROM billing_records") == [(0,)]
    assert dbs.rows("ar", "SELECT count(*) FROM ar_entries") == [(0,)]
    assert dbs.rows("billing", "SELECT kind FROM outbox") == [("decline",)]
    assert dbs.store.subscriber("acc-post-barred").balance_minor == 8_000
    stored = dbs.store.get_payment(idempotency_key="d1")
    assert stored.outcome.decline_reason == "MSISDN_MISMATCH"


def test_an_account_gone_since_validation_fails_alone(dbs: Databases) -> None:
    dbs.execute("billing", "DELETE FROM subscribers WHERE account_id = 'acc-post'")
    outcomes, _ = dbs.commit(
        [settle("g1"), settle("g2", account="acc-post"), settle("g3")], now_us=1
    )
    assert [o.status for o in outcomes] == [
        PaymentStatus.SETTLED,
        PaymentStatus.FAILED,
        PaymentStatus.SETTLED,
    ]
    assert outcomes[1].decline_reason == "ACCOUNT_GONE"
    assert dbs.store.get_payment(idempotency_key="g2") is None
    assert chain(dbs.store) == (2, None)


def test_a_key_taken_for_another_payload_is_a_conflict_not_a_replay(one: Databases) -> None:
    one.commit([settle("k0")], now_us=1)
    other = Decision(
        "pay_other", dataclasses.replace(intent("k0", amount=1), fingerprint="fp-other")
    )
    outcomes, _ = one.commit([settle("k1"), other], now_us=2)
    assert outcomes[0].status is PaymentStatus.SETTLED
    assert outcomes[1].status is PaymentStatus.FAILED
    assert outcomes[1].decline_reason == IDEMPOTENCY_CONFLICT and not outcomes[1].replayed
    assert one.store.get_payment(payment_id="pay_other") is None
    found = one.store.find_by_keys(["k0", "k1", "never"])
    assert sorted(found) == ["k0", "k1"]
    assert found["k0"].intent.fingerprint == "fp-k0"


def test_same_rows_as_the_sqlite_store(one: Databases, tmp_path: Path) -> None:
    lite = SqliteStore(tmp_path / "same.sqlite3", AUDIT_KEY)
    lite.import_subscribers(SUBSCRIBERS)
    try:
        batches = [
            [settle("s1"), settle("s2", account="acc-pre-barred", amount=700)],
            [
                Decision(
                    "pay_s3", intent("s3"), decline_reason="FRAUD_DECLINED", decline_detail="f"
                ),
                settle("s4", amount=5_000),
            ],
        ]
        for now_us, batch in enumerate(batches, start=1):
            assert one.commit(batch, now_us) == lite.commit_batch(batch, now_us)
        # The audit chain covers every payment's content in order: equal heads, equal history.
        assert list(one.store.audit_rows()) == list(lite.audit_rows())
        assert one.store.outbox_after(0) == lite.outbox_after(0)
        assert one.store.get_payment(payment_id="pay_s4") == lite.get_payment(payment_id="pay_s4")
        by_id = lambda s: s.account_id  # noqa: E731
        assert sorted(one.store.load_subscribers(), key=by_id) == sorted(
            lite.load_subscribers(), key=by_id
        )
    finally:
        lite.close()


def test_import_is_all_or_nothing_and_keeps_history_consistent(one: Databases) -> None:
    one.commit([settle("i1")], now_us=1)
    # The billing system says the account now owes 100.00: its balance wins, and verify
    # still finds balance = opening + history.
    owed = dataclasses.replace(SUBSCRIBERS[0], balance_minor=10_000)
    assert one.store.import_subscribers([owed]) == 1
    assert one.store.subscriber("acc-post-barred").balance_minor == 10_000
    assert one.store.verify() == []
    new = SubscriberRow(
        "acc-new", "+306900000099", Plan.PREPAID, LineStatus.ACTIVE, "EUR", 0, "GR", None, 1
    )
    clash = dataclasses.replace(new, account_id="acc-clash", msisdn=SUBSCRIBERS[1].msisdn)
    with pytest.raises(StoreError, match="conflicts"):
        one.store.import_subscribers([new, clash])
    assert one.store.subscriber("acc-new") is None, "nothing of a failed file is loaded"
    assert one.store.subscriber("acc-nobody") is None


def test_outbox_filters_pages_and_publication(one: Databases) -> None:
    one.commit([settle("e1", amount=8_000), settle("e2", account="acc-pre")], now_us=7)
    events = one.store.outbox_after(0)
    assert [e.kind for e in events] == ["service_state", "settlement", "settlement"]
    assert [e.cursor for e in events] == sorted(e.cursor for e in events)
    assert events[1].payload["amount_minor"] == 8_000 and events[1].created_at_us == 7
    assert [e.kind for e in one.store.outbox_after(0, kinds=["settlement"])] == ["settlement"] * 2
    assert [e.payment_id for e in one.store.outbox_after(0, account_id="acc-pre")] == ["pay_e2"]
    assert one.store.outbox_after(events[0].cursor, limit=1) == [events[1]]
    assert one.store.outbox_after(events[-1].cursor) == []
    assert one.store.outbox_unpublished(10) == events
    one.store.mark_published([events[0].cursor, events[1].cursor], now_us=9)
    assert one.store.outbox_unpublished(10) == [events[2]]


def test_reconciliation_reads_and_keeps_discrepancies(one: Databases) -> None:
    one.commit([settle("x1"), settle("x2", account="acc-pre")], now_us=1_000)
    one.commit([settle("x3")], now_us=2_000)
    captures = one.store.billed_captures("acq-a", 0, 2_000)
    assert sorted(c.payment_id for c in captures) == ["pay_x1", "pay_x2"]
    assert one.store.billed_captures("acq-b", 0, 10_000) == []
    found = Discrepancy(
        discrepancy_id="d-1",
        category="MISSING_IN_BILLING",
        payment_id="",
        gateway_reference="ref-zz",
        gateway_amount_minor=100,
        billing_amount_minor=None,
        currency="EUR",
        detail="not billed",
    )
    assert one.store.record_discrepancies("acq-a", "2026-11-25", [found], now_us=5) == {
        "d-1": ("OPEN", "")
    }
    assert one.store.set_discrepancy("d-1", "INVESTIGATING", "asked the acquirer")
    assert not one.store.set_discrepancy("d-none", "RESOLVED", "")
    # A re-run keeps the investigation and the first sighting.
    again = one.store.record_discrepancies("acq-a", "2026-11-25", [found], now_us=9)
    assert again == {"d-1": ("INVESTIGATING", "asked the acquirer")}
    assert one.rows("billing", "SELECT first_seen_at_us, last_seen_at_us FROM discrepancies") == [
        (5, 9)
    ]


def test_audit_tampering_is_found(one: Databases) -> None:
    one.commit([settle(f"v{n}", account="acc-pre", amount=3_000) for n in range(4)], now_us=1)
    assert chain(one.store) == (4, None)
    one.execute(
        "billing", "UPDATE audit_log SET content = replace(content, '3000', '300') WHERE seq = 3"
    )
    good, broken = chain(one.store)
    assert good == 2 and broken.seq == 3 and "altered" in broken.problem
    assert any("audit trail broken at row 3" in p for p in one.store.verify())


def test_provisioning_rules_are_data_read_at_start(dbs: Databases) -> None:
    dbs.commit([settle("t1", amount=3_000)], now_us=1)
    assert dbs.store.subscriber("acc-post-barred").status is LineStatus.BARRED
    dbs.execute(
        "provisioning",
        "UPDATE provisioning_rules SET owed_max_minor = 2000"
        " WHERE rule_id = 'postpaid-barred-paid-up'",
    )
    dbs.store.close()
    dbs.store = PostgresStore(dbs.urls, AUDIT_KEY)
    dbs.commit([settle("t2", amount=3_000)], now_us=2)
    assert dbs.store.subscriber("acc-post-barred").status is LineStatus.ACTIVE


def test_the_saga_journal_lives_until_the_payment_ends(
    dbs: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quickpay_engine.store import postgres

    copies: list[int] = []  # rows of each COPY tried into the journal
    real_copy = postgres._copy_rows

    def copy_rows(cursor: object, table: str, rows: list[tuple[object, ...]]) -> None:
        if table == "settlement_attempts":
            copies.append(len(rows))
        real_copy(cursor, table, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(postgres, "_copy_rows", copy_rows)
    store = dbs.store
    assert store.journal_attempts([("pay_j1", intent("j1")), ("pay_j2", intent("j2"))], 1) == [
        True,
        True,
    ]
    # The same key again (a concurrent attempt) is refused; another key is taken.
    assert store.journal_attempts([("pay_jx", intent("j1")), ("pay_j3", intent("j3"))], 2) == [
        False,
        True,
    ]
    assert store.attempts() == {
        "pay_j1": intent("j1"),
        "pay_j2": intent("j2"),
        "pay_j3": intent("j3"),
    }
    # The first call's rows went in by COPY, the second's by the statement that skips
    # conflicts (its COPY failed on j1): the same rows either way.
    assert copies == [2, 2]
    assert dbs.rows(
        "billing",
        "SELECT payment_id, idempotency_key, created_at_us FROM settlement_attempts"
        " ORDER BY payment_id",
    ) == [("pay_j1", "j1", 1), ("pay_j2", "j2", 1), ("pay_j3", "j3", 2)]
    assert store._billing.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    # Two attempts with one key in the same call: the first is taken, by the statement
    # (a COPY would fail for certain, and is not tried).
    assert store.journal_attempts([("pay_d1", intent("dup")), ("pay_d2", intent("dup"))], 2) == [
        True,
        False,
    ]
    assert copies == [2, 2]
    store.forget_attempts(["pay_d1"])
    # Settling a payment removes its journal entry in the same transaction.
    dbs.commit([Decision("pay_j1", intent("j1"), gateway="acq-a", gateway_reference="r")], 3)
    assert set(store.attempts()) == {"pay_j2", "pay_j3"}
    store.forget_attempts(["pay_j2", "pay_j3"])
    assert store.attempts() == {}
    assert store.settled_or_declined_ids() == [("pay_j1", int(PaymentStatus.SETTLED))]


def test_refunds_pending_declined_and_finished(dbs: Databases) -> None:
    store = dbs.store
    dbs.commit([settle("r1")], now_us=1)  # owes 50.00 after paying 30.00
    first = RefundRow("ref_1", "rk-1", "pay_r1", 1_000, "EUR", "customer", created_at_us=5)
    assert store.begin_refund(first).status == "PENDING"
    # A retry under the same key gets the stored refund, not a second one.
    retry = dataclasses.replace(first, refund_id="ref_other")
    assert store.begin_refund(retry).refund_id == "ref_1"
    assert [r.refund_id for r in store.pending_refunds()] == ["ref_1"]
    status, refunded, state = dbs.finish_refund("ref_1", "gref-1", now_us=6)
    assert (status, refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 1_000)
    assert state.balance_minor == 6_000, "a refunded bill payment is owed again"
    before = counts(dbs)
    assert dbs.finish_refund("ref_1", "gref-1", now_us=7) == (status, refunded, None)
    assert counts(dbs) == before, "doing it again changes nothing"
    assert dbs.rows(
        "ar",
        "SELECT document_id, payment_id, debit_minor, credit_minor FROM ar_entries"
        " WHERE document_id = 'ref_1' ORDER BY leg",
    ) == [("ref_1", "pay_r1", 1_000, 0), ("ref_1", "pay_r1", 0, 1_000)]
    assert store.refund_by_key("rk-1").status == "DONE"
    # A refund the gateway refused changes no money.
    store.begin_refund(RefundRow("ref_2", "rk-2", "pay_r1", 500, "EUR", "x", created_at_us=8))
    store.decline_refund("ref_2", "GATEWAY_DECLINED", "no", now_us=9)
    assert store.refund_by_key("rk-2").status == "DECLINED"
    assert store.pending_refunds() == []
    # The rest of it: the payment is refunded in full.
    store.begin_refund(RefundRow("ref_3", "rk-3", "pay_r1", 2_000, "EUR", "x", created_at_us=10))
    assert dbs.finish_refund("ref_3", "gref-3", now_us=11)[:2] == (PaymentStatus.REFUNDED, 3_000)
    assert store.get_payment(payment_id="pay_r1").outcome.status is PaymentStatus.REFUNDED
    assert store.subscriber("acc-post-barred").balance_minor == 8_000
    assert store.verify() == []


def test_a_refund_key_is_bound_to_its_payment_and_amount(dbs: Databases) -> None:
    """As on SQLite: a key holding one payment's refund is refused for another payment
    or amount, naming nothing of the refund it holds."""
    from quickpay_engine.errors import IdempotencyConflict

    store = dbs.store
    dbs.commit([settle("ra"), settle("rb", account="acc-post", amount=2_000)], now_us=1)
    first = RefundRow("rf_held", "rk", "pay_ra", 100, "EUR", "x", created_at_us=2)
    assert store.begin_refund(first) == first
    retry = dataclasses.replace(first, refund_id="rf_retry", created_at_us=3)
    assert store.begin_refund(retry).refund_id == "rf_held"
    for other in (
        dataclasses.replace(retry, payment_id="pay_rb"),
        dataclasses.replace(retry, amount_minor=101),
        dataclasses.replace(retry, currency="KES"),
    ):
        with pytest.raises(IdempotencyConflict) as err:
            store.begin_refund(other)
        assert "pay_ra" not in str(err.value) and "rf_held" not in str(err.value)
    assert [r.refund_id for r in store.pending_refunds()] == ["rf_held"]


# -- the two-phase participant ---------------------------------------------------------


def test_a_prepared_batch_is_invisible_until_committed(three: Databases) -> None:
    store = three.store
    assert store.participants == ["billing", "ar", "provisioning"]
    outcomes, _ = store.prepare_batch([settle("q1", amount=8_000)], "qp:t:1", now_us=1)
    assert outcomes[0].status is PaymentStatus.SETTLED
    assert sorted((p.participant, p.gid) for p in store.prepared()) == [
        ("ar", "qp:t:1"),
        ("billing", "qp:t:1"),
        ("provisioning", "qp:t:1"),
    ]
    assert counts(three) == [0] * len(TABLES)
    assert any("prepared transaction left unresolved" in p for p in store.verify())
    store.commit_prepared("qp:t:1")
    store.commit_prepared("qp:t:1")  # a redo after a crash finds nothing left: no error
    assert store.prepared() == []
    assert counts(three) == [1, 1, 2, 1, 1, 2]
    assert store.verify() == []


def test_a_rolled_back_prepared_batch_leaves_nothing(three: Databases) -> None:
    three.store.prepare_batch([settle("q2")], "qp:t:2", now_us=1)
    three.store.rollback_prepared("qp:t:2")
    assert three.store.prepared() == []
    assert counts(three) == [0] * len(TABLES)
    assert three.store.subscriber("acc-post-barred").balance_minor == 8_000


def test_a_failed_prepare_rolls_back_every_participant(three: Databases) -> None:
    # Another transaction already holds the provisioning participant's id, so that
    # PREPARE fails after billing and AR prepared: both must be rolled back.
    with psycopg.connect(three.urls.provisioning, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("PREPARE TRANSACTION 'qp:t:3:provisioning'")
    with pytest.raises(psycopg.Error, match="already in use"):
        three.store.prepare_batch([settle("q3")], "qp:t:3", now_us=1)
    assert [(p.participant, p.gid) for p in three.store.prepared()] == [("provisioning", "qp:t:3")]
    three.execute("provisioning", "ROLLBACK PREPARED 'qp:t:3:provisioning'")
    assert counts(three) == [0] * len(TABLES)
    # The store is usable afterwards.
    three.commit([settle("q4")], now_us=2)
    assert counts(three)[0] == 1


def test_commit_batch_refuses_several_databases(three: Databases) -> None:
    with pytest.raises(StoreError, match="two-phase"):
        three.store.commit_batch([settle("q5")], now_us=1)


@pytest.mark.parametrize("gid", ["nope:1", "qp:" + "x" * 190])
def test_a_bad_global_id_is_refused(three: Databases, gid: str) -> None:
    with pytest.raises(ValueError, match="global transaction id"):
        three.store.prepare_batch([settle("q6")], gid, now_us=1)
    assert three.store.prepared() == []


# -- migrations ---------------------------------------------------------------------------


def test_a_database_behind_on_migrations_is_refused_until_migrated() -> None:
    require()
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations")
        with pytest.raises(StoreError, match=r"schema version 0; this build needs \d.*db migrate"):
            PostgresStore(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO schema_migrations VALUES ({latest() + 1}, 'future')")
        with pytest.raises(StoreError, match="newer than this build"):
            PostgresStore(url)
    finally:
        drop_database(url)


def test_migrate_applies_every_version_once() -> None:
    require()
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        assert migrate(url) == list(range(1, latest() + 1))
        assert migrate(url) == []
        PostgresStore(url).close()
    finally:
        drop_database(url)


def test_migration_5_drops_the_index_of_payments_by_account() -> None:
    """A database at version 4 (which had payments_by_account) loses the index at the
    next migrate, and the store opens on it."""
    require()
    url = create_database()
    index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'payments_by_account'"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(index).fetchone() == (0,)
            # As the previous build left it.
            conn.execute("CREATE INDEX payments_by_account ON payments (account_id, seq)")
            conn.execute("DELETE FROM schema_migrations WHERE version >= 5")
        with pytest.raises(StoreError, match="schema version 4"):
            PostgresStore(url)
        assert migrate(url) == list(range(5, latest() + 1))
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(index).fetchone() == (0,)
        PostgresStore(url).close()
    finally:
        drop_database(url)


def test_migration_6_drops_the_index_of_billing_by_account() -> None:
    """A database at version 5 (which had billing_by_account) loses the index at the
    next migrate; the store opens on it, and a re-import after a payment still keeps
    balance = opening + history (the upsert reads the row's own difference)."""
    require()
    url = create_database()
    index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'billing_by_account'"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(index).fetchone() == (0,)
            # As the previous build left it.
            conn.execute("CREATE INDEX billing_by_account ON billing_records (account_id)")
            conn.execute("DELETE FROM schema_migrations WHERE version >= 6")
        with pytest.raises(StoreError, match="schema version 5"):
            PostgresStore(url)
        assert migrate(url) == list(range(6, latest() + 1))
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(index).fetchone() == (0,)
        store = PostgresStore(url, AUDIT_KEY)
        try:
            store.import_subscribers(SUBSCRIBERS)
            store.commit_batch([settle("g1", amount=2_500)], now_us=1)
            sub = store.subscriber("acc-post-barred")
            assert sub is not None
            store.import_subscribers([dataclasses.replace(sub, balance_minor=9_999)])
            assert store.subscriber("acc-post-barred").balance_minor == 9_999
            assert store.verify() == []
        finally:
            store.close()
    finally:
        drop_database(url)


def test_a_subscriber_file_streams_in_and_loads_into_the_engine(
    one: Databases, tmp_path: Path
) -> None:
    """The PostgreSQL import: COPYed chunks into a staging table, merged; upsert by
    default, --replace closes what the file lacks; the first bad line in file order is
    named (a repeat before a malformed line), and nothing lands. The engine's table is
    then loaded through a server-side cursor."""
    from quickpay_engine._engine import Engine
    from quickpay_engine.errors import ImportRowError
    from quickpay_engine.subscribers import to_csv_text

    store = one.store
    lines = to_csv_text(SUBSCRIBERS).splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines, lines[1], lines[2].replace(",GR,", ",GRC,")]) + "\n")
    with pytest.raises(ImportRowError, match=r"^line 7: account_id .* appears twice"):
        store.import_subscriber_file(bad)
    new = "acc-new,+306900000077,PREPAID,ACTIVE,EUR,500,GR,,2026-01-01T00:00:00Z"
    part = tmp_path / "part.csv"
    part.write_text("\n".join([lines[0], lines[1], new]) + "\n")
    assert store.import_subscriber_file(part) == (2, 0)
    assert len(store.load_subscribers()) == len(SUBSCRIBERS) + 1
    rows, closed = store.import_subscriber_file(part, replace=True)
    still_open = sum(1 for s in SUBSCRIBERS[1:] if s.status.name != "CLOSED")
    assert (rows, closed) == (2, still_open)
    kept = {SUBSCRIBERS[0].account_id, "acc-new"}
    others = {s.status.name for s in store.load_subscribers() if s.account_id not in kept}
    assert others == {"CLOSED"}
    engine = Engine()
    assert store.load_subscribers_into(engine) == len(SUBSCRIBERS) + 1
    assert engine.subscriber_count() == len(SUBSCRIBERS) + 1
