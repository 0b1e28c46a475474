"""The live parts a chaos scenario runs and breaks: a private PostgreSQL cluster, a private
nats-server with JetStream, the engine (`quickpay serve`) and the load (`quickpay bench`),
each a real process on loopback, plus a small filesystem to fill.

Nothing here touches the shared PostgreSQL on 5432 or the shared NATS on 4222: every
server is started by the scenario on a free port with its own files, so it may be
killed (`pg_ctl stop -m immediate`, SIGKILL) without disturbing anyone else.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# How long a server gets to start or stop before the scenario gives up on it. These are
# bounds on waiting for a process, never verdicts: a slow machine only waits longer.
START_S = 60.0
STOP_S = 60.0

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {START_S:g} s")


def quickpay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs one `quickpay` command to its end and returns what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


# --- PostgreSQL -----------------------------------------------------------------------


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PgCluster:
    """A private PostgreSQL cluster in a directory of its own, on a free port.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    ``postgres`` user and its commands run as that user (runuser). ``fsync`` is off: the
    faults here end server processes, never the machine, so the page cache survives them
    and the cluster's crash recovery is exercised all the same, without loading the
    shared disk.
    """

    def __init__(self) -> None:
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="quickpay-chaos-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=STOP_S)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def init(self) -> PgCluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "quickpay",
                  "--auth=trust", "--no-sync", "-E", "UTF8")  # fmt: skip
        settings = {
            "port": self.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_prepared_transactions": 64,
            "max_connections": 100,
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start()
        return self

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", str(int(START_S)), "start")  # fmt: skip

    def stop_immediate(self) -> None:
        """Every server process ends at once, as in a crash: no checkpoint, no goodbye to
        the clients; the next start replays the server's own write-ahead log."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, dbname: str) -> str:
        return f"postgresql://quickpay@127.0.0.1:{self.port}/{dbname}"

    def create(self, *names: str) -> list[str]:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {name}")
        return [self.url(n) for n in names]

    def prepared(self) -> list[tuple[str, str]]:
        """(database, gid) of every prepared transaction on the cluster."""
        with psycopg.connect(self.url("postgres")) as conn:
            return conn.execute("SELECT database, gid FROM pg_prepared_xacts").fetchall()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop_immediate()
        shutil.rmtree(self.root, ignore_errors=True)


# --- NATS -----------------------------------------------------------------------------


class NatsServer:
    """A private nats-server with JetStream, restartable on the same port and store."""

    def __init__(self, store_dir: Path) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.process = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.process, "nats-server")
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes with whatever it had not written."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(STOP_S)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


# --- the engine -----------------------------------------------------------------------


@dataclass
class Engine:
    """`quickpay serve` as a child process with its settings as flags."""

    data_dir: Path
    gateways: Path
    nats_url: str | None = None
    database_urls: list[str] | None = None  # billing, AR, provisioning
    env: dict[str, str] = field(default_factory=dict)
    # The server's log; beside the data dir unless said (a data dir on a disk the test
    # fills would lose the log of what happened).
    log_path: Path | None = None
    process: subprocess.Popen[str] | None = None
    port: int = 0
    starts: int = 0

    def store_flags(self, data_dir: bool = True) -> list[str]:
        """--data-dir and the database flags, for serve and the offline commands."""
        flags = ["--data-dir", str(self.data_dir)] if data_dir else []
        if self.database_urls:
            billing, ar, provisioning = self.database_urls
            flags += ["--database-url", billing, "--billing-url", billing, "--ar-url", ar,
                      "--provisioning-url", provisioning]  # fmt: skip
        return flags

    def command_env(self) -> dict[str, str]:
        """The environment of every quickpay command: no QUICKPAY_* from the caller."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
        return env

    def start(self, extra_env: dict[str, str] | None = None) -> int:
        """Starts serve and returns its port once it listens (after its recovery)."""
        assert self.process is None, "already running"
        args = [sys.executable, "-m", "quickpay_engine.cli", "serve", *self.store_flags(),
                "--listen", "127.0.0.1:0", "--gateways", str(self.gateways),
                "--fraud-mode", "observe"]  # fmt: skip
        if self.nats_url:
            args += ["--nats-url", self.nats_url]
        env = {**self.command_env(), **self.env, **(extra_env or {})}
        if self.log_path is None:
            self.log_path = self.data_dir.parent / f"{self.data_dir.name}.serve.log"
        log = self.log_path.open("a")
        self.starts += 1
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.wait(STOP_S)
            self._reap()
            raise RuntimeError(f"serve did not start: {line!r}; see {self.log_path}")
        self.port = int(line.rsplit(":", 1)[1])
        return self.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_dead(self) -> int:
        """Waits for the engine to end by itself (a fault hook killed it)."""
        assert self.process is not None
        code = self.process.wait(START_S)
        self._reap()
        return code

    def kill(self) -> None:
        """SIGKILL, as a power cut."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(STOP_S)
            self._reap()

    def stop(self) -> int:
        """SIGTERM: drains, flushes the event relay, exits 0."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reap()
        return code

    def _reap(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


# --- the load -------------------------------------------------------------------------

RPCS = ("unary", "stream", "batch")


@dataclass
class Load:
    """Pay, PayStream and PayBatch at once: one `quickpay bench` process per RPC, each
    writing every answer it got (bench --answers)."""

    workdir: Path
    subscribers: Path
    concurrency: int = 16
    batch_size: int = 20
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    runs: int = 0

    def start(self, target: str, duration_s: float, rpcs: tuple[str, ...] = RPCS,
              rate_per_s: float | None = None) -> None:  # fmt: skip
        """Starts the load against ``target`` for ``duration_s`` seconds. With
        ``rate_per_s``, an open loop at that total rate instead of closed-loop callers."""
        self.runs += 1
        for rpc in rpcs:
            name = f"load{self.runs}-{rpc}"
            args = [sys.executable, "-m", "quickpay_engine.cli", "bench", "--target", target,
                    "--rpc", rpc, "--duration", f"{duration_s:g}", "--subscribers",
                    str(self.subscribers), "--no-progress", "--timeout", "20",
                    "--duplicate-share", "0.05", "--seed", str(self.runs * 10 + RPCS.index(rpc)),
                    "--answers", str(self.workdir / f"{name}.csv"),
                    "--json", str(self.workdir / f"{name}.json")]  # fmt: skip
            if rate_per_s is not None:
                args += ["--rate", f"{rate_per_s / len(rpcs):g}"]
            else:
                args += ["--concurrency", str(self.concurrency)]
            if rpc == "batch":
                args += ["--batch-size", str(self.batch_size)]
            with (self.workdir / f"{name}.log").open("w") as log:
                self.processes.append(
                    subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
                )

    def wait(self) -> None:
        """Waits for every bench process; one that could not run at all is an error
        (exit 2, or no answers file), one that met errors is expected here (exit 1)."""
        for process in self.processes:
            code = process.wait(START_S * 10)
            if code not in (0, 1):
                raise RuntimeError(f"bench {process.args[6]} exited {code}; see {self.workdir}")
        self.processes.clear()

    def answers(self, run: int | None = None) -> list[dict[str, str]]:
        """Every answer of every run so far (or of run number ``run``), as rows of bench
        --answers."""
        rows: list[dict[str, str]] = []
        for path in sorted(self.workdir.glob(f"load{run or '*'}-*.csv")):
            with path.open(newline="") as f:
                rows += [{**r, "rpc": path.stem.split("-")[1]} for r in csv.DictReader(f)]
        return rows


def seed_subscribers(workdir: Path, count: int) -> Path:
    """A CSV of synthetic subscribers (quickpay seed), the same for every scenario."""
    path = workdir / "subscribers.csv"
    done = quickpay("seed", "--subscribers", str(count), "--seed", "19", "--out", str(path))
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return path


def json_of(path: Path) -> dict:
    return json.loads(path.read_text())
