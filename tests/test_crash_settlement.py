"""The server killed with SIGKILL at random moments under load, again and again.

A load of payments runs against a real `quickpay serve` process talking to real gateway
simulator processes; the server is killed with SIGKILL at a random moment, restarted
(its recovery runs before it serves), and the load goes on, retrying every payment that
had no answer with the same key, as a gateway node would. At the end:

- every acknowledged payment is in the store as acknowledged (invariant 5);
- every key settled at most once, and every payment captured at a gateway is settled
  in billing exactly once with that gateway's reference, and vice versa (3 and 4);
- the store's own invariants hold, nothing is left journalled or unfinished in the
  ledger, and `quickpay verify` exits 0;
- each gateway's settlement report reconciles with billing with no discrepancy (6).

The load is unary Pay calls, or PayBatch calls of BATCH payments (a kill then lands
with whole calls in flight, their payments spread over several engine batches).

Size: 20 kills over 3,000 payments here; QUICKPAY_FULL=1 (make test-full) runs 50 kills
over 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import seed_store
from gateway_procs import SimulatorSet
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.settlement import reconciliation
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.sqlite_library import sqlite_uri

FULL = os.environ.get("QUICKPAY_FULL") == "1"
PAYMENTS = 10_000 if FULL else 3_000
KILLS = 50 if FULL else 20
LINES = 300
CONCURRENCY = 48
# PayBatch: payments per call. A result FAILED with a gRPC code's name (UNAVAILABLE, ...)
# is no outcome: that payment is retried with the same key, as a gateway node would.
BATCH = 40
_GRPC_CODES = frozenset(code.name for code in grpc.StatusCode)
START_TIMEOUT_S = 60


def _lines() -> list[SubscriberRow]:
    rows = []
    for n in range(LINES):
        prepaid = n % 2 == 0
        plan = Plan.PREPAID if prepaid else Plan.POSTPAID
        status = LineStatus.BARRED if n % 5 == 0 else LineStatus.ACTIVE
        balance = 0 if prepaid else 5_000_000
        rows.append(
            SubscriberRow(
                f"acc-{n:04d}", f"+2547{n:08d}", plan, status, "KES", balance, "KE", None, 0
            )
        )
    return rows


def _request(n: int) -> pb.PayRequest:
    line = n % LINES
    prepaid = line % 2 == 0
    if n % 3 == 0:
        method = pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id=f"2547{line:08d}"))
    else:
        method = pb.PaymentMethod(
            card=pb.Card(pan="4000056655665556", expiry_month=12, expiry_year=2031)
        )
    return pb.PayRequest(
        idempotency_key=f"crash-{n}",
        account_id=f"acc-{line:04d}",
        msisdn=f"+2547{line:08d}",
        amount=pb.Money(amount_minor=100 + n % 7, currency="KES"),
        purpose=pb.PREPAID_TOPUP if prepaid else pb.BILL_PAYMENT,
        method=method,
        channel="app",
        device_id=f"dev-{line}",
        ip="192.0.2.10",
    )


def _start(data_dir: Path, gateways: Path) -> tuple[subprocess.Popen[bytes], int]:
    log = (data_dir / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--gateways", str(gateways), "--fraud-mode", "observe"],
        stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert line.startswith("listening on "), f"server did not start: {line!r}"
    return process, int(line.rsplit(":", 1)[1])


async def _load(
    port: int, todo: list[int], acked: dict[int, pb.PayResponse], stop: asyncio.Event
) -> None:
    """Sends the payments in ``todo`` until they are answered or ``stop`` is set."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SettlementStub(channel)
        queue = list(todo)

        async def worker() -> None:
            while queue and not stop.is_set():
                n = queue.pop()
                try:
                    reply = await stub.Pay(_request(n), timeout=20)
                except grpc.aio.AioRpcError:
                    queue.insert(0, n)  # no answer: retried with the same key later
                    await asyncio.sleep(0.01)
                    continue
                acked[n] = reply

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _load_batches(
    port: int, todo: list[int], acked: dict[int, pb.PayResponse], stop: asyncio.Event
) -> None:
    """``_load`` with PayBatch calls of BATCH payments."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SettlementStub(channel)
        queue = list(todo)

        async def worker() -> None:
            while queue and not stop.is_set():
                call = [queue.pop() for _ in range(min(BATCH, len(queue)))]
                request = pb.PayBatchRequest(payments=[_request(n) for n in call])
                try:
                    reply = await stub.PayBatch(request, timeout=20)
                except grpc.aio.AioRpcError:
                    queue[:0] = call  # no answer: every payment retried later
                    await asyncio.sleep(0.01)
                    continue
                for n, result in zip(call, reply.results, strict=True):
                    assert result.idempotency_key == f"crash-{n}"
                    if result.status == pb.FAILED and result.decline_reason in _GRPC_CODES:
                        queue.insert(0, n)
                    else:
                        acked[n] = result

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY // 8)))


def _report(url: str, day: dt.date) -> str:
    with urllib.request.urlopen(f"{url}/v1/reports/settlement?business_day={day}") as r:
        return r.read().decode()


def _journal_count(db: Path) -> int:
    """Payments in the store's journal (sent to a gateway, not yet finished), read
    through a read-only connection of its own; 0 before the server made its tables."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(sqlite_uri(db, "ro"), uri=True)) as read:
        try:
            return read.execute("SELECT count(*) FROM settlement_attempts").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


async def _journalled(db: Path, timeout_s: float = 30.0) -> None:
    """Returns once the store's journal holds a payment."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not _journal_count(db):
        assert asyncio.get_running_loop().time() < deadline, "no payment was journalled"
        await asyncio.sleep(0.005)


def _close(process: subprocess.Popen[bytes]) -> None:
    if process.stdout is not None:
        process.stdout.close()


@pytest.mark.parametrize("rpc", ["unary", "batch"])
async def test_sigkill_at_random_moments_loses_nothing_and_settles_once(
    tmp_path: Path, rpc: str
) -> None:
    rng = random.Random(20261125)
    send = _load_batches if rpc == "batch" else _load
    (tmp_path / "gw").mkdir()
    quiet = {"seed": 5, "latency_ms_median": 2, "latency_ms_p99": 15}
    sims = SimulatorSet(tmp_path / "gw").start(faults=quiet)
    data_dir = tmp_path / "engine"
    seed_store(data_dir, _lines())
    acked: dict[int, pb.PayResponse] = {}
    first_day = dt.datetime.now(dt.UTC).date()
    try:
        # One kill is sure to land mid-flight, however fast the engine is: the gateways
        # hold every sale for 3 s, and the engine dies once a payment is journalled
        # (on its way to a gateway, no answer yet). Recovery has it to finish.
        for name in sims.urls:
            sims.set_faults(name, {**quiet, "latency_ms_median": 3000, "latency_ms_p99": 3000})
        process, port = _start(data_dir, sims.gateways_file)
        stop = asyncio.Event()
        load = asyncio.ensure_future(send(port, list(range(PAYMENTS)), acked, stop))
        await _journalled(data_dir / "quickpay.sqlite3")
        process.send_signal(signal.SIGKILL)
        process.wait()
        stop.set()
        await load
        _close(process)
        for name in sims.urls:
            sims.set_faults(name, quiet)
        # Then kills at random moments.
        for _ in range(KILLS):
            process, port = _start(data_dir, sims.gateways_file)
            todo = [n for n in range(PAYMENTS) if n not in acked]
            stop = asyncio.Event()
            load = asyncio.ensure_future(send(port, todo, acked, stop))
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            stop.set()
            await load
            _close(process)
        # The last run: everything answered, then a clean stop.
        process, port = _start(data_dir, sims.gateways_file)
        while len(acked) < PAYMENTS:
            todo = [n for n in range(PAYMENTS) if n not in acked]
            await send(port, todo, acked, asyncio.Event())
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        _close(process)
        # Every UTC business day the run touched: a run across midnight has its
        # payments in two reports, each reconciled against that day's billing.
        days = [first_day]
        while days[-1] < dt.datetime.now(dt.UTC).date():
            days.append(days[-1] + dt.timedelta(days=1))
        reports = {
            (name, day): _report(url, day) for name, url in sims.urls.items() for day in days
        }
    finally:
        sims.stop()

    # Invariant 5: what was acknowledged is stored as acknowledged.
    store = SqliteStore(data_dir / "quickpay.sqlite3")
    try:
        for n, reply in acked.items():
            record = store.get_payment(idempotency_key=f"crash-{n}")
            assert record is not None, f"acknowledged payment crash-{n} lost"
            assert record.outcome.payment_id == reply.payment_id
            assert int(record.outcome.status) == reply.status
        assert store.verify() == []
        assert store.attempts() == {}
        settled = {
            p: (g, r)
            for p, g, r in store._db.execute(
                "SELECT payment_id, gateway, gateway_reference FROM payments WHERE status = 1"
            )
        }
    finally:
        store.close()
    assert len(settled) >= PAYMENTS * 0.99  # quiet gateways: (nearly) all settle

    # Invariants 3 and 4 against the gateways' own books.
    captured: dict[str, list[tuple[str, str]]] = {}
    for name in sims.urls:
        books = tmp_path / "gw" / "sims" / "gateways" / name / "ledger.sqlite3"
        with sqlite3.connect(books) as db:
            for ref, gref in db.execute(
                "SELECT merchant_reference, gateway_reference FROM payments"
                " WHERE state = 'CAPTURED'"
            ):
                captured.setdefault(ref, []).append((name, gref))
    assert all(len(v) == 1 for v in captured.values()), "a payment captured twice"
    assert {p: v[0] for p, v in captured.items()} == settled

    # Invariant 6: each gateway's own settlement report reconciles with billing, with
    # nothing unexplained, after all those crashes.
    store = SqliteStore(data_dir / "quickpay.sqlite3")
    try:
        matched = 0
        for (name, day), text in reports.items():
            if text.count("\n") <= 1:
                continue  # no capture at this gateway that day
            outcome = reconciliation.run(
                store, name, io.StringIO(text, newline=""), business_day=day
            )
            found = outcome.result.discrepancies
            assert found == [], (name, day, found[:5])
            matched += outcome.result.matched
        assert matched > 0
    finally:
        store.close()

    # The kills did land mid-flight: recovery had payments to finish.
    recovered = (data_dir / "serve.log").read_text().count("recovery: pay_")
    assert recovered > 0

    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quickpay_engine.cli", "verify", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout
