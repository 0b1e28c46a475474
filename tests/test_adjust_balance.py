"""AdjustBalance: balance adjustments from other systems (issue #24, item 4).

One transfer per key whatever the replays; a prepaid balance taken below zero only when
the request says so; `quickpay verify` clean account by account after adjustments and
failing on a tampered or missing adjustment; the next payment's validation seeing the
adjusted balance; an adjustment waiting for the account's payment in flight; a SIGKILL
between the journal and the commit finished cleanly by the next start; and the commit
path on PostgreSQL (one database, and three under two-phase commit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import BACKENDS, GATEWAYS_VAR, bill, seed_store, settings_for, topup
from quickpay_engine._engine import ids_array
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.commands.verify import _balance_problems
from quickpay_engine.domain import LineStatus
from quickpay_engine.ledger_limits import open_ledger
from quickpay_engine.server import RunningServer
from quickpay_engine.settlement.ledger_book import (
    LedgerBook,
    adjustment_account,
    subscriber_account,
)
from quickpay_engine.store import SqliteStore
from test_verify import verify_cli

TIMEOUT_S = 20


def adjust(
    key: str,
    account: str = "acc-pre",
    amount: int = 1_000,
    currency: str = "KES",
    **overrides: object,
) -> pb.AdjustBalanceRequest:
    """An adjustment of ``amount`` (signed, in the subscriber's favour), by default on the
    prepaid line with 150.00 KES of credit, from the charging system."""
    fields: dict[str, object] = {
        "idempotency_key": key,
        "account_id": account,
        "amount": pb.Money(amount_minor=amount, currency=currency),
        "reason": "usage charged 2026-12-05",
        "source_system": "ocs",
    }
    fields.update(overrides)
    return pb.AdjustBalanceRequest(**fields)


def ledger_net(book: LedgerBook, account: int) -> int:
    found, _, debits, _, credits = book.ledger.balances(ids_array([account]))
    return int(credits[0]) - int(debits[0]) if found[0] else 0


def balance_of(server: RunningServer, account_id: str) -> int:
    row = server.store.subscriber(account_id)
    assert row is not None
    return row.balance_minor


def adjustment_rows(data_dir: Path) -> list[tuple[str, str, int, str]]:
    with sqlite3.connect(data_dir / "quickpay.sqlite3") as db:
        return db.execute(
            "SELECT adjustment_id, idempotency_key, amount_minor, status"
            " FROM balance_adjustments ORDER BY created_at_us"
        ).fetchall()


async def test_a_replay_with_the_same_key_makes_one_transfer(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path
) -> None:
    book = server.service.book
    first = await stub.AdjustBalance(adjust("adj-1"), timeout=TIMEOUT_S)
    assert first.status == pb.APPLIED and not first.replayed
    assert first.adjustment_id.startswith("adj_")
    assert first.balance_after == pb.Money(amount_minor=16_000, currency="KES")
    # Sequential and concurrent retries: the first result each time, nothing moves again.
    again = await stub.AdjustBalance(adjust("adj-1"), timeout=TIMEOUT_S)
    together = await asyncio.gather(
        *(stub.AdjustBalance(adjust("adj-1"), timeout=TIMEOUT_S) for _ in range(8))
    )
    for reply in (again, *together):
        assert reply.replayed
        assert reply.adjustment_id == first.adjustment_id
        assert reply.balance_after == first.balance_after
    assert balance_of(server, "acc-pre") == 16_000
    assert ledger_net(book, subscriber_account("acc-pre")) == 1_000
    assert ledger_net(book, adjustment_account("KES")) == -1_000
    assert [r[1:] for r in adjustment_rows(data_dir)] == [("adj-1", 1_000, "APPLIED")]
    # The key with another payload: refused, as Pay refuses it, and nothing moves.
    for other in (
        adjust("adj-1", amount=999),
        adjust("adj-1", reason="another reason"),
        adjust("adj-1", allow_negative_balance=True),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AdjustBalance(other, timeout=TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert balance_of(server, "acc-pre") == 16_000
    assert ledger_net(book, subscriber_account("acc-pre")) == 1_000


def _provisioning_change(server: RunningServer, document_id: str) -> tuple[object, ...] | None:
    store = server.store
    query = "SELECT payment_id, state_before, state_after, rule_id FROM provisioning_changes"
    if isinstance(store, SqliteStore):
        return store._db.execute(query + " WHERE document_id = ?", (document_id,)).fetchone()
    return store._prov.execute(query + " WHERE document_id = %s", (document_id,)).fetchone()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_a_credit_that_pays_up_a_barred_line_restores_it_as_a_payment_would(
    stub: pb_grpc.SettlementStub, server: RunningServer, backend: str
) -> None:
    """The provisioning rules a payment applies (store/provisioning.py): a prepaid line
    barred at zero credit is restored by a credit that leaves credit, a postpaid one by
    the credit that pays up what it owes; a debit, or a credit that leaves it short,
    changes no line. The restoring adjustment records the change (its id the document,
    no payment) and writes a service_state event before its own, as a payment does."""
    store = server.store
    debit = await stub.AdjustBalance(
        adjust("b-1", account="acc-pre-barred", amount=-100, allow_negative_balance=True),
        timeout=TIMEOUT_S,
    )
    credit = await stub.AdjustBalance(
        adjust("b-2", account="acc-pre-barred", amount=1_000), timeout=TIMEOUT_S
    )
    short = await stub.AdjustBalance(
        adjust("b-3", account="acc-post-barred", amount=5_000, currency="EUR"), timeout=TIMEOUT_S
    )
    paid_up = await stub.AdjustBalance(
        adjust("b-4", account="acc-post-barred", amount=3_000, currency="EUR"), timeout=TIMEOUT_S
    )
    assert {r.status for r in (debit, credit, short, paid_up)} == {pb.APPLIED}
    assert _provisioning_change(server, debit.adjustment_id) is None
    assert _provisioning_change(server, short.adjustment_id) is None
    assert _provisioning_change(server, credit.adjustment_id) == (
        "",
        LineStatus.BARRED,
        LineStatus.ACTIVE,
        "prepaid-barred-has-credit",
    )
    assert _provisioning_change(server, paid_up.adjustment_id) == (
        "",
        LineStatus.BARRED,
        LineStatus.ACTIVE,
        "postpaid-barred-paid-up",
    )
    for account, balance in (("acc-pre-barred", 900), ("acc-post-barred", 0)):
        line = store.subscriber(account)
        assert line is not None and (line.status, line.balance_minor) == (
            LineStatus.ACTIVE,
            balance,
        )
    events = store.outbox_after(0, account_id="acc-pre-barred")
    assert [(e.kind, e.payload.get("service_state_after")) for e in events] == [
        ("adjustment", "BARRED"),
        ("service_state", None),
        ("adjustment", "ACTIVE"),
    ]
    assert events[1].payload == {
        "msisdn": "+254700000003", "state_before": "BARRED", "state_after": "ACTIVE"
    }  # fmt: skip
    assert all(e.payment_id == "" for e in events)
    # The engine's table has the line ACTIVE: a top-up that settles (the simulators
    # decline a few at random) restores nothing more.
    paid = await stub.Pay(topup("b-pay"), timeout=TIMEOUT_S)
    assert paid.status in (pb.SETTLED, pb.DECLINED), paid
    if paid.status == pb.SETTLED:
        assert paid.confirmation.service_state_after == "ACTIVE"
        assert _provisioning_change(server, paid.payment_id) is None
    await server.service._pipeline.drain()
    assert store.verify() == []
    assert _balance_problems(store, server.service.book) == []


async def test_a_debit_below_zero_is_declined_unless_allowed(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path
) -> None:
    book = server.service.book
    refused = await stub.AdjustBalance(adjust("usage-1", amount=-20_000), timeout=TIMEOUT_S)
    assert refused.status == pb.ADJUSTMENT_DECLINED
    assert refused.decline_reason == "INSUFFICIENT_CREDIT"
    assert refused.balance_after.amount_minor == 15_000
    replay = await stub.AdjustBalance(adjust("usage-1", amount=-20_000), timeout=TIMEOUT_S)
    assert replay.replayed and replay.status == pb.ADJUSTMENT_DECLINED
    assert balance_of(server, "acc-pre") == 15_000
    assert ledger_net(book, subscriber_account("acc-pre")) == 0
    # Down to exactly zero needs no flag; below it, the flag.
    exact = await stub.AdjustBalance(adjust("usage-2", amount=-15_000), timeout=TIMEOUT_S)
    assert exact.status == pb.APPLIED and exact.balance_after.amount_minor == 0
    flagged = await stub.AdjustBalance(
        adjust("usage-3", amount=-5_000, allow_negative_balance=True), timeout=TIMEOUT_S
    )
    assert flagged.status == pb.APPLIED
    assert flagged.balance_after.amount_minor == -5_000
    assert balance_of(server, "acc-pre") == -5_000
    assert ledger_net(book, subscriber_account("acc-pre")) == -20_000
    # A postpaid balance is what is owed: a charge raises it, with no floor to pass.
    owed = await stub.AdjustBalance(
        adjust("roaming-1", account="acc-post", amount=-4_000, currency="EUR"), timeout=TIMEOUT_S
    )
    assert owed.status == pb.APPLIED and owed.balance_after.amount_minor == 6_500


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (adjust("", amount=1), "idempotency_key"),
        (adjust("bad-1", account="acc-nobody"), "account_id"),
        (adjust("bad-2", account=""), "account_id"),
        (adjust("bad-3", amount=0), "amount.amount_minor"),
        (adjust("bad-4", amount=1, currency="EUR"), "amount.currency"),
        (adjust("bad-5", reason=""), "reason"),
        (adjust("bad-6", source_system=""), "source_system"),
        (adjust("bad-7", source_system="x" * 65), "source_system"),
        (pb.AdjustBalanceRequest(idempotency_key="bad-8", account_id="acc-pre",
                                 reason="r", source_system="s"), "amount"),
    ],
)  # fmt: skip
async def test_bad_input_is_invalid_argument_naming_the_field(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path, request_, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AdjustBalance(request_, timeout=TIMEOUT_S)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(f"{field}:"), refused.value.details()
    assert adjustment_rows(data_dir) == []
    assert balance_of(server, "acc-pre") == 15_000


async def test_the_next_payment_is_validated_against_the_adjusted_balance(
    stub: pb_grpc.SettlementStub, server: RunningServer
) -> None:
    # acc-post owes 25.00 EUR: a bill of 150.00 overpays it by more than the allowance.
    large = {"account_id": "acc-post", "msisdn": "+306900000002"}
    before = await stub.Pay(
        bill("big-1", amount=pb.Money(amount_minor=15_000, currency="EUR"), **large)
    )
    assert before.decline_reason == "BILL_OVERPAYMENT"
    charged = await stub.AdjustBalance(
        adjust("roam-1", account="acc-post", amount=-5_000, currency="EUR"), timeout=TIMEOUT_S
    )
    assert charged.balance_after.amount_minor == 7_500
    after = await stub.Pay(
        bill("big-2", amount=pb.Money(amount_minor=15_000, currency="EUR"), **large)
    )
    # Owing 75.00 now, the same bill is within the allowance (a gateway may still decline).
    assert after.decline_reason != "BILL_OVERPAYMENT"
    assert after.status in (pb.SETTLED, pb.DECLINED)


async def test_an_adjustment_waits_for_the_accounts_payment_in_flight(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path
) -> None:
    pipeline = server.service._pipeline
    # A payment of acc-pre between validation and the end of its batch, as the
    # pipeline marks one.
    pipeline._busy["acc-pre"] += 1
    call = asyncio.ensure_future(stub.AdjustBalance(adjust("wait-1"), timeout=TIMEOUT_S))
    await asyncio.sleep(0.3)
    assert not call.done()
    assert adjustment_rows(data_dir) == []  # not even journalled: it waits first
    # Another account is not held up.
    other = await stub.AdjustBalance(
        adjust("other-1", account="acc-post", currency="EUR"), timeout=TIMEOUT_S
    )
    assert other.status == pb.APPLIED
    pipeline._free(["acc-pre"])
    reply = await call
    assert reply.status == pb.APPLIED and reply.balance_after.amount_minor == 16_000
    assert not pipeline._busy["acc-pre"]


async def _verified_traffic(stub: pb_grpc.SettlementStub, server: RunningServer) -> None:
    """Payments, and adjustments both ways on prepaid and postpaid accounts."""
    await stub.Pay(bill("pay-1"))
    for key, account, amount, currency in (
        ("v-1", "acc-pre", -2_500, "KES"),
        ("v-2", "acc-pre", 700, "KES"),
        ("v-3", "acc-pre-barred", 1_200, "KES"),
        ("v-4", "acc-post", -900, "EUR"),
        ("v-5", "acc-post-barred", 1_500, "EUR"),
    ):
        reply = await stub.AdjustBalance(
            adjust(key, account=account, amount=amount, currency=currency), timeout=TIMEOUT_S
        )
        assert reply.status == pb.APPLIED
    await server.service._pipeline.drain()


async def test_verify_is_clean_account_by_account_and_catches_a_tampered_adjustment(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path
) -> None:
    await _verified_traffic(stub, server)
    assert _balance_problems(server.store, server.service.book) == []
    done = verify_cli(data_dir)
    assert done.returncode == 0, done.stdout
    db_path = data_dir / "quickpay.sqlite3"
    with sqlite3.connect(db_path) as db:
        (aid,) = db.execute(
            "SELECT adjustment_id FROM balance_adjustments WHERE idempotency_key = 'v-2'"
        ).fetchone()
    # Tampered: the amount of one adjustment.
    with sqlite3.connect(db_path) as db:
        db.execute(
            "UPDATE balance_adjustments SET amount_minor = 70 WHERE adjustment_id = ?", (aid,)
        )
    done = verify_cli(data_dir)
    assert done.returncode == 1
    assert (
        "ledger balance not billing's movements (account, ledger, billing): acc-pre" in done.stdout
    )
    assert f"adjustment {aid} is" in done.stdout  # its audit row disagrees
    with sqlite3.connect(db_path) as db:
        db.execute(
            "UPDATE balance_adjustments SET amount_minor = 700 WHERE adjustment_id = ?", (aid,)
        )
    assert verify_cli(data_dir).returncode == 0
    # Missing: the row removed (its AR legs and audit row stay).
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM balance_adjustments WHERE adjustment_id = ?", (aid,))
    done = verify_cli(data_dir)
    assert done.returncode == 1
    assert "balance is not opening balance plus billing history and adjustments" in done.stdout
    assert f"adjustment {aid} is not in the store" in done.stdout


def _serve(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    log = (data_dir / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--gateways", os.environ[GATEWAYS_VAR],
         "--fraud-mode", "observe"],
        stdout=subprocess.PIPE, stderr=log, env={**os.environ, **env},
    )  # fmt: skip
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert line.startswith("listening on "), f"server did not start: {line!r}"
    return process, int(line.rsplit(":", 1)[1])


@pytest.mark.parametrize("point", ["after_journal", "after_transfer"])
async def test_sigkill_between_journal_and_commit_is_finished_once_at_restart(
    tmp_path: Path, point: str
) -> None:
    seed_store(tmp_path)
    process, port = _serve(tmp_path, {"QUICKPAY_FAULT_ADJUST": point})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await stub.AdjustBalance(adjust("crash-1", amount=-4_000), timeout=TIMEOUT_S)
            assert lost.value.code() is grpc.StatusCode.UNAVAILABLE
        assert process.wait(TIMEOUT_S) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    # Journalled, not applied: what the crash left.
    [(aid, _, _, status)] = adjustment_rows(tmp_path)
    assert status == "PENDING"
    process, port = _serve(tmp_path, {})
    try:
        # Listening: the start's recovery has finished it, before any retry.
        assert adjustment_rows(tmp_path) == [(aid, "crash-1", -4_000, "APPLIED")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            retry = await stub.AdjustBalance(adjust("crash-1", amount=-4_000), timeout=TIMEOUT_S)
            assert retry.replayed and retry.adjustment_id == aid
            assert retry.status == pb.APPLIED and retry.balance_after.amount_minor == 11_000
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert adjustment_rows(tmp_path) == [(aid, "crash-1", -4_000, "APPLIED")]
    done = verify_cli(tmp_path)
    assert done.returncode == 0, done.stdout
    book = LedgerBook(open_ledger(settings_for(tmp_path).ledger_dir))
    try:
        assert ledger_net(book, subscriber_account("acc-pre")) == -4_000
    finally:
        book.close()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_the_commit_path_on_every_store(
    stub: pb_grpc.SettlementStub, server: RunningServer, backend: str
) -> None:
    await _verified_traffic(stub, server)
    replay = await stub.AdjustBalance(
        adjust("v-3", account="acc-pre-barred", amount=1_200), timeout=TIMEOUT_S
    )
    assert replay.replayed and replay.balance_after.amount_minor == 1_200
    refused = await stub.AdjustBalance(adjust("v-9", amount=-50_000), timeout=TIMEOUT_S)
    assert refused.status == pb.ADJUSTMENT_DECLINED
    store = server.store
    assert balance_of(server, "acc-pre") == 15_000 - 2_500 + 700
    assert balance_of(server, "acc-post") == 2_500 + 900
    assert store.verify() == []
    assert _balance_problems(store, server.service.book) == []
    assert store.pending_adjustments() == []
    assert store.applied_adjustment_count() == 5


async def _adjust_cli(port: int, *words: str) -> tuple[int, str]:
    """`quickpay adjust` against the in-process server (a subprocess the event loop
    does not wait on, so the server goes on serving)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "adjust", *words,
        "--target", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_S * 3)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_adjust_command_calls_the_rpc(server: RunningServer) -> None:
    usage = ("acc-pre", "-250", "KES", "--reason", "data bundle", "--source", "ocs")
    code, out = await _adjust_cli(server.port, *usage, "--key", "cli-1")
    assert code == 0 and out.startswith("APPLIED adj_") and "balance after 14750 KES" in out
    code, out = await _adjust_cli(server.port, *usage, "--key", "cli-1")
    assert code == 0 and "(replayed)" in out
    code, out = await _adjust_cli(
        server.port,
        "acc-pre",
        "-99999",
        "KES",
        "--reason",
        "r",
        "--source",
        "ocs",
        "--key",
        "cli-2",
    )
    assert code == 1 and "DECLINED" in out and "INSUFFICIENT_CREDIT" in out
    code, out = await _adjust_cli(server.port, *usage, "--key", "cli-1", "--allow-negative")
    assert code == 2 and "FAILED_PRECONDITION" in out
    assert balance_of(server, "acc-pre") == 14_750


def test_a_store_of_schema_3_gains_the_adjustments_table(tmp_path: Path) -> None:
    from quickpay_engine.store import SqliteStore
    from quickpay_engine.store.sqlite import ADJUSTMENTS_TABLE, SCHEMA_VERSION

    path = tmp_path / "quickpay.sqlite3"
    store = SqliteStore(path)
    store.close()
    with sqlite3.connect(path) as db:  # as the previous build made it
        db.executescript("DROP TABLE balance_adjustments; PRAGMA user_version = 3;")
    assert "CREATE TABLE IF NOT EXISTS balance_adjustments" in ADJUSTMENTS_TABLE
    store = SqliteStore(path)
    try:
        assert store.verify() == []
        assert store.pending_adjustments() == []
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = [row[1] for row in db.execute("PRAGMA index_list(balance_adjustments)")]
    assert "adjustments_by_account" in indexes


def _recover_cli(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "recover", "--data-dir", str(data_dir),
         "--gateways", os.environ[GATEWAYS_VAR], *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_quickpay_recover_applies_an_adjustment_left_journalled(tmp_path: Path) -> None:
    seed_store(tmp_path)
    process, port = _serve(tmp_path, {"QUICKPAY_FAULT_ADJUST": "after_transfer"})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.AdjustBalance(adjust("crash-2", amount=2_000), timeout=TIMEOUT_S)
        assert process.wait(TIMEOUT_S) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    [(aid, _, _, status)] = adjustment_rows(tmp_path)
    assert status == "PENDING"
    # The ledger moved, billing did not: verify says so, and what to do.
    done = verify_cli(tmp_path)
    assert done.returncode == 1
    assert f"balance adjustment journalled but not applied (run `quickpay recover`): {aid}" in (
        done.stdout
    )
    dry = _recover_cli(tmp_path, "--dry-run")
    assert dry.returncode == 0 and f"{aid}  PENDING      apply adjustment" in dry.stdout
    assert adjustment_rows(tmp_path)[0][3] == "PENDING"
    done = _recover_cli(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "adjustment applied" in done.stdout
    assert adjustment_rows(tmp_path) == [(aid, "crash-2", 2_000, "APPLIED")]
    done = verify_cli(tmp_path)
    assert done.returncode == 0, done.stdout


async def test_payments_and_adjustments_of_one_account_at_once_stay_consistent(
    stub: pb_grpc.SettlementStub, server: RunningServer, data_dir: Path
) -> None:
    from conftest import topup

    calls = []
    for n in range(12):
        calls.append(
            stub.Pay(topup(f"mix-pay-{n}", amount=pb.Money(amount_minor=500, currency="KES")))
        )
        calls.append(
            stub.AdjustBalance(
                adjust(f"mix-adj-{n}", account="acc-pre-barred", amount=300 if n % 2 else -200),
                timeout=TIMEOUT_S,
            )
        )
    replies = await asyncio.gather(*calls)
    await server.service._pipeline.drain()
    settled = sum(500 for r in replies if isinstance(r, pb.PayResponse) and r.status == pb.SETTLED)
    applied = [r for r in replies if isinstance(r, pb.AdjustBalanceResponse)]
    moved = sum(
        (300 if int(r.idempotency_key.rsplit("-", 1)[1]) % 2 else -200)
        for r in applied
        if r.status == pb.APPLIED
    )
    # Every debit was checked against a balance no payment was about to change: none
    # took the prepaid balance below zero.
    assert all(r.balance_after.amount_minor >= 0 for r in applied)
    assert balance_of(server, "acc-pre-barred") == settled + moved
    assert _balance_problems(server.store, server.service.book) == []
    done = verify_cli(data_dir)
    assert done.returncode == 0, done.stdout
