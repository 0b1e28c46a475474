"""One owner of a data dir (DESIGN.md invariant 8): a command that writes there holds
DATA_DIR/LOCK for its whole run, a second one is refused with exit status 2 naming the
holder, the read-only commands refuse beside a writer too, and the kernel lets the lock
go when its holder dies, SIGKILL included."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.cli import main
from quickpay_engine.store.ownership import LOCK_FILE, DirLock, Holder, InUse, hold, this_process
from test_serve_process import start_server

RFC3339_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
IN_USE_HINT_PATTERN = re.escape(
    ", or send the file to it: quickpay subscribers import FILE --listen HOST:PORT"
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def refusal(data_dir: Path, pid: int, what: str = "data dir") -> str:
    """The refusal's text after "quickpay COMMAND: ", as a pattern."""
    return (
        rf"{what} {re.escape(str(data_dir))} is in use by quickpay serve \(pid {pid} on"
        rf" {re.escape(socket.gethostname())}, since {RFC3339_UTC}\); stop it first"
    )


def test_a_second_lock_is_refused_naming_the_holder_until_the_first_is_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dir" / LOCK_FILE
    first = DirLock(path, "data dir X", this_process("quickpay serve"))
    record = json.loads(path.read_text())
    assert record["command"] == "quickpay serve" and record["pid"] == os.getpid()
    assert re.fullmatch(RFC3339_UTC, record["since"]), record
    # flock belongs to the open file, so a second open in the same process conflicts.
    with pytest.raises(InUse) as refused:
        DirLock(path, "data dir X", this_process("quickpay recover"))
    assert re.fullmatch(
        rf"data dir X is in use by quickpay serve \(pid {os.getpid()} on .+, since"
        rf" {RFC3339_UTC}\); stop it first",
        str(refused.value),
    )
    assert json.loads(path.read_text())["command"] == "quickpay serve", "refused: no write"
    first.release()
    assert path.read_text() == "", "a released lock names nobody"
    DirLock(path, "data dir X", this_process("quickpay recover")).release()


def test_a_holder_without_a_readable_record_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / LOCK_FILE
    first = DirLock(path, "data dir X", this_process("quickpay serve"))
    path.write_text("not json")  # a holder between taking the lock and writing its record
    try:
        with pytest.raises(InUse, match=r"in use by another process \(no holder recorded\)"):
            DirLock(path, "data dir X", this_process("quickpay serve"))
    finally:
        first.release()
    assert Holder.decode(b"") is None and Holder.decode(b'{"pid": "x"}') is None


async def test_a_second_writer_or_reader_beside_serve_is_refused_and_serve_goes_on(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command that writes the data dir (serve, recover, subscribers import,
    reconcile) and each read-only one (verify, audit verify, wal verify, wal inspect)
    exits 2 with one line naming the running serve, and writes nothing; the serve goes on
    settling, and afterwards the log and the invariants are clean."""
    process, port = await start_server(data_dir)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2 and out == b""
        assert re.fullmatch(
            "quickpay serve: " + refusal(data_dir, process.pid) + "\n", err.decode()
        ), err

        record = (data_dir / LOCK_FILE).read_text()
        csv = data_dir / "more.csv"
        csv.write_text("account_id\n")
        report = data_dir / "report.csv"
        report.write_text("")
        flags = ["--data-dir", str(data_dir)]
        for command in (
            ["recover"],
            ["recover", "--dry-run"],
            ["subscribers", "import", str(csv)],
            ["reconcile", str(report), "--gateway", "acq-a"],
            ["verify"],
            ["audit", "verify"],
            ["wal", "verify"],
            ["wal", "inspect"],
            ["wal", "verify", "--wal-dir", str(data_dir / "ledger")],
        ):
            assert main([*command, *flags]) == 2, command
            captured = capsys.readouterr()
            assert captured.out == "", command
            name = " ".join(
                command[:2] if command[0] in ("subscribers", "audit", "wal") else command[:1]
            )
            # The import says what works beside a running server.
            hint = IN_USE_HINT_PATTERN if command[0] == "subscribers" else ""
            assert re.fullmatch(
                f"quickpay {name}: " + refusal(data_dir, process.pid) + hint + "\n", captured.err
            ), captured.err
        assert (data_dir / LOCK_FILE).read_text() == record, "the refused wrote nothing"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            one_kes = pb.Money(amount_minor=100, currency="KES")
            replies = await asyncio.gather(
                *(stub.Pay(topup(f"own-{n}", amount=one_kes), timeout=30) for n in range(20))
            )
        assert all(r.status in (pb.SETTLED, pb.DECLINED) for r in replies)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert (data_dir / LOCK_FILE).read_text() == "", "a serve that stopped names nobody"
    done = cli("wal", "verify", "--data-dir", str(data_dir), "--wal-dir", str(data_dir / "ledger"))
    assert done.returncode == 0 and "log intact" in done.stdout, done.stdout + done.stderr
    done = cli("verify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_after_sigkill_a_new_serve_starts_at_once_and_recovers(data_dir: Path) -> None:
    process, port = await start_server(data_dir)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            paid = await pb_grpc.SettlementStub(channel).Pay(topup("before-kill"), timeout=30)
        assert paid.status in (pb.SETTLED, pb.DECLINED)
    finally:
        process.kill()
        await process.wait()
    # The kernel let the lock go with the process: the next start is not refused, and
    # start_server waits for no retry, only for "listening on".
    process, port = await start_server(data_dir)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            found = await stub.GetPayment(
                pb.GetPaymentRequest(idempotency_key="before-kill"), timeout=30
            )
            assert found.payment_id == paid.payment_id
            again = await stub.Pay(topup("before-kill"), timeout=30)
            assert again.replayed and again.payment_id == paid.payment_id
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


def test_a_sqlite_file_outside_the_data_dir_is_locked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two data dirs, one --database-url sqlite file: the second writer is refused by
    the file's lock (PATH.lock beside it; the database file itself is never opened)."""
    db = tmp_path / "shared" / "billing.sqlite3"
    url = f"sqlite:///{db}"
    with hold(tmp_path / "a", db, "quickpay serve"):
        assert (tmp_path / "shared" / "billing.sqlite3.lock").exists() and not db.exists()
        csv = tmp_path / "subscribers.csv"
        csv.write_text("account_id\n")
        code = main(["subscribers", "import", str(csv), "--data-dir", str(tmp_path / "b"),
                     "--database-url", url])  # fmt: skip
        assert code == 2
        assert re.fullmatch(
            "quickpay subscribers import: "
            + refusal(db, os.getpid(), "database")
            + IN_USE_HINT_PATTERN
            + "\n",
            capsys.readouterr().err,
        )
        assert not db.exists(), "refused before the database was opened"


def test_a_reader_of_a_missing_data_dir_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent"
    assert main(["verify", "--data-dir", str(absent)]) == 2
    assert main(["wal", "inspect", "--data-dir", str(absent)]) == 2
    capsys.readouterr()
    assert not absent.exists()


def test_wal_commands_on_a_log_outside_the_data_dir_need_no_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy of a log (--wal-dir outside --data-dir) is read beside a running writer:
    the readers open it read-only and change no byte (tests/test_wal.py)."""
    with hold(tmp_path / "live", None, "quickpay serve"):
        copy = tmp_path / "copy"
        copy.mkdir()
        code = main(["wal", "verify", "--data-dir", str(tmp_path / "live"), "--wal-dir", str(copy)])
        assert code == 0, capsys.readouterr()
        assert "in use" not in capsys.readouterr().err
