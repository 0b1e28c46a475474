"""The embedded store: one transaction writes billing, AR, history, provisioning, audit and
outbox together; a redo changes nothing; the audit chain catches tampering."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SUBSCRIBERS, settings_for
from quickpay_engine.domain import (
    LineStatus,
    Method,
    MethodKind,
    PaymentIntent,
    PaymentStatus,
    Purpose,
)
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.audit import verify
from quickpay_engine.store.rows import journal_columns
from quickpay_engine.store.sqlite import SettledState, state_columns


@pytest.fixture
def store(data_dir: Path):
    opened = SqliteStore(settings_for(data_dir).sqlite_path)
    yield opened
    opened.close()


def intent(key: str, account: str = "acc-post-barred", amount: int = 3_000) -> PaymentIntent:
    sub = next(s for s in SUBSCRIBERS if s.account_id == account)
    purpose = Purpose.BILL_PAYMENT if sub.plan.name == "POSTPAID" else Purpose.PREPAID_TOPUP
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


def chain(store: SqliteStore) -> tuple[int, object]:
    """(rows that verify, the first break) of the store's audit trail under its key."""
    report = verify(store.audit_rows(), store.audit_key)
    return report.good, report.broken


def rows(store: SqliteStore, sql: str) -> list[tuple]:
    return store._db.execute(sql).fetchall()


def test_one_settlement_writes_every_domain(store: SqliteStore) -> None:
    (outcome,), states = store.commit_batch([settle("a1", amount=8_000)], now_us=1)
    assert outcome.status is PaymentStatus.SETTLED
    assert outcome.confirmation.gateway == "acq-a"
    assert outcome.confirmation.service_state_after.name == "ACTIVE"
    assert [(s.account_id, s.balance_minor, s.status.name) for s in states] == [
        ("acc-post-barred", 0, "ACTIVE")
    ]
    assert rows(
        store, "SELECT payment_id, kind, amount_minor, balance_after_minor FROM billing_records"
    ) == [("pay_a1", "PAYMENT", 8_000, 0)]
    assert rows(
        store, "SELECT ar_account, debit_minor, credit_minor FROM ar_entries ORDER BY leg"
    ) == [
        ("gateway_clearing:acq-a", 8_000, 0),
        ("receivable:acc-post-barred", 0, 8_000),
    ]
    assert rows(store, "SELECT state_before, state_after, rule_id FROM provisioning_changes") == [
        (3, 1, "postpaid-barred-paid-up")
    ]
    assert [k for (k,) in rows(store, "SELECT kind FROM outbox ORDER BY cursor")] == [
        "service_state",
        "settlement",
    ]
    assert chain(store) == (1, None)


def test_redo_of_a_batch_changes_nothing(store: SqliteStore) -> None:
    batch = [settle("r1"), settle("r2", account="acc-pre-barred", amount=500)]
    first, _ = store.commit_batch(batch, now_us=1)
    counts = [rows(store, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES]
    again, states = store.commit_batch(batch, now_us=2)
    assert [o.replayed for o in again] == [True, True]
    assert [o.payment_id for o in again] == [o.payment_id for o in first]
    assert states == []
    assert [rows(store, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES] == counts
    assert store.subscriber("acc-post-barred").balance_minor == 5_000
    assert store.subscriber("acc-pre-barred").balance_minor == 500


TABLES = [
    "payments",
    "billing_records",
    "ar_entries",
    "provisioning_changes",
    "audit_log",
    "outbox",
]


def test_one_bad_payment_does_not_sink_the_batch(store: SqliteStore) -> None:
    store.commit_batch([settle("b0")], now_us=1)
    clash = Decision("pay_other", intent("b0", amount=1))  # key b0 is taken by pay_b0
    outcomes, _ = store.commit_batch([settle("b1"), clash, settle("b2")], now_us=2)
    assert [o.status for o in outcomes] == [PaymentStatus.SETTLED] * 3
    assert outcomes[1].replayed and outcomes[1].payment_id == "pay_b0"
    assert store.subscriber("acc-post-barred").balance_minor == 8_000 - 3 * 3_000
    assert chain(store) == (3, None)


def test_ledgers_balance_and_balances_equal_history(store: SqliteStore) -> None:
    rng = random.Random(5)
    payable = [s for s in SUBSCRIBERS if s.status.name != "CLOSED"]
    for batch in range(20):
        decisions = [
            settle(
                f"p{batch}-{n}",
                account=rng.choice(payable).account_id,
                amount=rng.randint(1, 9_999),
            )
            for n in range(rng.randint(1, 30))
        ]
        store.commit_batch(decisions, now_us=batch)
    sums = rows(
        store,
        "SELECT currency, sum(debit_minor), sum(credit_minor) FROM ar_entries GROUP BY currency",
    )
    assert len(sums) == 2
    assert all(debits == credits for _, debits, credits in sums)
    for sub in payable:
        paid = rows(
            store,
            f"SELECT coalesce(sum(amount_minor), 0) FROM billing_records WHERE account_id = '{sub.account_id}'",
        )[0][0]
        sign = -1 if sub.plan.name == "POSTPAID" else 1
        assert store.subscriber(sub.account_id).balance_minor == sub.balance_minor + sign * paid


def test_declines_are_history_audit_and_events_but_move_no_money(store: SqliteStore) -> None:
    decline = Decision("pay_d1", intent("d1"), decline_reason="MSISDN_MISMATCH", decline_detail="x")
    (outcome,), states = store.commit_batch([decline], now_us=1)
    assert outcome.status is PaymentStatus.DECLINED and states == []
    assert rows(store, "SELECT count(*) FROM billing_records") == [(0,)]
    assert rows(store, "SELECT count(*) FROM ar_entries") == [(0,)]
    assert rows(store, "SELECT kind FROM outbox") == [("decline",)]
    assert store.subscriber("acc-post-barred").balance_minor == 8_000


def test_provisioning_rules_are_data(data_dir: Path) -> None:
    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch([settle("t1", amount=3_000)], now_us=1)
    assert store.subscriber("acc-post-barred").status.name == "BARRED", "still owes 50.00"
    store._db.execute(
        "UPDATE provisioning_rules SET owed_max_minor = 2000 WHERE rule_id = 'postpaid-barred-paid-up'"
    )
    store.close()
    store = SqliteStore(path)  # rules are read at start
    try:
        store.commit_batch([settle("t2", amount=3_000)], now_us=2)
        assert store.subscriber("acc-post-barred").status.name == "ACTIVE", "owes 20.00 <= 20.00"
    finally:
        store.close()


def tamper(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "seq", "problem"),
    [
        (
            "UPDATE audit_log SET content = replace(content, '3000', '300') WHERE seq = 3",
            3,
            "altered",
        ),
        ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        (
            "UPDATE audit_log SET prev_hash = (SELECT row_hash FROM audit_log WHERE seq = 1) WHERE seq = 4",
            4,
            "inserted or deleted",
        ),
    ],
)
def test_audit_verify_names_the_first_bad_row(
    data_dir: Path, sql: str, seq: int, problem: str
) -> None:
    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch(
        [settle(f"v{n}", account="acc-pre", amount=3_000) for n in range(5)], now_us=1
    )
    store.close()
    cli = [
        sys.executable,
        "-m",
        "quickpay_engine.cli",
        "audit",
        "verify",
        "--data-dir",
        str(data_dir),
    ]
    clean = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0 and "intact: 5 rows" in clean.stdout
    tamper(path, sql)
    broken = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
    assert f"BROKEN at row {seq}" in broken.stdout and problem in broken.stdout, broken.stdout


def test_a_forged_row_with_a_recomputed_hash_still_breaks_the_next_link(data_dir: Path) -> None:
    from quickpay_engine.store.audit import chain_hash

    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch([settle(f"f{n}", account="acc-pre", amount=100) for n in range(3)], now_us=1)
    prev_hash, content = rows(store, "SELECT prev_hash, content FROM audit_log WHERE seq = 2")[0]
    key = store.audit_key  # even whoever holds the key cannot alter one row alone
    store.close()
    forged = content.replace('"amount_minor":100', '"amount_minor":1')
    tamper(
        path,
        f"UPDATE audit_log SET content = '{forged}', row_hash = '{chain_hash(key, prev_hash, 2, forged)}' WHERE seq = 2",
    )
    store = SqliteStore(path)
    try:
        good, broken = chain(store)
    finally:
        store.close()
    assert good == 2 and broken.seq == 3 and "inserted or deleted" in broken.problem


def test_an_inserted_row_with_a_valid_hash_breaks_the_row_after_it(data_dir: Path) -> None:
    from quickpay_engine.store.audit import canonical, chain_hash

    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch([settle(f"i{n}", account="acc-pre", amount=100) for n in range(3)], now_us=1)
    (row2_hash,) = rows(store, "SELECT row_hash FROM audit_log WHERE seq = 2")[0]
    store.close()
    forged = canonical({"kind": "payment.settled", "payment_id": "pay_forged", "amount_minor": 1})
    db = sqlite3.connect(path)
    # Make room at seq 3 (two steps: SQLite checks uniqueness row by row), then slip in a
    # row that follows row 2 perfectly.
    db.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3")
    db.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100")
    db.execute(
        "INSERT INTO audit_log VALUES (3, ?, ?, ?)",
        (row2_hash, forged, chain_hash(store.audit_key, row2_hash, 3, forged)),
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        good, broken = chain(store)
    finally:
        store.close()
    assert good == 3 and broken.seq == 4 and "inserted or deleted" in broken.problem


def test_an_account_gone_since_validation_fails_alone(store: SqliteStore) -> None:
    store._db.execute("DELETE FROM subscribers WHERE account_id = 'acc-post'")
    outcomes, _ = store.commit_batch(
        [settle("g1"), settle("g2", account="acc-post"), settle("g3")], now_us=1
    )
    assert [o.status for o in outcomes] == [
        PaymentStatus.SETTLED,
        PaymentStatus.FAILED,
        PaymentStatus.SETTLED,
    ]
    assert outcomes[1].decline_reason == "ACCOUNT_GONE"
    assert store.get_payment(idempotency_key="g2") is None
    assert chain(store) == (2, None)


def test_a_key_taken_for_another_payload_is_a_conflict_not_a_replay(store: SqliteStore) -> None:
    from quickpay_engine.store.sqlite import IDEMPOTENCY_CONFLICT

    store.commit_batch([settle("k0")], now_us=1)
    other = Decision(
        "pay_other", dataclasses.replace(intent("k0", amount=1), fingerprint="fp-other")
    )
    outcomes, _ = store.commit_batch([settle("k1"), other], now_us=2)
    assert outcomes[0].status is PaymentStatus.SETTLED
    assert outcomes[1].status is PaymentStatus.FAILED
    assert outcomes[1].decline_reason == IDEMPOTENCY_CONFLICT and not outcomes[1].replayed
    assert store.get_payment(payment_id="pay_other") is None


def test_a_refund_key_is_bound_to_its_payment_and_amount(store: SqliteStore) -> None:
    """A key that holds one payment's refund is refused for another payment or amount,
    with a message naming nothing of the refund it holds; a retry gets the stored row."""
    from quickpay_engine.errors import IdempotencyConflict
    from quickpay_engine.store.sqlite import RefundRow

    store.commit_batch([settle("ra"), settle("rb", account="acc-post", amount=2_000)], now_us=1)
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


def plain_trail(path: Path, contents: list[str]) -> None:
    """Audit rows as builds before the keyed chain wrote them: plain SHA-256."""
    from quickpay_engine.store.audit import GENESIS, plain_hash

    db = sqlite3.connect(path)
    prev = GENESIS
    for seq, content in enumerate(contents, start=1):
        row_hash = plain_hash(prev, seq, content)
        db.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?)", (seq, prev, content, row_hash))
        prev = row_hash
    db.commit()
    db.close()


def test_a_trail_from_before_the_key_goes_on_keyed_behind_a_marker(data_dir: Path) -> None:
    """An upgraded data dir: its plain rows still verify, the first commit writes the
    marker, every row after it is keyed, and the plain rows cannot be re-hashed since."""
    from quickpay_engine.store.audit import key_id, plain_hash

    path = settings_for(data_dir).sqlite_path
    SqliteStore(path).close()
    plain_trail(path, ['{"n":1}', '{"n":2}', '{"n":3}'])
    store = SqliteStore(path)
    report = verify(store.audit_rows(), store.audit_key)
    assert (report.good, report.broken, report.keyed_from) == (3, None, 0)
    store.commit_batch([settle("u1"), settle("u2")], now_us=1)
    report = verify(store.audit_rows(), store.audit_key)
    assert (report.good, report.broken, report.keyed_from) == (6, None, 4)
    (marker,) = rows(store, "SELECT content FROM audit_log WHERE seq = 4")[0]
    assert f'"key_id":"{key_id(store.audit_key)}"' in marker and '"audit.keyed"' in marker
    # Later commits continue the keyed chain: no second marker.
    store.commit_batch([settle("u3")], now_us=2)
    assert rows(store, "SELECT count(*) FROM audit_log WHERE content LIKE '%audit.keyed%'") == [
        (1,)
    ]
    store.close()
    # A plain row edited and the plain rows after it re-hashed, up to the marker.
    db = sqlite3.connect(path)
    h2 = plain_hash(rows_of(db, 1), 2, '{"n":20}')
    h3 = plain_hash(h2, 3, '{"n":3}')
    db.execute("UPDATE audit_log SET content = '{\"n\":20}', row_hash = ? WHERE seq = 2", (h2,))
    db.execute("UPDATE audit_log SET prev_hash = ?, row_hash = ? WHERE seq = 3", (h2, h3))
    db.execute("UPDATE audit_log SET prev_hash = ? WHERE seq = 4", (h3,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        good, broken = chain(store)
    finally:
        store.close()
    assert good == 3 and broken.seq == 4 and "keyed hash does not match" in broken.problem


def rows_of(db: sqlite3.Connection, seq: int) -> str:
    return db.execute("SELECT row_hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]


def test_a_trail_verified_under_another_key_says_so(data_dir: Path) -> None:
    path = settings_for(data_dir).sqlite_path
    SqliteStore(path).close()
    plain_trail(path, ['{"n":1}'])
    store = SqliteStore(path)
    store.commit_batch([settle("w1")], now_us=1)
    store.close()
    other = SqliteStore(path, b"\x07" * 32)
    try:
        good, broken = chain(other)
    finally:
        other.close()
    assert good == 1 and broken.seq == 2
    assert "the chain was keyed with another key" in broken.problem


def test_the_ledgers_anchor_finds_a_cut_or_rewritten_trail(store: SqliteStore) -> None:
    store.commit_batch([settle(f"a{n}") for n in range(4)], now_us=1)
    assert store.audit_head == (
        4,
        rows(store, "SELECT row_hash FROM audit_log WHERE seq = 4")[0][0],
    )
    head = store.audit_head
    assert verify(store.audit_rows(), store.audit_key, head).broken is None
    report = verify(store.audit_rows(), store.audit_key, (4, "0" * 64))
    assert report.broken.seq == 4 and "rewritten" in report.broken.problem
    store._db.execute("DELETE FROM audit_log WHERE seq = 4")
    report = verify(store.audit_rows(), store.audit_key, head)
    assert report.broken.seq == 4 and "cut from the end" in report.broken.problem
    # A commit whose transaction rolls back leaves the anchored head where it was.
    store._db.execute("DROP TABLE outbox")
    with pytest.raises(sqlite3.OperationalError):
        store.commit_batch([settle("a9")], now_us=2)
    assert store.audit_head == head


def test_a_store_of_schema_5_loses_the_index_of_payments_by_account(data_dir: Path) -> None:
    """Schema 6 has no index of payments by account: a file of schema 5 (which had one)
    drops it when opened, and its payments are still found and still verify."""
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch([settle("m1"), settle("m2", account="acc-pre")])
    store.close()
    with sqlite3.connect(path) as db:  # as the previous build left it
        db.executescript(
            "CREATE INDEX payments_by_account ON payments (account_id, seq);"
            " PRAGMA user_version = 5;"
        )
    store = SqliteStore(path)
    try:
        assert store.verify() == []
        found = store.get_payment(idempotency_key="m2")
        assert found is not None and found.intent.account_id == "acc-pre"
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert "payments_by_account" not in indexes
    assert "payments_by_gateway" in indexes


def test_a_reimport_after_payments_keeps_the_balance_equal_to_opening_plus_history(
    store: SqliteStore, tmp_path: Path
) -> None:
    """The billing system's balance wins on re-import (the Python upsert and the core's
    file import); what settled since the opening balance stays on top of it: the new
    opening balance is the new balance less the row's own difference (balance less
    opening), with no sum over billing records by account, and verify holds."""
    from quickpay_engine.subscribers import write_csv

    store.commit_batch([settle("o1", amount=2_500), settle("o2", account="acc-pre")], now_us=1)
    store.commit_batch([settle("o3", amount=700)], now_us=2)
    before = {s.account_id: s for s in store.load_subscribers()}
    opening = dict(rows(store, "SELECT account_id, opening_balance_minor FROM subscribers"))
    settled_since = {a: s.balance_minor - opening[a] for a, s in before.items()}
    assert settled_since["acc-post-barred"] == -3_200 and settled_since["acc-pre"] != 0
    store.import_subscribers([dataclasses.replace(before["acc-post-barred"], balance_minor=12_345)])
    assert store.verify() == []
    path = tmp_path / "subscribers.csv"
    with path.open("w") as f:
        write_csv([dataclasses.replace(before["acc-pre"], balance_minor=-4_000)], f)
    assert store.import_subscriber_file(path) == (1, 0)
    assert store.verify() == []
    after = dict(rows(store, "SELECT account_id, opening_balance_minor FROM subscribers"))
    assert after["acc-post-barred"] == 12_345 - settled_since["acc-post-barred"]
    assert after["acc-pre"] == -4_000 - settled_since["acc-pre"]
    # Untouched lines keep theirs.
    assert {a: v for a, v in after.items() if a not in ("acc-post-barred", "acc-pre")} == {
        a: v for a, v in opening.items() if a not in ("acc-post-barred", "acc-pre")
    }


def test_a_store_of_schema_6_loses_the_index_of_billing_by_account(data_dir: Path) -> None:
    """Schema 7 has no index of billing records by account: a file of schema 6 (which
    had one) drops it when opened; its payments still verify and a re-import still
    finds what settled since the opening balance."""
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    path = settings_for(data_dir).sqlite_path
    store = SqliteStore(path)
    store.commit_batch([settle("n1"), settle("n2", account="acc-pre")])
    store.close()
    with sqlite3.connect(path) as db:  # as the previous build left it
        db.executescript(
            "CREATE INDEX billing_by_account ON billing_records (account_id);"
            " PRAGMA user_version = 6;"
        )
    store = SqliteStore(path)
    try:
        assert store.verify() == []
        sub = store.subscriber("acc-pre")
        assert sub is not None
        store.import_subscribers([dataclasses.replace(sub, balance_minor=77)])
        assert store.verify() == []
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert "billing_by_account" not in indexes
    assert "billing_by_payment" in indexes


# -- the core's writer thread (the saga's journal and commits) ----------------------------


async def test_the_cores_outcomes_are_those_outcome_of_builds(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The core builds a committed batch's outcomes (``OutcomeTypes``): settled ones
    with a confirmation, declines and technical failures with their reasons, each with
    its own fraud assessment object, of the domain's own types, equal to what
    ``rows.outcome_of`` builds for the same batch written through ``commit_batch``."""
    from conftest import seed_store
    from quickpay_engine.domain import Confirmation, FraudAssessment, LineStatus, Outcome
    from quickpay_engine.store.executor import StoreThread

    other_dir = tmp_path_factory.mktemp("other")
    seed_store(other_dir)
    stores = (
        SqliteStore(settings_for(data_dir).sqlite_path),
        SqliteStore(settings_for(other_dir).sqlite_path),
    )
    thread = StoreThread("test-store")
    assessed = FraudAssessment(420, "REVIEW", ("velocity", "new_device"))
    batch = [
        dataclasses.replace(settle("o1"), fraud=assessed),
        settle("o2", account="acc-pre", amount=700),
        Decision("pay_o3", intent("o3"), "FRAUD_REVIEW", "held for review", fraud=assessed,
                 review=True),
        Decision("pay_o4", intent("o4"), "GATEWAY_TIMEOUT", "no gateway", gateway="acq-b",
                 failed=True),
        Decision("o5-no-prefix", intent("o5"), gateway="acq-a", gateway_reference="r5"),
    ]  # fmt: skip
    try:
        sync = stores[0].commit_batch(batch, now_us=7)
        core = await stores[1].commit_on_core(batch, thread.run)

        def at_seven(o: Outcome) -> Outcome:
            if o.confirmation is None:
                return o
            return dataclasses.replace(
                o, confirmation=dataclasses.replace(o.confirmation, settled_at_us=7)
            )

        assert [at_seven(o) for o in core[0]] == sync[0]
        assert [o.status.name for o in core[0]] == [
            "SETTLED", "SETTLED", "DECLINED", "FAILED", "SETTLED",
        ]  # fmt: skip
        for o in core[0]:
            assert type(o) is Outcome and type(o.status) is PaymentStatus
            assert not o.replayed
            if o.confirmation is not None:
                assert type(o.confirmation) is Confirmation
                assert type(o.confirmation.service_state_after) is LineStatus
        assert core[0][0].fraud is assessed and core[0][2].fraud is assessed
        assert core[0][1].fraud is None
        assert core[0][4].confirmation.confirmation_id == "cnf_o5-no-prefix"  # type: ignore[union-attr]
        assert core[1] == sync[1]
    finally:
        thread.close()
        for s in stores:
            s.close()


async def test_an_outcome_the_core_cannot_build_is_built_after_the_head_moves(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handed enums with members missing, the core builds no outcome for a payment whose
    line state has none: the batch is committed all the same, its audit head reaches
    the store, and the outcome is built in Python (``outcome_of``, which raises for a
    number no member has), equal to the one ``commit_batch`` gives."""
    from quickpay_engine._engine import OutcomeTypes
    from quickpay_engine.domain import Confirmation, LineStatus, Outcome
    from quickpay_engine.store import sqlite as sqlite_module
    from quickpay_engine.store.executor import StoreThread

    partial = OutcomeTypes(Outcome, Confirmation, list(PaymentStatus), [LineStatus.CLOSED])
    monkeypatch.setattr(sqlite_module, "OUTCOME_TYPES", partial)
    store = SqliteStore(settings_for(data_dir).sqlite_path)
    thread = StoreThread("test-store")
    try:
        before = store.audit_head
        (outcome,), _ = await store.commit_on_core([settle("nb1")], thread.run)
        assert store.audit_head is not None and store.audit_head != before
        assert outcome.status is PaymentStatus.SETTLED
        assert outcome.confirmation is not None
        assert type(outcome.confirmation.service_state_after) is LineStatus
        # Not the one member the core was handed: this outcome was built in Python.
        assert outcome.confirmation.service_state_after is not LineStatus.CLOSED
        assert store.verify() == []
    finally:
        thread.close()
        store.close()


async def test_a_commit_on_the_writer_thread_ends_as_one_on_the_callers(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The saga commits through ``commit_on_core`` (the core's writer thread, the result
    handed back through the event loop's completion queue): the outcomes, the accounts
    after, the audit head and every row are those ``commit_batch`` gives, refusals too
    (a key taken for another payload, an account gone), which are read back through the
    store thread the caller names."""
    from conftest import seed_store
    from quickpay_engine.store.executor import StoreThread

    other_dir = tmp_path_factory.mktemp("other")
    seed_store(other_dir)
    other = settings_for(other_dir)
    stores = SqliteStore(settings_for(data_dir).sqlite_path), SqliteStore(other.sqlite_path)
    thread = StoreThread("test-store")
    asked: list[str] = []

    async def on_thread(fn):  # type: ignore[no-untyped-def]
        asked.append("read")
        return await thread.run(fn)

    try:
        for s in stores:
            s.commit_batch([settle("k0")], now_us=1)
            s._db.execute("DELETE FROM subscribers WHERE account_id = 'acc-post'")
        conflict = Decision(
            "pay_other", dataclasses.replace(intent("k0", amount=1), fingerprint="fp-other")
        )
        batch = [settle("k1"), conflict, settle("k2", account="acc-post"), settle("k3")]
        sync = stores[0].commit_batch(batch)
        core = await stores[1].commit_on_core(batch, on_thread)
        assert asked == ["read"]  # once for the batch, for its two refusals

        def strip(outcome):  # type: ignore[no-untyped-def]
            # The settlement time is each commit's own clock.
            if outcome.confirmation is None:
                return outcome
            return dataclasses.replace(
                outcome,
                confirmation=dataclasses.replace(outcome.confirmation, settled_at_us=0),
            )

        assert [strip(o) for o in core[0]] == [strip(o) for o in sync[0]]
        assert [o.status for o in core[0]] == [
            PaymentStatus.SETTLED, PaymentStatus.FAILED, PaymentStatus.FAILED,
            PaymentStatus.SETTLED,
        ]  # fmt: skip
        assert core[1] == sync[1]
        assert stores[1].audit_head is not None
        assert stores[1].audit_head[0] == stores[0].audit_head[0]  # type: ignore[index]
        assert stores[1].verify() == []
        assert chain(stores[1]) == (3, None)
        # A batch with nothing refused reads nothing back.
        await stores[1].commit_on_core([settle("k4")], on_thread)
        assert asked == ["read"]
    finally:
        thread.close()
        for s in stores:
            s.close()


async def test_the_journal_on_the_writer_thread_refuses_a_key_in_flight(
    store: SqliteStore,
) -> None:
    assert await store.journal_columns_on_core(journal_columns([("pay_j1", intent("j1"))])) == [
        True
    ]
    assert await store.journal_columns_on_core(
        journal_columns([("pay_j2", intent("j1")), ("pay_j3", intent("j3"))])
    ) == [
        False,
        True,
    ]
    assert set(store.attempts()) == {"pay_j1", "pay_j3"}


async def test_the_writer_thread_waits_for_a_transaction_of_the_python_connection(
    store: SqliteStore,
) -> None:
    """A write on the store's Python connection (a refund, an outbox mark) and the core's
    writer thread take turns: a journal asked for while a Python transaction is open
    waits for its turn (it does not find SQLite's lock taken and sleep in the busy
    handler), starts when the transaction commits, and sees what it wrote."""
    import asyncio
    import threading

    inside = threading.Event()
    release = threading.Event()

    def python_write() -> None:
        # What `_transaction` does, with a wait between its turn and its BEGIN: while
        # it waits, SQLite's lock is free, and only the turn keeps the core out.
        store._writer.take_turn()
        try:
            inside.set()
            release.wait(10)
            store._db.execute("BEGIN IMMEDIATE")
            store._db.execute(
                "INSERT INTO settlement_attempts (payment_id, idempotency_key, intent,"
                " created_at_us) VALUES ('pay_py', 'held', '{}', 1)"
            )
            store._db.execute("COMMIT")
        finally:
            store._writer.give_turn()

    writer = threading.Thread(target=python_write)
    writer.start()
    assert inside.wait(10)
    journal = asyncio.ensure_future(
        store.journal_columns_on_core(journal_columns([("pay_h", intent("held"))]))
    )
    await asyncio.sleep(0.2)
    assert not journal.done(), "the core wrote while the Python connection held the turn"
    release.set()
    # The key the Python transaction journalled is in flight: the core's journal sees it.
    assert await asyncio.wait_for(journal, 10) == [False]
    writer.join(10)


async def test_an_error_of_sqlite_on_the_writer_thread_raises_the_sqlite3_class(
    tmp_path: Path,
) -> None:
    """A real failure on the writer thread (here the file cannot be opened: its directory
    is missing) reaches the awaiting coroutine through the completion queue as the
    exception Python's sqlite3 module raises for it, which the saga reads as "the store
    is out of reach" (UNAVAILABLE, retry with the same key)."""
    from quickpay_engine._engine import SqliteWriter
    from quickpay_engine.completions import completions

    writer = SqliteWriter(tmp_path / "missing" / "store.sqlite3")
    queue, future = completions()
    writer.journal_into(queue, future, journal_columns([("pay_e1", intent("e1"))]), 1)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await future
    writer.close()


async def test_a_commit_that_landed_is_never_reported_unwritten(store: SqliteStore) -> None:
    """The batch committed, but reading back the payment it refused fails (the store
    thread is gone): the written payments keep their outcomes and the refused one is
    FAILED with its reason. Raising instead would make the saga give back captures of
    payments that are settled."""
    store.commit_batch([settle("k0")], now_us=1)
    conflict = Decision(
        "pay_other", dataclasses.replace(intent("k0", amount=1), fingerprint="fp-other")
    )

    async def gone(fn):  # type: ignore[no-untyped-def]
        raise RuntimeError("the store thread is closed")

    outcomes, _ = await store.commit_on_core([settle("k1"), conflict], gone)
    assert [o.status for o in outcomes] == [PaymentStatus.SETTLED, PaymentStatus.FAILED]
    assert outcomes[1].decline_reason == "STORE_REJECTED"
    assert store.get_payment(payment_id="pay_k1") is not None


def test_state_columns_are_the_same_from_settled_states_and_from_the_cores_rows() -> None:
    # The event loop's commit hands the core's (account, balance, status) rows to the
    # engine as they came; recovery and refunds hand SettledState. Both become the
    # same set_states columns, in order; no state, no column.
    states = [
        SettledState("acc-1", 1_500, LineStatus.ACTIVE),
        SettledState("acc-2", -20, LineStatus.BARRED),
    ]
    rows = [("acc-1", 1_500, 1), ("acc-2", -20, int(LineStatus.BARRED))]
    for given in (states, rows):
        accounts, balances, statuses = state_columns(given)
        assert accounts == ["acc-1", "acc-2"]
        assert balances.dtype == np.int64 and balances.tolist() == [1_500, -20]
        assert statuses.dtype == np.uint8 and statuses.tolist() == [1, int(LineStatus.BARRED)]
    accounts, balances, statuses = state_columns([])
    assert accounts == [] and len(balances) == 0 and len(statuses) == 0
