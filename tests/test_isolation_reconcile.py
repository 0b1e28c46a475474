"""Reconcile cannot starve the payments (issue #20, item 6): it runs on a thread and
store connection of its own, one run at a time with a bounded wait; its discrepancy
writes are short transactions that a payment batch waiting for SQLite's write lock gets
between; a gateway that does not exist is INVALID_ARGUMENT. The checks count (threads,
calls, transactions) where they can; Pay's rate is compared in alternating windows with
a generous bound (tests/rates.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

import grpc
import psycopg
import pytest

from conftest import BOTH_BACKENDS, SUBSCRIBERS
from quickpay_engine._engine import Reconciled
from quickpay_engine.api import convert
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import Method, MethodKind, PaymentIntent, Purpose
from quickpay_engine.reconcile.matcher import reconcile
from quickpay_engine.reconcile.report import read_rows
from quickpay_engine.server import RunningServer
from quickpay_engine.settlement import reconciliation, service
from quickpay_engine.store import Decision, SqliteStore
from rates import RATE_KEPT_MIN, rates, until

DAY = "2026-11-24"
HEADER = "gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n"


def big_report(rows: int) -> bytes:
    """A report of ``rows`` captures billing never saw: one discrepancy each."""
    lines = [
        f"gw-x-{k:08d},pay_x_{k:08d},{100 + k},EUR,CAPTURE,SETTLED,{DAY}T12:00:00Z\n"
        for k in range(rows)
    ]
    return (HEADER + "".join(lines)).encode()


@BOTH_BACKENDS
async def test_reconcile_runs_on_its_own_thread_and_connection(
    server: RunningServer, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, object]] = []
    real = reconciliation.run

    def spy(store, *args, **kwargs):
        seen.append((threading.current_thread().name, store))
        return real(store, *args, **kwargs)

    replied_on: list[str] = []
    reply = convert.reconcile_report

    def reply_spy(run):
        replied_on.append(threading.current_thread().name)
        return reply(run)

    monkeypatch.setattr(reconciliation, "run", spy)
    monkeypatch.setattr(convert, "reconcile_report", reply_spy)
    report = await stub.Reconcile(pb.ReconcileRequest(gateway="acq-a", report_csv=big_report(3)))
    assert len(report.discrepancies) == 3
    ((thread, store),) = seen
    assert thread.startswith("store-reconcile"), thread
    # The reply (0.4 s for 50,000 discrepancies) is built there too, not on the loop.
    assert replied_on == [thread]
    assert store is not server.service._store, "not the payment writer's connection"
    # The payment writer's thread is another one: it never ran the reconciliation.
    writer = await server.service.on_store_thread(lambda: threading.current_thread().name)
    assert writer != thread


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_reconcile_gets_a_new_session_after_postgres_ended_its_own(
    server: RunningServer, stub, database_url: str
) -> None:
    """Reconcile's connection is its own: after the database ended its session (a
    restart, a failover) a run fails at most once, and the next one reconnects."""
    request = pb.ReconcileRequest(gateway="acq-a", report_csv=big_report(2))
    assert len((await stub.Reconcile(request)).discrepancies) == 2
    pid = server.service._reconciler._billing.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await until(
            lambda: (
                not admin.execute(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
                ).fetchone()[0]
            ),
            "the session's end",
        )
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub.Reconcile(request)  # may find the connection broken
    assert len((await stub.Reconcile(request)).discrepancies) == 2


async def test_a_reconcile_past_the_waiting_bound_is_resource_exhausted(
    server: RunningServer, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = reconciliation.run

    def held(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(reconciliation, "run", held)
    request = pb.ReconcileRequest(gateway="acq-a", report_csv=big_report(2))
    admitted = 1 + service.RECONCILE_WAITING_MAX
    try:
        calls = [asyncio.ensure_future(stub.Reconcile(request)) for _ in range(admitted)]
        await until(lambda: server.service._reconciles == admitted, "runs admitted")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Reconcile(request)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "reconciliations are running or waiting" in err.value.details()
    finally:
        release.set()
    assert all(len(r.discrepancies) == 2 for r in await asyncio.gather(*calls))
    # Once they have finished, another is taken.
    assert len((await stub.Reconcile(request)).discrepancies) == 2


async def test_reconcile_for_a_gateway_that_does_not_exist_is_invalid_argument(
    server: RunningServer, stub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Reconcile(pb.ReconcileRequest(gateway="acq-zz", report_csv=big_report(2)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "acq-zz" in err.value.details()
    assert "acq-a" in err.value.details(), "the message names the gateways there are"
    # Nothing was written for it.
    count = await server.service.on_store_thread(
        lambda: server.store._db.execute("SELECT count(*) FROM discrepancies").fetchone()[0]
    )
    assert count == 0


def _discrepancies(n: int) -> Reconciled:
    """A reconciliation's outcome with ``n`` discrepancies, held by the engine."""
    report = read_rows(io.StringIO(big_report(n).decode(), newline=""))
    return reconcile("acq-a", date.fromisoformat(DAY), report, [], 900).held


def test_discrepancies_are_written_in_short_transactions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    sizes: list[int] = []
    real = store.record_reconciled

    def spy(found, gateway, day, start, stop, now_us):
        sizes.append(stop - start)
        return real(found, gateway, day, start, stop, now_us)

    store.record_reconciled = spy  # type: ignore[method-assign]
    found = _discrepancies(3 * reconciliation.DISCREPANCY_CHUNK + 5)
    reconciliation.record_in_chunks(store, "acq-a", DAY, found)
    assert len(found.states()) == len(found)
    assert max(sizes) == reconciliation.DISCREPANCY_CHUNK and sum(sizes) == len(found)
    (count,) = store._db.execute("SELECT count(*) FROM discrepancies").fetchone()
    assert count == len(found)
    store.close()


def test_a_chunk_that_found_the_lock_taken_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's "database is locked" after the busy timeout (the payment writer
    saturated): the chunk is tried again, up to LOCKED_RETRIES times, and written."""
    store = SqliteStore(tmp_path / "q.sqlite")
    real = store.record_reconciled
    failures = [reconciliation.LOCKED_RETRIES]

    def busy(*args):
        if failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real(*args)

    store.record_reconciled = busy  # type: ignore[method-assign]
    found = _discrepancies(3)
    reconciliation.record_in_chunks(store, "acq-a", DAY, found)
    assert failures == [0] and len(found.states()) == 3
    failures[0] = reconciliation.LOCKED_RETRIES + 1
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        reconciliation.record_in_chunks(store, "acq-a", DAY, _discrepancies(3))
    store.close()


def test_the_core_writer_reports_a_locked_file_as_python_sqlite3_does(tmp_path: Path) -> None:
    """The core's chunk write meets another connection's write lock with the sqlite3
    module's OperationalError "database is locked", which the retry above looks for."""
    store = SqliteStore(tmp_path / "q.sqlite")
    other = sqlite3.connect(tmp_path / "q.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    reconciliation_busy = store._writer  # the core's connection, busy timeout 5 s
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reconciliation_busy.record_discrepancies(_discrepancies(2), "acq-a", DAY, 0, 2, 1)
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()


def test_a_payment_commit_waits_for_one_chunk_not_the_whole_run(tmp_path: Path) -> None:
    """SQLite: the payment writer and a reconciliation write through two connections to
    one file. While 20,000 discrepancies are written, payments keep committing, and the
    longest any of them waited is a small part of the run (one chunk, not all of it)."""
    writer = SqliteStore(tmp_path / "q.sqlite")
    writer.import_subscribers(SUBSCRIBERS)
    other = writer.open_reader()
    sub = next(s for s in SUBSCRIBERS if s.account_id == "acc-pre")
    found = _discrepancies(20_000)
    done = threading.Event()
    took: list[float] = []

    def reconcile() -> None:
        try:
            began = time.perf_counter()
            reconciliation.record_in_chunks(other, "acq-a", DAY, found)
            took.append(time.perf_counter() - began)
        finally:
            done.set()

    runner = threading.Thread(target=reconcile)
    waits: list[float] = []
    runner.start()
    k = 0
    while not done.is_set():
        intent = PaymentIntent(
            f"k-{k}", "fp", sub.account_id, sub.msisdn, 100, "KES", Purpose.PREPAID_TOPUP,
            Method(MethodKind.CARD, "card"), "", "", "",
        )  # fmt: skip
        began = time.perf_counter()
        writer.commit_batch([Decision(f"pay_{k}", intent, gateway="acq-a")])
        waits.append(time.perf_counter() - began)
        k += 1
        time.sleep(0.002)  # the next batch's gateway round trip
    runner.join()
    (run_s,) = took
    assert len(waits) >= 10, f"payments committed during a {run_s:.3f} s run: {len(waits)}"
    assert max(waits) < run_s / 4, (max(waits), run_s)
    other.close()
    writer.close()


async def test_pay_keeps_its_rate_beside_clients_looping_large_reconciles(
    server: RunningServer, stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = big_report(15_000)  # about 1 MiB, 15,000 discrepancies per run
    request = pb.ReconcileRequest(gateway="acq-a", report_csv=report, business_day=DAY)
    clients = 1 + service.RECONCILE_WAITING_MAX  # all admitted: they queue, none refused
    ran_on: set[str] = set()
    real = reconciliation.run

    def spy(*args, **kwargs):
        ran_on.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(reconciliation, "run", spy)
    runs = [0]
    writer = await server.service.on_store_thread(lambda: threading.current_thread().name)

    async def start_load() -> Callable[[], Awaitable[None]]:
        stopping = asyncio.Event()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", -1)]
        )
        own = pb_grpc.SettlementStub(channel)

        async def loop() -> None:
            while not stopping.is_set():
                reply = await own.Reconcile(request)
                assert len(reply.discrepancies) == 15_000
                runs[0] += 1

        tasks = [asyncio.ensure_future(loop()) for _ in range(clients)]
        await until(lambda: server.service._reconciles == clients, "runs admitted")

        async def stop() -> None:
            stopping.set()
            await asyncio.gather(*tasks)
            await channel.close()

        return stop

    alone, beside = await rates(stub, start_load)
    assert runs[0] >= 3
    assert ran_on and writer not in ran_on and all(n.startswith("store-reconcile") for n in ran_on)
    assert beside >= RATE_KEPT_MIN * alone, (alone, beside)
