"""Two-phase commit across billing, AR and provisioning databases on the real server:
the engine killed (SIGKILL) between PREPARE and the decision, and between the decision
and the last COMMIT PREPARED; after a restart every participant agrees, `quickpay
verify` is clean and nothing is left prepared. A participant lost during a batch rolls
the batch back everywhere. Two-phase mode is refused without prepared transactions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import SUBSCRIBERS, seed_store, settings_for
from pg_support import prepared_transactions, require, reset_database
from quickpay_engine._engine import Ledger
from quickpay_engine.errors import ConfigError
from quickpay_engine.settlement.twophase import (
    FAULT_ENV,
    LOG_DIR,
    TwoPhaseCoordinator,
    TwoPhaseStore,
    instance_id,
)
from quickpay_engine.storage import TWO_PHASE_DIR, open_store
from quickpay_engine.store.postgres import PostgresStore, PostgresUrls

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def urls(module_databases: list[str]) -> Iterator[list[str]]:
    """Billing, AR and provisioning: three empty databases."""
    require()
    for url in module_databases:
        reset_database(url)
    yield module_databases
    left = prepared_transactions(module_databases)
    assert not left, f"prepared transactions left behind: {left}"


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def payments_everywhere(urls: list[str]) -> tuple[int, int, int]:
    """(payments in billing, AR legs in AR, provisioning changes in provisioning)."""
    billing, ar, provisioning = urls
    return (
        count(billing, "payments"),
        count(ar, "ar_entries"),
        count(provisioning, "provisioning_changes"),
    )


# The engine's side of one batch, in a process of its own so a fault can kill it.
CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{tests!r}, {root!r}]
    from conftest import SUBSCRIBERS, settings_for
    from test_twophase import settle
    from quickpay_engine.storage import open_store

    store = open_store(settings_for({data_dir!r}, database_urls={urls!r}), coordinate=True)
    outcomes, _ = store.commit_batch([settle("crash-1", 8_000), settle("crash-2", 500)])
    print("committed", [o.status.name for o in outcomes], flush=True)
    store.close()
    """
)


def settle(key: str, amount: int, subscriber: int = 0):
    """A bill payment, by default for the barred postpaid line (restored once paid up)."""
    from quickpay_engine.domain import Method, MethodKind, PaymentIntent, Purpose
    from quickpay_engine.store import Decision

    sub = SUBSCRIBERS[subscriber]
    intent = PaymentIntent(
        idempotency_key=key,
        fingerprint=f"fp-{key}",
        account_id=sub.account_id,
        msisdn=sub.msisdn,
        amount_minor=amount,
        currency=sub.currency,
        purpose=Purpose.BILL_PAYMENT,
        method=Method(MethodKind.CARD, "card ****4242"),
        channel="app",
        device_id="dev",
        ip="192.0.2.1",
    )
    return Decision(f"pay_{key}", intent, gateway="acq-a", gateway_reference=f"ref-{key}")


def run_child(data_dir: Path, urls: list[str], fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    code = CHILD.format(
        tests=str(ROOT / "tests"), root=str(ROOT), data_dir=str(data_dir), urls=urls
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def decisions(data_dir: Path) -> list[tuple[str, int]]:
    ledger = Ledger.open(data_dir / TWO_PHASE_DIR / LOG_DIR)
    try:
        return ledger.decisions()
    finally:
        ledger.close()


def verify_cli(data_dir: Path, urls: list[str]) -> subprocess.CompletedProcess:
    billing, ar, provisioning = urls
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "verify", "--data-dir", str(data_dir),
         "--database-url", billing, "--billing-url", billing, "--ar-url", ar,
         "--provisioning-url", provisioning],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_batch_commits_in_every_database_and_leaves_no_decision(
    tmp_path: Path, urls: list[str]
) -> None:
    seed_store(tmp_path, database_urls=urls)
    done = run_child(tmp_path, urls, fault=None)
    assert done.returncode == 0, done.stderr
    assert "committed ['SETTLED', 'SETTLED']" in done.stdout
    assert payments_everywhere(urls) == (2, 4, 1)
    assert decisions(tmp_path) == [], "a finished batch's decision is forgotten"
    assert verify_cli(tmp_path, urls).returncode == 0


@pytest.mark.parametrize(
    ("fault", "prepared_before", "landed"),
    [
        # Killed after every participant prepared, before the decision was logged:
        # presumed abort, so recovery rolls all three back and nothing landed.
        ("after_prepare", 3, (0, 0, 0)),
        # Killed after the COMMIT decision was logged, before any COMMIT PREPARED:
        # recovery commits all three.
        ("after_decision", 3, (2, 4, 1)),
        # Killed after the first participant committed: recovery commits the other two.
        ("after_first_commit", 2, (2, 4, 1)),
    ],
)
def test_killed_mid_commit_every_participant_agrees_after_restart(
    tmp_path: Path, urls: list[str], fault: str, prepared_before: int, landed: tuple
) -> None:
    seed_store(tmp_path, database_urls=urls)
    done = run_child(tmp_path, urls, fault)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
    assert "committed" not in done.stdout
    assert len(prepared_transactions(urls)) == prepared_before
    logged = decisions(tmp_path)
    assert len(logged) == (0 if fault == "after_prepare" else 1)
    # The restart: opening the store resolves what is prepared, before any batch.
    store = open_store(settings_for(tmp_path, database_urls=urls), coordinate=True)
    try:
        assert prepared_transactions(urls) == []
        assert payments_everywhere(urls) == landed
        assert store.verify() == []
        balance = store.subscriber(SUBSCRIBERS[0].account_id).balance_minor
        assert balance == (8_000 if landed[0] == 0 else 8_000 - 8_500)
        # The engine goes on: the next batch commits everywhere.
        outcomes, _ = store.commit_batch([settle("after-1", 100)])
        assert [o.status.name for o in outcomes] == ["SETTLED"]
    finally:
        store.close()
    assert decisions(tmp_path) == []
    checked = verify_cli(tmp_path, urls)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all invariants hold" in checked.stdout


def test_a_participant_lost_mid_batch_rolls_back_everywhere(
    tmp_path: Path, urls: list[str]
) -> None:
    seed_store(tmp_path, database_urls=urls)
    store = open_store(settings_for(tmp_path, database_urls=urls), coordinate=True)
    assert isinstance(store, TwoPhaseStore)
    try:
        # The AR database's server ends our session, as a restart or failover would.
        ar_name = psycopg.conninfo.conninfo_to_dict(urls[1])["dbname"]
        with psycopg.connect(urls[0], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid != pg_backend_pid()",
                (ar_name,),
            )
        # The client learns of the loss only when the batch uses the connection.
        with pytest.raises(psycopg.OperationalError):
            store.commit_batch([settle("lost-1", 100)])
        assert prepared_transactions(urls) == []
        assert payments_everywhere(urls) == (0, 0, 0)
        assert store.coordinator.recover().committed == [], "no decision was logged"
        # The next batch reconnects and commits everywhere.
        outcomes, _ = store.commit_batch([settle("lost-2", 100)])
        assert [o.status.name for o in outcomes] == ["SETTLED"]
        assert payments_everywhere(urls) == (1, 2, 0)
    finally:
        store.close()


def test_the_sweep_resolves_an_orphan_of_this_instance_only(
    tmp_path: Path, urls: list[str]
) -> None:
    seed_store(tmp_path, database_urls=urls)
    store = open_store(settings_for(tmp_path, database_urls=urls), coordinate=True)
    assert isinstance(store, TwoPhaseStore)
    try:
        coordinator = store.coordinator
        # An orphan of ours with no decision (its coordinator died before deciding) and
        # one of another engine sharing the server.
        ours = coordinator.next_gid()
        store.store.prepare_batch([settle("orphan-1", 100)], ours)
        theirs = "qp:someoneelse:1:1"
        with psycopg.connect(urls[0], autocommit=True) as other:
            other.execute("BEGIN")
            other.execute(f"PREPARE TRANSACTION '{theirs}:billing'")
        resolution = store.sweep()
        assert sorted(resolution.rolled_back) == sorted(
            f"{ours}:{p}" for p in ("billing", "ar", "provisioning")
        )
        assert [(p.participant, p.gid) for p in store.store.prepared()] == [("billing", theirs)]
        store.store.rollback_prepared(theirs, ["billing"])
        assert payments_everywhere(urls) == (0, 0, 0)
    finally:
        store.close()


class NoPreparedTransactions(PostgresStore):
    """A server whose max_prepared_transactions is 0 (the setting needs a restart, so
    the test cannot turn it off on the shared server)."""

    def max_prepared_transactions(self) -> dict[str, int]:
        return {**super().max_prepared_transactions(), "ar": 0}


def test_two_phase_mode_is_refused_without_prepared_transactions(
    tmp_path: Path, urls: list[str]
) -> None:
    store = NoPreparedTransactions(PostgresUrls(*urls))
    ledger = Ledger.open(tmp_path / "log")
    try:
        coordinator = TwoPhaseCoordinator(store, ledger, instance_id(tmp_path))
        with pytest.raises(ConfigError, match=r"max_prepared_transactions is 0 .* ar database"):
            coordinator.require_enabled()
        # The near miss: the real server has it enabled (scripts/services.sh).
        real = PostgresStore(PostgresUrls(*urls))
        try:
            TwoPhaseCoordinator(real, ledger, "x").require_enabled()
        finally:
            real.close()
    finally:
        store.close()
        ledger.close()


def test_global_ids_name_the_instance_and_batch_and_stay_short(tmp_path: Path) -> None:
    instance = instance_id(tmp_path)
    assert instance == instance_id(tmp_path), "stable across restarts"
    assert len(instance) == 16

    class Clockless:
        pass

    ids = set()
    for start in (1, 2):
        coordinator = TwoPhaseCoordinator(Clockless(), None, instance, clock_ns=lambda s=start: s)  # type: ignore[arg-type]
        ids.update(coordinator.next_gid() for _ in range(3))
    assert len(ids) == 6, "unique within a run and across restarts"
    assert all(g.startswith(f"qp:{instance}:") and len(g.encode()) + 13 < 200 for g in ids)


async def test_the_running_server_sweeps_orphans(tmp_path: Path, urls: list[str]) -> None:
    import asyncio

    from quickpay_engine.server import create_server, sweep_prepared

    seed_store(tmp_path, database_urls=urls)
    running = await create_server(settings_for(tmp_path, database_urls=urls))
    try:
        store = running.store
        assert isinstance(store, TwoPhaseStore) and running.sweeper is not None
        orphan = store.coordinator.next_gid()
        await running.service.on_store_thread(
            lambda: store.store.prepare_batch([settle("orphan-s", 100)], orphan)
        )
        assert len(prepared_transactions(urls)) == 3
        sweeper = asyncio.create_task(sweep_prepared(running.service, store, interval_s=0.05))
        for _ in range(100):
            if not prepared_transactions(urls):
                break
            await asyncio.sleep(0.05)
        sweeper.cancel()
        assert prepared_transactions(urls) == []
    finally:
        await running.stop(grace_s=1)


async def test_a_participant_lost_during_a_grpc_batch_voids_the_capture(
    tmp_path: Path, urls: list[str], simulators
) -> None:
    """Through the real server: the AR database drops the engine's session while a Pay
    is being settled (after the gateway captured it). The batch rolls back in every
    database, the capture is voided at the gateway, the hold rolled back, the caller is
    told FAILED (BILLING_UNAVAILABLE), and a retry with the same key settles."""
    import grpc

    from conftest import bill
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
    from quickpay_engine.server import create_server
    from quickpay_engine.settlement.ledger_book import ROLLED_BACK

    seed_store(tmp_path, database_urls=urls)
    running = await create_server(settings_for(tmp_path, database_urls=urls))
    try:
        ar_name = psycopg.conninfo.conninfo_to_dict(urls[1])["dbname"]
        assert running.owner is not None
        with psycopg.connect(urls[0], autocommit=True) as admin:
            # The store's sessions; not the ownership lock's, whose loss would fence the
            # engine (tests/test_pg_owner.py) before this batch reached the gateway.
            (ended,) = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                " FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
                (ar_name, running.owner.application_name),
            ).fetchone()
        assert ended >= 1, "the server holds a session in the AR database"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            reply = await stub.Pay(bill("2pc-lost"), timeout=30)
            assert (reply.status, reply.decline_reason) == (pb.FAILED, "BILLING_UNAVAILABLE")
            gateway_record = simulators.payment("acq-a", reply.payment_id)
            assert gateway_record is not None and gateway_record["state"] == "VOIDED"
            # A capture voided, not a reference merely barred: it carried the amount.
            assert gateway_record["amount_minor"] == 3_000
            assert gateway_record["captured_at_us"] is not None
            assert running.service.book.states([reply.payment_id]) == [ROLLED_BACK]
            assert prepared_transactions(urls) == []
            assert payments_everywhere(urls) == (0, 0, 0)

            retry = await stub.Pay(bill("2pc-lost"), timeout=30)
            assert retry.status == pb.SETTLED and retry.payment_id != reply.payment_id
            assert payments_everywhere(urls) == (1, 2, 0)  # 30.00 of 80.00 owed: still barred
    finally:
        await running.stop(grace_s=1)
    done = verify_cli(tmp_path, urls)
    assert done.returncode == 0, done.stdout + done.stderr
