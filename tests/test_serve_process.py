"""`quickpay serve` as a real process: it starts, serves, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.store import SqliteStore

STARTUP_TIMEOUT_S = 30


async def start_server(
    data_dir: Path, *flags: str, stderr: int | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "serve",
        "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--fraud-mode", "observe",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
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


async def test_server_refuses_to_start_on_a_taken_port(data_dir: Path, tmp_path: Path) -> None:
    """One line naming the address, exit status 2, and nothing left running: not grpc's
    traceback. (Another data dir: the same one would be refused for its lock first.)"""
    process, port = await start_server(data_dir)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quickpay_engine.cli", "serve",
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "other"),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2
        assert stderr.decode() == (
            f"quickpay serve: cannot listen on 127.0.0.1:{port}: the address is already in"
            " use (another process listens there)\n"
        )
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


def test_batching_flags_and_variables_set_the_batcher(monkeypatch) -> None:
    from quickpay_engine.cli import build_parser
    from quickpay_engine.commands.serve import SALE_BATCH_MAX, batching_from
    from quickpay_engine.gateways import router
    from quickpay_engine.settlement.batcher import BatchSettings

    for variable in (
        "QUICKPAY_BATCH_MAX",
        "QUICKPAY_BATCH_LINGER_MS",
        "QUICKPAY_BATCHES_IN_FLIGHT",
    ):
        monkeypatch.delenv(variable, raising=False)
    assert SALE_BATCH_MAX == router.SALE_BATCH_MAX
    args = ["serve", "--batch-max", "64", "--batch-linger-ms", "2.5", "--batches-in-flight", "3"]
    assert batching_from(build_parser().parse_args(args)) == BatchSettings(
        batch_max=64, linger_ms=2.5, inflight_max=3
    )
    monkeypatch.setenv("QUICKPAY_BATCH_MAX", "4096")
    monkeypatch.setenv("QUICKPAY_BATCHES_IN_FLIGHT", "1")
    settings = batching_from(build_parser().parse_args(["serve"]))
    assert (settings.batch_max, settings.inflight_max, settings.linger_ms) == (4096, 1, 1.0)
    assert settings.queue_max >= settings.batch_max
    assert batching_from(build_parser().parse_args(["serve", "--batch-max", "7"])).batch_max == 7


def test_batching_flags_out_of_bounds_are_refused_by_name(tmp_path: Path, capsys) -> None:
    from quickpay_engine.cli import main

    for flag, value in (
        ("--batch-max", "0"),
        ("--batch-max", "4097"),
        ("--batch-linger-ms", "-1"),
        ("--batch-linger-ms", "1001"),
        ("--batches-in-flight", "0"),
        ("--batches-in-flight", "65"),
    ):
        code = main(["serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", flag, value])
        assert code == 2
        assert f"{flag} {value}: expected" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is opened before the flags are checked"


async def test_a_server_batching_one_payment_at_a_time_settles(data_dir: Path) -> None:
    """--batch-max 1 takes effect: the server settles, and its log of batch sizes at exit
    says every batch held one payment."""
    process, port = await start_server(
        data_dir, "--batch-max", "1", "--batches-in-flight", "1", "--batch-linger-ms", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            one_kes = pb.Money(amount_minor=100, currency="KES")
            replies = await asyncio.gather(
                *(stub.Pay(topup(f"one-{n}", amount=one_kes), timeout=30) for n in range(20))
            )
        assert {r.idempotency_key for r in replies} == {f"one-{n}" for n in range(20)}
        assert all(r.status in (pb.SETTLED, pb.DECLINED) for r in replies)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        log = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    m = re.search(r"batches since start: (\d+) payments in (\d+) batches .*largest (\d+)\)", log)
    assert m, log
    items, batches, largest = map(int, m.groups())
    assert items >= 20 and batches == items and largest == 1


async def quickpay(*argv: str) -> tuple[int, str]:
    """Runs one `quickpay` command as an operator would: its exit code and output. The
    QUICKPAY_* variables are dropped, so only the flags given say where to look."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_every_offline_command_finds_what_serve_wrote(data_dir: Path) -> None:
    """serve, a few payments, SIGTERM; then each offline command, given --data-dir
    alone, finds the ledger, the database and the gateways' books serve left there."""
    process, port = await start_server(data_dir)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            one_kes = pb.Money(amount_minor=100, currency="KES")
            replies = [
                await stub.Pay(topup(f"offline-{n}", amount=one_kes), timeout=30) for n in range(5)
            ]
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert all(r.status in (pb.SETTLED, pb.DECLINED) for r in replies)
    at = ("--data-dir", str(data_dir))

    code, out = await quickpay("wal", "verify", *at)
    assert code == 0, out
    records = int(re.search(r"log intact: (\d+) records", out).group(1))  # type: ignore[union-attr]
    assert records >= 2, out  # at least each payment's hold and its end

    code, out = await quickpay("wal", "inspect", *at)
    assert code == 0, out
    assert len(out.strip().splitlines()) == 1 + records, out

    code, out = await quickpay("verify", *at)
    assert code == 0 and "all invariants hold" in out, out

    code, out = await quickpay("audit", "verify", *at)
    assert code == 0, out
    rows = int(re.search(r"audit trail intact: (\d+) rows", out).group(1))  # type: ignore[union-attr]
    assert rows >= len(replies), out

    code, out = await quickpay("recover", "--dry-run", *at)
    assert code == 0 and "recover: nothing unfinished" in out, out


async def test_what_serve_writes_is_for_its_owner_alone(data_dir: Path) -> None:
    """The data dir holds MSISDNs and payment history: serve closes it to others (0700)
    and every file it creates there, the write-ahead log included, is 0600, whatever
    the umask it was started with (here 022)."""
    os.chmod(data_dir, 0o755)
    old = os.umask(0o022)
    try:
        process, port = await start_server(data_dir)
    finally:
        os.umask(old)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            reply = await stub.Pay(topup("owner-only"), timeout=30)
            # Written either way: the bundled simulators decline a few per cent of
            # payments (their dice roll on the random payment id).
            assert reply.status in (pb.SETTLED, pb.DECLINED)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    directory, files = _modes(data_dir)
    assert directory == 0o700
    assert files and all(mode & 0o077 == 0 for mode in files.values()), files


def _modes(data_dir: Path) -> tuple[int, dict[str, int]]:
    """The data dir's mode, and those of the files serve made in it (its ledger's log
    and snapshots, its fingerprint key)."""
    made = [p for p in (data_dir / "ledger").rglob("*") if p.is_file()]
    made.append(data_dir / "fingerprint.key")
    return stat.S_IMODE(data_dir.stat().st_mode), {
        str(p): stat.S_IMODE(p.stat().st_mode) for p in made
    }
