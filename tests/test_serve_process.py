"""`quickpay serve` as a real process: it starts, serves, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.store import SqliteStore

STARTUP_TIMEOUT_S = 30


async def start_server(data_dir: Path) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "serve",
        "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--fraud-mode", "observe",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    assert line.startswith(b"listening on 127.0.0.1:"), line
    return process, int(line.rsplit(b":", 1)[1])


async def test_sigterm_drains_in_flight_calls_and_exits_zero(data_dir: Path) -> None:
    process, port = await start_server(data_dir)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.SettlementStub(channel)
        one_kes = pb.Money(amount_minor=100, currency="KES")
        calls = [
            asyncio.ensure_future(stub.Pay(topup(f"drain-{n}", amount=one_kes), timeout=30))
            for n in range(300)
        ]
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert await asyncio.wait_for(process.wait(), 30) == 0

    settled = {r.idempotency_key for r in results if isinstance(r, pb.PayResponse)}
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    others = [r for r in results if not isinstance(r, pb.PayResponse | grpc.aio.AioRpcError)]
    assert not others, others
    assert settled, "calls in flight at SIGTERM must finish"
    # A call that reached a stopping server is refused (UNAVAILABLE) or cut off before
    # any work (CANCELLED); neither settles, as the store check below proves.
    refusals = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert all(r.code() in refusals for r in refused), refused[:3]

    # What was acknowledged is in the database, and nothing else is.
    store = SqliteStore(settings_for(data_dir).sqlite_path)
    try:
        stored = {
            f"drain-{n}" for n in range(300) if store.get_payment(idempotency_key=f"drain-{n}")
        }
        assert stored == settled
        subscriber = store.subscriber("acc-pre-barred")
        assert subscriber is not None
        # The bundled simulators decline a few per cent, as real acquirers do.
        paid = [r for r in results if isinstance(r, pb.PayResponse) and r.status == pb.SETTLED]
        assert subscriber.balance_minor == 100 * len(paid)
    finally:
        store.close()


async def test_server_refuses_to_start_on_a_taken_port(data_dir: Path) -> None:
    process, port = await start_server(data_dir)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quickpay_engine.cli", "serve",
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode != 0
        assert f"127.0.0.1:{port}" in stderr.decode()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


def test_the_fingerprint_key_is_made_once_whole_and_kept(tmp_path: Path) -> None:
    from quickpay_engine.server import fingerprint_key

    first = fingerprint_key(tmp_path)
    assert len(first) == 32
    assert fingerprint_key(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["fingerprint.key"]
    assert (tmp_path / "fingerprint.key").stat().st_mode & 0o777 == 0o600
