"""`quickpay subscribers import FILE --listen`: the file is read and sent a chunk at a
time (issue #24), never parsed whole before the first change goes out. A fake server
takes the stream; the file is a named pipe the test writes, so the import can only see
its end once the test says so."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from quickpay_engine import subscribers as subscribers_module
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.cli import main
from quickpay_engine.subscribers import generate, to_csv_text

WAIT_S = 30.0


class FakeServer(pb_grpc.SettlementServicer):
    """Takes an UpsertSubscribers stream and counts every change applied."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.first = threading.Event()

    def UpsertSubscribers(self, request_iterator, context):  # type: ignore[no-untyped-def]
        for change in request_iterator:
            self.received.append(change.account_id)
            self.first.set()
        n = len(self.received)
        return pb.UpsertSummary(received=n, applied=n, created=n, batches=1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeServer, int]]:
    for name in ("QUICKPAY_TOKEN", "QUICKPAY_DATA_DIR", "QUICKPAY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    # Chunks of 10 rows, so a few lines make several chunks.
    monkeypatch.setattr(subscribers_module, "FILE_CHUNK_ROWS", 10)
    servicer = FakeServer()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SettlementServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(None)


def _pipe_writer(
    path: Path, head: list[str], rest: list[str], server: FakeServer, early: list[bool]
) -> threading.Thread:
    """Writes ``head`` into the pipe now, then, on a thread, waits for the server's first
    change, writes ``rest`` and closes it; ``early`` gets whether the first change came
    before. Opened read-write, so neither side waits for the other to open it (both
    parts fit in the pipe's buffer)."""
    pipe = os.open(path, os.O_RDWR)
    os.write(pipe, "".join(head).encode())

    def write() -> None:
        try:
            early.append(server.first.wait(WAIT_S))
            os.write(pipe, "".join(rest).encode())
        finally:
            os.close(pipe)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_the_first_changes_reach_the_server_before_the_file_ends(
    fake: tuple[FakeServer, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, port = fake
    rows = list(generate(100, seed=2403))
    lines = to_csv_text(rows).splitlines(keepends=True)
    pipe = tmp_path / "export.csv"
    os.mkfifo(pipe)
    early: list[bool] = []
    # The header and 30 rows (three chunks); the rest only once the server has a change.
    writer = _pipe_writer(pipe, lines[:31], lines[31:], server, early)
    listen = f"127.0.0.1:{port}"
    code = main(["subscribers", "import", str(pipe), "--listen", listen, "--change-version", "7"])
    writer.join(WAIT_S)
    assert early == [True], "the import read the whole file before sending"
    assert code == 0, capsys.readouterr().err
    assert server.received == [r.account_id for r in rows]
    assert "sent 100 subscribers" in capsys.readouterr().out


def test_a_bad_line_ends_the_stream_before_it(
    fake: tuple[FakeServer, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lines before the bad one are sent (the server commits them, batch by batch);
    none from it on; the import fails naming the line and what went."""
    server, port = fake
    rows = list(generate(40, seed=2404))
    lines = to_csv_text(rows).splitlines(keepends=True)
    lines[26] = lines[26].replace("PREPAID", "PREPAYED").replace("POSTPAID", "PREPAYED")
    csv = tmp_path / "bad.csv"
    csv.write_text("".join(lines))
    listen = f"127.0.0.1:{port}"
    code = main(["subscribers", "import", str(csv), "--listen", listen, "--change-version", "7"])
    err = capsys.readouterr().err
    assert code == 1
    assert server.received == [r.account_id for r in rows[:25]]
    assert f"{csv}: line 27: plan 'PREPAYED': must be PREPAID or POSTPAID" in err, err
    assert "none from it on was sent" in err and "the 25 subscribers before it" in err, err


def test_a_bad_header_sends_nothing(
    fake: tuple[FakeServer, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, port = fake
    csv = tmp_path / "header.csv"
    csv.write_text("account_id,msisdn\n")
    listen = f"127.0.0.1:{port}"
    assert main(["subscribers", "import", str(csv), "--listen", listen]) == 1
    assert server.received == []
    assert "line 1: header must name" in capsys.readouterr().err


# A thread that opens a subscriber file which is a named pipe waits in open(2) until a
# writer comes. Run as a process of its own, so that a wait with the GIL held (every
# other thread stopped, this one's writer among them) is a timeout here, not a hang.
_OPEN_WITHOUT_THE_GIL = """
import os, sys, threading
from quickpay_engine._engine import SubscriberFile
from quickpay_engine.subscribers import COLUMNS

path, syscall = sys.argv[1], sys.argv[2]
opener = {}
def open_it():
    opener["tid"] = threading.get_native_id()
    opener["file"] = SubscriberFile.open(path)
thread = threading.Thread(target=open_it, daemon=True)
thread.start()
# Until the opener waits in open(2) for the pipe's writer: this loop (and the writer
# below) runs only if the opener let go of the GIL for the wait.
while True:
    tid = opener.get("tid")
    if tid is not None:
        with open(f"/proc/self/task/{tid}/syscall") as state:
            if state.read().split(" ", 1)[0] == syscall:
                break
with open(path, "w") as writer:
    writer.write(",".join(COLUMNS) + "\\n")
thread.join()
print("opened", opener["file"].read(10))
"""

# openat(2)'s number, the call a Rust File::open makes.
_OPENAT = {"x86_64": "257", "aarch64": "56"}


def test_opening_a_file_lets_the_other_threads_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    machine = os.uname().machine
    if machine not in _OPENAT:
        pytest.skip(f"openat's number on {machine} is not listed")
    fifo = tmp_path / "subscribers.csv"
    os.mkfifo(fifo)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_WITHOUT_THE_GIL, str(fifo), _OPENAT[machine]],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("SubscriberFile.open held the GIL while it waited for the file")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "opened []\n"
