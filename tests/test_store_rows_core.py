"""The core writes a settlement batch's rows (engine/src/store/) exactly as the Python
reference builds them (store/rows.py, which the PostgreSQL store still uses): every
table, column for column and byte for byte, the audit chain included, over random
batches with declines, failures, reviews, restored lines, closed lines, and text that
JSON must escape."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from quickpay_engine.domain import (
    FraudAssessment,
    LineStatus,
    Method,
    MethodKind,
    PaymentIntent,
    Plan,
    Purpose,
    SubscriberRow,
)
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.audit import GENESIS, AuditRow, verify
from quickpay_engine.store.postgres import WRITE_COLUMNS
from quickpay_engine.store.rows import Account, build, intent_json

# Text a JSON encoder must escape: quotes, backslashes, control characters, DEL,
# accents, a currency sign outside Latin-1 and a character outside the BMP.
ODD = ['quote " and \\ backslash', "tab\tnew\nline\r", "\x01\x1f\x7f", "café", "₿ 𝄞", ""]

# What orders each table's rows as they were inserted.
ORDER = {
    "payments": "seq",
    "review_queue": "rowid",
    "billing_records": "rowid",
    "ar_entries": "entry_id",
    "provisioning_changes": "rowid",
    "audit_log": "seq",
    "outbox": "cursor",
}


def subscribers(rng: random.Random, n: int) -> list[SubscriberRow]:
    out = []
    for k in range(n):
        plan = rng.choice(list(Plan))
        out.append(
            SubscriberRow(
                account_id=f"acc-{k}",
                msisdn=f"+3069{k:08d}",
                plan=plan,
                status=rng.choice(list(LineStatus)),
                currency="EUR",
                balance_minor=rng.randint(-5_000, 5_000),
                country="GR",
                sim_swapped_at_s=None,
                created_at_s=0,
            )
        )
    return out


def decisions(rng: random.Random, subs: list[SubscriberRow], n: int, tag: str) -> list[Decision]:
    out = []
    for k in range(n):
        sub = rng.choice(subs)
        key = f"{tag}-{k}"
        intent = PaymentIntent(
            idempotency_key=key,
            fingerprint=f"fp-{key}",
            account_id=sub.account_id,
            msisdn=sub.msisdn,
            amount_minor=rng.randint(1, 20_000),
            currency="EUR",
            purpose=Purpose.BILL_PAYMENT if sub.plan is Plan.POSTPAID else Purpose.PREPAID_TOPUP,
            method=Method(rng.choice(list(MethodKind)[1:]), rng.choice(ODD) or "card ****4242"),
            channel=rng.choice(["app", "USSD", "kiosk ☎"]),
            device_id=rng.choice(ODD),
            ip=rng.choice(["192.0.2.1", "", "2001:db8::1"]),
            sender=rng.choice(["", "gateway-node-1", "node ☎ 2"]),
        )
        fraud = None
        if rng.random() < 0.7:
            reasons = tuple(rng.sample(["amount_z", "new_device", "sim_swap", "velocity"], 2))
            fraud = FraudAssessment(
                rng.randint(0, 1000), rng.choice(["APPROVE", "REVIEW"]), reasons
            )
        roll = rng.random()
        if roll < 0.25:
            d = Decision(
                f"pay_{key}", intent, decline_reason=rng.choice(["FRAUD_REVIEW", "DO_NOT_HONOUR"]),
                decline_detail=rng.choice(ODD), fraud=fraud, review=rng.random() < 0.5,
                failed=rng.random() < 0.3, gateway=rng.choice(["", "acq-a"]),
            )  # fmt: skip
        else:
            d = Decision(
                f"pay_{key}", intent, gateway=rng.choice(["acq-a", "acq-b", ""]),
                gateway_reference=rng.choice(ODD) + key, fraud=fraud,
            )  # fmt: skip
        out.append(d)
    return out


def table(store: SqliteStore, name: str, after: dict[str, int]) -> list[tuple]:
    """A table's rows inserted after the mark ``after`` holds for it, in order."""
    key = ORDER[name]
    sql = f"SELECT {WRITE_COLUMNS[name]} FROM {name} WHERE {key} > ? ORDER BY {key}"
    return store._db.execute(sql, (after[name],)).fetchall()


def marks(store: SqliteStore) -> dict[str, int]:
    """Where each table ends now, so a batch's own rows can be read back."""
    return {
        name: store._db.execute(f"SELECT coalesce(max({key}), 0) FROM {name}").fetchone()[0]
        for name, key in ORDER.items()
    }


def expected(store: SqliteStore, batch: list[Decision], now_us: int):
    db = store._db
    accounts = {
        a: Account(a, m, Plan(p), LineStatus(s), b)
        for a, m, p, s, b in db.execute(
            "SELECT account_id, msisdn, plan, status, balance_minor FROM subscribers"
        )
    }
    (last_seq,) = db.execute("SELECT coalesce(max(seq), 0) FROM payments").fetchone()
    tail = db.execute(
        "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return build(
        batch, accounts, store.rules, AuditRow(*tail) if tail else None, last_seq + 1, now_us,
        store.audit_key,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_the_core_writes_what_the_reference_builds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = SqliteStore(tmp_path / "quickpay.sqlite3")
    subs = subscribers(rng, 40)
    store.import_subscribers(subs)
    if seed % 2:
        # A trail begun before the audit key: the core writes the marker row first.
        store._db.execute(
            "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES (1, ?, '{}', ?)",
            (GENESIS, "1" * 64),
        )
    for round_ in range(3):
        batch = decisions(rng, subs, rng.randint(1, 120), f"s{seed}r{round_}")
        now_us = 1_000_000 * (round_ + 1)
        want = expected(store, batch, now_us)
        before = marks(store)
        outcomes, states = store.commit_batch(batch, now_us=now_us)
        assert outcomes == want.outcomes
        assert [(s.account_id, s.balance_minor, s.status) for s in states] == [
            (a.account_id, a.balance_minor, a.status) for a in want.touched.values()
        ]
        for name, rows in [
            ("payments", want.payments),
            ("review_queue", want.reviews),
            ("billing_records", want.billing),
            ("ar_entries", want.ar),
            ("provisioning_changes", want.provisioning),
            ("audit_log", want.audit),
            ("outbox", want.outbox),
        ]:
            assert table(store, name, before) == [tuple(r) for r in rows], name
        assert store.audit_head == (want.audit[-1][0], want.audit[-1][3])
        balances = dict(store._db.execute("SELECT account_id, balance_minor FROM subscribers"))
        for a in want.touched.values():
            assert balances[a.account_id] == a.balance_minor
    keyed_from = 2 if seed % 2 else 1
    report = verify(store.audit_rows(), store.audit_key)
    assert report.broken is None or report.broken.seq < keyed_from
    store.close()


def test_the_core_journals_what_the_reference_encodes(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = SqliteStore(tmp_path / "quickpay.sqlite3")
    batch = decisions(rng, subscribers(rng, 5), 50, "j")
    attempts = [(d.payment_id, d.intent) for d in batch]
    assert store.journal_attempts(attempts[:30], now_us=5) == [True] * 30
    # The same keys again (another attempt) are refused; the new ones are taken.
    again = [(f"pay_again{k}", i) for k, (_, i) in enumerate(attempts[:10])]
    assert store.journal_attempts(again + attempts[30:], now_us=6) == [False] * 10 + [True] * 20
    stored = store._db.execute(
        "SELECT payment_id, idempotency_key, intent, created_at_us FROM settlement_attempts"
        " ORDER BY rowid"
    ).fetchall()
    assert stored == [
        (p, i.idempotency_key, intent_json(i), 5 if k < 30 else 6)
        for k, (p, i) in enumerate(attempts)
    ]
    assert store.attempts() == dict(attempts)
    store.close()
