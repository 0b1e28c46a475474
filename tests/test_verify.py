"""`quickpay verify`: clean after real traffic, and each broken invariant is named."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for, topup
from quickpay_engine._engine import Ledger
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.server import create_server
from quickpay_engine.settlement.ledger_book import LedgerBook, Movement
from quickpay_engine.store import SqliteStore


def verify_cli(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def traffic(stub, server, data_dir: Path) -> Path:
    await make_traffic(stub, server)
    return data_dir


async def make_traffic(stub, server) -> None:
    """Settled bill payments and top-ups, a decline, and two partial refunds."""
    for n in range(10):
        await stub.Pay(bill(f"b{n}", amount=pb.Money(amount_minor=700 + n, currency="EUR")))
        await stub.Pay(topup(f"t{n}"))
    await stub.Pay(bill("declined", msisdn="+306900000002"))
    # A refund of a bill payment and one of a top-up, so the refund checks see both.
    for key in ("b2", "t2"):
        record = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key=key))
        refund = await stub.Refund(
            pb.RefundRequest(
                idempotency_key=f"rf-{key}",
                payment_id=record.payment_id,
                amount=pb.Money(amount_minor=100, currency=record.amount.currency),
            )
        )
        assert refund.status == pb.PARTIALLY_REFUNDED
    await server.service._pipeline.drain()  # every hold posted before the server stops


async def test_verify_is_clean_after_traffic_and_a_reimport(traffic: Path) -> None:
    done = verify_cli(traffic)
    assert done.returncode == 0, done.stdout
    assert "all invariants hold" in done.stdout
    # The billing system's export wins on re-import; the history still adds up.
    store = SqliteStore(settings_for(traffic).sqlite_path)
    try:
        sub = store.subscriber("acc-post-barred")
        store.import_subscribers([dataclasses.replace(sub, balance_minor=12_345)])
        assert store.subscriber("acc-post-barred").balance_minor == 12_345
    finally:
        store.close()
    assert verify_cli(traffic).returncode == 0


BREAKS = [
    (
        "UPDATE ar_entries SET debit_minor = debit_minor + 1 WHERE entry_id = 1",
        "AR ledger out of balance",
    ),
    (
        "DELETE FROM billing_records WHERE payment_id = (SELECT payment_id FROM payments WHERE idempotency_key = 'b3')",
        "settled payment without a billing record",
    ),
    (
        "UPDATE subscribers SET balance_minor = balance_minor - 1 WHERE account_id = 'acc-pre-barred'",
        "balance is not opening balance plus billing history",
    ),
    (
        "DELETE FROM outbox WHERE kind = 'settlement' AND payment_id = (SELECT payment_id FROM payments WHERE idempotency_key = 't4')",
        "without its settlement event",
    ),
    (
        "UPDATE audit_log SET content = replace(content, 'EUR', 'USD') WHERE seq = 5",
        "audit trail broken at row 5",
    ),
    (
        "UPDATE payments SET status = 2 WHERE idempotency_key = 'b1'",
        "declined payment that moved money",
    ),
    # A payment's AR legs moved to another subscriber's account: AR still balances and
    # carries every payment's amount, but not billing's movements, account by account.
    (
        "UPDATE ar_entries SET ar_account = 'receivable:acc-post' WHERE leg = 2"
        " AND document_id = (SELECT payment_id FROM payments WHERE idempotency_key = 'b4')",
        "AR account does not sum to billing's movements (AR account, AR net, billing net):"
        " receivable:acc-post, 704, 0",
    ),
    # A refund recorded in billing against another account than its payment's.
    (
        "UPDATE billing_records SET account_id = 'acc-post' WHERE kind = 'REFUND'"
        " AND record_id = (SELECT refund_id FROM refunds WHERE idempotency_key = 'rf-b2')",
        "refund not matching its payment (refund, payment, account, amount, currency):",
    ),
    (
        "UPDATE billing_records SET amount_minor = 99 WHERE kind = 'REFUND'"
        " AND record_id = (SELECT refund_id FROM refunds WHERE idempotency_key = 'rf-t2')",
        "refund not matching its payment (refund, payment, account, amount, currency):",
    ),
    (
        "UPDATE refunds SET currency = 'EUR' WHERE idempotency_key = 'rf-t2'",
        "refund not matching its payment (refund, payment, account, amount, currency):",
    ),
    (
        "UPDATE ar_entries SET credit_minor = 50 WHERE leg = 2"
        " AND document_id = (SELECT refund_id FROM refunds WHERE idempotency_key = 'rf-b2')",
        "refund whose AR legs do not carry its amount (refund, debits, credits):",
    ),
]


@pytest.mark.parametrize(("sql", "named"), BREAKS)
async def test_verify_names_each_broken_invariant(traffic: Path, sql: str, named: str) -> None:
    db = sqlite3.connect(settings_for(traffic).sqlite_path)
    db.execute(sql)
    db.commit()
    db.close()
    done = verify_cli(traffic)
    assert done.returncode == 1
    assert named in done.stdout, done.stdout


async def test_verify_passes_on_a_data_dir_of_schema_5_once_a_writer_upgraded_it(
    data_dir: Path,
) -> None:
    """A data dir the build of schema 5 (with payments_by_account and billing_by_account)
    wrote traffic to: `quickpay verify`, which writes nothing, refuses it (see
    tests/test_verify_read_only.py); once a writer's open upgraded it in place, both
    indexes are gone and every check holds."""
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    running = await create_server(settings_for(data_dir))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await make_traffic(pb_grpc.SettlementStub(channel), running)
    finally:
        await running.stop(grace_s=1)
    path = settings_for(data_dir).sqlite_path
    with sqlite3.connect(path) as db:  # as the build of schema 5 left it
        db.executescript(
            "CREATE INDEX payments_by_account ON payments (account_id, seq);"
            " CREATE INDEX billing_by_account ON billing_records (account_id);"
            " PRAGMA user_version = 5;"
        )
    assert verify_cli(data_dir).returncode == 2
    SqliteStore(path).close()  # as `quickpay recover` or `serve` opens it
    done = verify_cli(data_dir)
    assert done.returncode == 0, done.stdout
    assert "all invariants hold" in done.stdout
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        found = db.execute(
            "SELECT name FROM sqlite_master"
            " WHERE name IN ('payments_by_account', 'billing_by_account')"
        )
        assert found.fetchall() == []


async def test_verify_finds_a_refund_debited_from_another_subscribers_ledger_account(
    data_dir: Path,
) -> None:
    """What issue #20 saw: billing and the gateway agree, the engine's ledger moved a
    refund out of the wrong subscriber's account. Verify names the account and the
    amounts. (The server is stopped first: the ledger has one writer.)"""
    running = await create_server(settings_for(data_dir))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await make_traffic(pb_grpc.SettlementStub(channel), running)
        paid = running.store.get_payment(idempotency_key="b5")
    finally:
        await running.stop(grace_s=1)
    before = verify_cli(data_dir)
    assert before.returncode == 0, before.stdout
    book = LedgerBook(Ledger.open(data_dir / "ledger"))
    try:
        # 2.00 EUR taken from acc-post's ledger account for a refund of acc-post-barred's.
        await book.refund("rf_misposted", Movement(paid.outcome.payment_id, "acc-post", 200, "EUR"))
    finally:
        book.close()
    done = verify_cli(data_dir)
    assert done.returncode == 1
    line = "ledger balance not billing's movements (account, ledger, billing): acc-post, -200, 0"
    assert line in done.stdout, done.stdout


async def test_verify_checks_billing_against_the_bundled_gateways_books(data_dir: Path) -> None:
    """With no --gateways file, serve starts the bundled simulators with their books in
    the data dir; verify reads those books and finds a capture billing lost."""
    import argparse

    import grpc

    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
    from quickpay_engine.config import settings_from
    from quickpay_engine.server import create_server

    settings = settings_from(
        argparse.Namespace(
            listen="127.0.0.1:0", data_dir=str(data_dir), database_url=None, gateways=None,
            fraud_mode="observe",
        )
    )  # fmt: skip
    running = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            paid = [await stub.Pay(topup(f"bg{n}")) for n in range(5)]
    finally:
        await running.stop(grace_s=1)
    assert (data_dir / "gateways" / "wallet-x" / "ledger.sqlite3").exists()
    done = verify_cli(data_dir)
    assert done.returncode == 0, done.stdout

    settled = next(p for p in paid if p.status == pb.SETTLED)
    with sqlite3.connect(data_dir / "quickpay.sqlite3") as db:
        db.execute(
            "UPDATE payments SET gateway_reference = 'forged' WHERE payment_id = ?",
            (settled.payment_id,),
        )
    done = verify_cli(data_dir)
    assert done.returncode == 1
    assert f"wallet-x holds {settled.payment_id} as" in done.stdout
