"""One engine per PostgreSQL database (DESIGN.md invariant 8): the ownership advisory
lock (store/pg_owner.py), a second engine refused at start naming the holder, the fence
that settles nothing on a lock that may be gone, and an engine that goes on by itself
once its restarted database is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from conftest import GATEWAYS_VAR, seed_store, topup
from pg_support import create_database, drop_database, require
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.cli import main
from quickpay_engine.errors import NotOwner
from quickpay_engine.store.ownership import InUse
from quickpay_engine.store.pg_migrations import migrate
from quickpay_engine.store.pg_owner import NAMESPACE, PgOwner, lock_key
from quickpay_engine.store.postgres import PostgresStore
from test_twophase import settle

STARTUP_TIMEOUT_S = 60
RFC3339_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def url() -> Iterator[str]:
    require()
    made = create_database()
    try:
        yield made
    finally:
        drop_database(made)


def test_the_key_is_the_namespace_and_the_partition() -> None:
    assert lock_key() == (NAMESPACE, 0) and lock_key(7) == (NAMESPACE, 7)
    with pytest.raises(ValueError):
        lock_key(-1)


def test_a_second_owner_is_refused_naming_the_holder(url: str) -> None:
    first = PgOwner([url, url], "quickpay serve")
    first.acquire()
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                # This database's lock only: pg_locks shows the whole cluster's, and a
                # test in another worker may hold the same key in its own database.
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = 0"
                " AND l.objsubid = 2"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (NAMESPACE,),
            ).fetchall()
        assert row == [(first.application_name,)], "one session, one lock, named"
        second = PgOwner([url], "quickpay serve")
        with pytest.raises(InUse) as refused:
            second.acquire()
        assert re.fullmatch(
            rf"database \w+ on 127\.0\.0\.1:\d+ is in use by quickpay serve pid {os.getpid()}"
            rf" on {re.escape(socket.gethostname())} \(client 127\.0\.0\.1, backend pid \d+,"
            rf" since {RFC3339_UTC}\); stop it first",
            str(refused.value),
        ), str(refused.value)
        assert not second.held
    finally:
        first.close()
    second.acquire()
    second.close()


def test_a_write_proves_the_lock_in_its_own_transaction(url: str, tmp_path: Path) -> None:
    """The session holding the lock ends (a restart, a failover); before the watcher has
    noticed, a batch commit finds the lock gone inside its transaction and writes
    nothing. Another engine takes the lock; this one's retake is refused."""
    seed_store(tmp_path, database_urls=[url] * 3)
    owner = PgOwner([url], "quickpay serve")
    owner.acquire()
    store = PostgresStore(url, b"o" * 32)
    store.fence = owner.prove
    try:
        outcomes, _ = store.commit_batch([settle("owned-1", 100)])
        assert [o.status.name for o in outcomes] == ["SETTLED"]
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (owner.application_name,),
            )
            # pg_terminate_backend only signals: the lock goes when the backend has ended.
            deadline = time.monotonic() + 30
            while admin.execute(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s::oid AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database()))",
                (NAMESPACE,),
            ).fetchone() == (True,):
                assert time.monotonic() < deadline, "the terminated session kept its lock"
                time.sleep(0.02)
        assert owner.held, "no watcher here: only the proof can tell"
        with pytest.raises(NotOwner, match="ownership lock is gone"):
            store.commit_batch([settle("owned-2", 100)])
        assert store.find_by_keys(["owned-1", "owned-2"]).keys() == {"owned-1"}
        other = PgOwner([url], "quickpay serve")
        other.acquire()
        try:
            owner.close()
            with pytest.raises(InUse):
                owner.acquire()
            with pytest.raises(NotOwner, match="does not hold"):
                owner.check()
        finally:
            other.close()
    finally:
        store.close()
        owner.close()


async def start_serve(data_dir: Path, *flags: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir), "--fraud-mode", "observe",
        "--gateways", os.environ[GATEWAYS_VAR], *flags,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    assert line.startswith(b"listening on 127.0.0.1:"), line
    return process, int(line.rsplit(b":", 1)[1])


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 60) == 0


async def test_two_serves_on_one_database_the_second_is_refused(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two data dirs, one database: the second serve exits 2 with one line naming the
    first as pg_stat_activity shows it; so do subscribers import and db migrate."""
    seed_store(tmp_path / "a", database_urls=[url] * 3)
    first, _ = await start_serve(tmp_path / "a", "--database-url", url)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(tmp_path / "b"), "--database-url", url,
            "--gateways", os.environ[GATEWAYS_VAR],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), STARTUP_TIMEOUT_S)
        assert second.returncode == 2 and out == b""
        holder = (
            rf"database \w+ on 127\.0\.0\.1:\d+ is in use by quickpay serve pid {first.pid} on"
            rf" {re.escape(socket.gethostname())} \(client 127\.0\.0\.1, backend pid \d+,"
            rf" since {RFC3339_UTC}\); stop it first"
        )
        assert re.fullmatch(rf"quickpay serve: {holder}\n", err.decode()), err
        csv = tmp_path / "subscribers.csv"
        csv.write_text(
            "account_id,msisdn,plan,status,currency,balance_minor,country,sim_swapped_at,"
            "created_at\nacc-x,+254700000999,PREPAID,ACTIVE,KES,0,KE,,2026-01-01T00:00:00Z\n"
        )
        # db migrate has no data dir: it works on the databases alone.
        # The import says what works beside a running server.
        hint = re.escape(", or send the file to it: quickpay subscribers import FILE --listen")
        for command, name, after in (
            (["subscribers", "import", str(csv), "--data-dir", str(tmp_path / "c")],
             "subscribers import", hint + " HOST:PORT"),
            (["db", "migrate"], "db migrate", ""),
        ):  # fmt: skip
            assert main([*command, "--database-url", url]) == 2
            captured = capsys.readouterr()
            assert re.fullmatch(rf"quickpay {name}: {holder}{after}\n", captured.err), captured.err
    finally:
        await stop(first)


# -- a private PostgreSQL cluster, restarted under load -----------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster of the test's own (initdb into a temporary directory, on a
    free loopback port), so the test may stop and start it. PostgreSQL refuses to run as
    root: as root it runs as the ``postgres`` user."""

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self._bin = bin_dir
        self._as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="qp-cluster-"))
        if os.geteuid() == 0:
            try:
                import pwd

                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root)
                pytest.skip("running as root and there is no postgres user to run PostgreSQL")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self._run("initdb", "-D", str(self.root / "data"), "-U", "quickpay", "--auth=trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        with (self.root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
            )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / tool), *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def url(self, dbname: str) -> str:
        return f"postgresql://quickpay@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        made.remove()


async def _until(predicate, timeout_s: float, what: str) -> None:
    """Polls ``predicate`` (a coroutine function) every 50 ms for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
        await asyncio.sleep(0.05)


async def test_a_restarted_database_fences_the_engine_until_it_owns_it_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Under load, the database holding the lock stops: payments answer UNAVAILABLE while
    it is down. It starts again: the engine retakes the lock by itself and settles, with
    no restart. Every payment acknowledged is in the database, and a retry of a refused
    one with the same key settles it."""
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE qp")
    url = cluster.url("qp")
    migrate(url)
    seed_store(tmp_path, database_urls=[url] * 3)
    process, port = await start_serve(tmp_path, "--database-url", url)
    replies: dict[str, pb.PayResponse] = {}
    refused: dict[str, grpc.StatusCode] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            one_kes = pb.Money(amount_minor=100, currency="KES")
            sent = 0

            async def pay() -> pb.PayResponse | grpc.StatusCode:
                nonlocal sent
                sent += 1
                key = f"restart-{sent}"
                try:
                    reply = await stub.Pay(topup(key, amount=one_kes), timeout=30)
                except grpc.aio.AioRpcError as err:
                    refused[key] = err.code()
                    return err.code()
                replies[key] = reply
                return reply

            async def load(stop_event: asyncio.Event) -> None:
                # Bounded: at most 5,000 payments, 4 at a time, a round every 10 ms at
                # most (refusals come back at once).
                while not stop_event.is_set() and sent < 5_000:
                    await asyncio.gather(*(pay() for _ in range(4)), asyncio.sleep(0.01))

            stop_load = asyncio.Event()
            loader = asyncio.create_task(load(stop_load))

            async def settled_some() -> bool:
                return sum(r.status == pb.SETTLED for r in replies.values()) >= 20

            await _until(settled_some, 60, "20 payments settled before the restart")
            await asyncio.to_thread(cluster.stop)

            async def answers_unavailable() -> bool:
                return await pay() == grpc.StatusCode.UNAVAILABLE

            await _until(answers_unavailable, 60, "UNAVAILABLE while the database is down")
            await asyncio.to_thread(cluster.start)

            async def settles_again() -> bool:
                reply = await pay()
                return isinstance(reply, pb.PayResponse) and reply.status == pb.SETTLED

            await _until(settles_again, 60, "payments settling again once the database is back")
            stop_load.set()
            await loader
            unavailable = [k for k, c in refused.items() if c == grpc.StatusCode.UNAVAILABLE]
            assert unavailable
            for key in unavailable[:20]:  # the same key again: one outcome, no double charge
                retry = await stub.Pay(topup(key, amount=one_kes), timeout=30)
                assert retry.status in (pb.SETTLED, pb.DECLINED, pb.FAILED), retry
                replies[key] = retry
    finally:
        await stop(process)
    acknowledged = {k: r for k, r in replies.items() if r.status == pb.SETTLED}
    store = PostgresStore(url)
    try:
        stored = store.find_by_keys(list(acknowledged))
    finally:
        store.close()
    lost = sorted(set(acknowledged) - set(stored))
    assert not lost, f"acknowledged but not in the database: {lost[:5]}"
    assert all(stored[k].outcome.payment_id == r.payment_id for k, r in acknowledged.items())
