"""Fixtures of the chaos suite: a stage per scenario (its own gateways, broker, engine,
data dir and load), one private PostgreSQL cluster for the session, and the summary
lines printed at the end of the run with the total."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaos.invariants import CHECKS, World, answer_counts, check_all, unfinished, unpublished
from chaos.procs import (
    NATS_SERVER,
    Engine,
    Load,
    NatsServer,
    PgCluster,
    pg_bin,
    quickpay,
    seed_subscribers,
)
from gateway_procs import QUIET, SimulatorSet

# QUICKPAY_FULL=1 runs every scenario at its full size (`make chaos` after export).
FULL = os.environ.get("QUICKPAY_FULL") == "1"
SUBSCRIBERS = 20_000 if FULL else 2_000
# Waiting for the engine to finish what the faults left (the recovery sweep runs every
# 5 s) and for the relay to publish: a bound on waiting, not a verdict.
SETTLE_WAIT_S = 180.0

# One line per scenario, printed after the run with the total (pytest_terminal_summary).
# Each scenario's line travels in its test report's user_properties under this name, so
# the summary sees them also when pytest-xdist ran the scenarios in a worker process.
RESULT_PROPERTY = "chaos_result"

# Where a failed scenario's logs and answers are kept (pytest keeps only its last three
# base temp dirs, so the work dir of a failure seen once is soon gone): var/chaos/ in
# the checkout unless QUICKPAY_CHAOS_OUT says.
CHAOS_OUT = Path(os.environ.get("QUICKPAY_CHAOS_OUT", Path(__file__).parents[2] / "var" / "chaos"))
# The first line of a record in serve's text log (logs.TEXT_FORMAT): time, then level.
_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ")
# The server log's lines a failure quotes at most.
EXCERPT_LINES = 60


def server_errors(log: Path | None, limit: int = EXCERPT_LINES) -> list[str]:
    """The ERROR and CRITICAL records of a serve log, each with its traceback, and the
    "--- start N" line of the life they came from; at most ``limit`` lines, the first.
    An INTERNAL answer is logged there with the exception that made it."""
    if log is None or not log.exists():
        return []
    out: list[str] = []
    life = ""
    keep = False
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("--- start "):
            life, keep = line, False
            continue
        if record := _RECORD.match(line):
            keep = record.group(1) in ("ERROR", "CRITICAL")
            if keep and life:
                out.append(life)
                life = ""
        if keep:
            out.append(line)
            if len(out) >= limit:
                out.append(f"... (more in {log})")
                break
    return out


def keep_logs(workdir: Path, name: str) -> Path:
    """Copies a failed scenario's logs and answer files (not its data) out of pytest's
    temp dir, into CHAOS_OUT/failed/NAME-TIME/; returns where."""
    kept = CHAOS_OUT / "failed" / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    for pattern in ("*.log", "*.csv", "*.json", "gateways/*.log"):
        for path in workdir.glob(pattern):
            target = kept / path.relative_to(workdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return kept


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    results = [
        tuple(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == RESULT_PROPERTY
    ]
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos")
    for name, ok, line in results:
        write(f"{'PASS' if ok else 'FAIL'} {name}: {line}")
    passed = sum(ok for _, ok, _ in results)
    write(f"chaos total: {passed} of {len(results)} scenarios passed"
          f" ({'full' if FULL else 'small'} size)")  # fmt: skip


@dataclass
class Stage:
    """One scenario's live parts."""

    name: str
    workdir: Path
    sims: SimulatorSet
    engine: Engine
    load: Load
    nats: NatsServer | None = None
    pg: PgCluster | None = None
    notes: list[str] = field(default_factory=list)
    clock: float = field(default_factory=time.monotonic)
    # The running test's user_properties: where finish() leaves the summary line.
    properties: list[tuple[str, object]] = field(default_factory=list)

    def mark(self, phase: str) -> None:
        """Prints how long the phase since the last mark took (shown with pytest -s)."""
        now = time.monotonic()
        print(f"{self.name}: {phase} took {now - self.clock:.1f} s")
        self.clock = now

    def world(self) -> World:
        return World(self.engine, dict(self.sims.urls), self.load.answers(),
                     self.nats.url if self.nats else None, self.pg)  # fmt: skip

    def wait_finished(self) -> None:
        """Waits, engine running, until no payment is left unfinished and every outbox
        event is published (what the sweep and the relay do by themselves)."""
        deadline = time.monotonic() + SETTLE_WAIT_S
        while time.monotonic() < deadline:
            try:
                left = unfinished(self.engine), unpublished(self.engine) if self.nats else 0
            except Exception:  # the database restarting: look again
                left = (-1, -1)
            if left == (0, 0):
                return
            time.sleep(0.5)
        self.notes.append(f"still unfinished or unpublished after {SETTLE_WAIT_S:g} s: {left}")

    def finish(self, problems: list[str], detail: str) -> None:
        """Stops the engine (drained), checks every invariant, records the summary line
        and fails the test on any problem."""
        if self.engine.process is not None:
            code = self.engine.stop()
            if code != 0:
                problems.append(f"serve exited {code} on SIGTERM")
        problems = problems + self.notes + check_all(self.world(), self.workdir)
        counts = answer_counts(self.world().answers)
        said = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        verdict = f"{CHECKS} invariants hold" if not problems else f"{len(problems)} problems"
        self.properties.append(
            (
                RESULT_PROPERTY,
                [
                    self.name,
                    not problems,
                    f"{sum(counts.values())} answers ({said}); {detail}; {verdict}",
                ],
            )
        )
        if problems:
            kept = keep_logs(self.workdir, self.name)
            errors = server_errors(self.engine.log_path)
            excerpt = "\n".join(errors) if errors else "(none)"
            problems = [*problems, f"logs and answers kept in {kept}",
                        f"the server's ERROR records:\n{excerpt}"]  # fmt: skip
        assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def subscribers_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_subscribers(tmp_path_factory.mktemp("chaos-subscribers"), SUBSCRIBERS)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster for the session (never the shared one on 5432)."""
    if pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    cluster = PgCluster().init()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def stage(
    tmp_path: Path, subscribers_csv: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stage]]:
    """Builds a scenario's stage: ``stage(name, databases=0|1|3, nats=True)``; the
    store is the SQLite file unless ``databases`` names PostgreSQL databases on the
    session's private cluster. Everything is stopped afterwards."""
    made: list[Stage] = []
    # What was started before a stage was whole, stopped even if building it failed.
    undo: list[Callable[[], object]] = []

    def build(name: str, databases: int = 0, nats: bool = True, data_dir: Path | None = None,
              faults: dict = QUIET) -> Stage:  # fmt: skip
        workdir = tmp_path
        sims = SimulatorSet(workdir / "gateways")
        sims.data_dir.mkdir()
        sims.start(faults=faults)
        undo.append(sims.stop)
        broker = None
        if nats:
            if not Path(NATS_SERVER).exists():
                pytest.skip("nats-server is not installed on this machine")
            broker = NatsServer(workdir / "nats").start()
            undo.append(broker.stop)
        cluster = None
        urls = None
        if databases:
            cluster = request.getfixturevalue("pg")
            stem = "chaos_" + name.replace("-", "_")
            names = [f"{stem}_billing", f"{stem}_ar", f"{stem}_prov"][:databases]
            made_urls = cluster.create(*names)
            # billing, AR, provisioning: one database for all three, or one each.
            urls = made_urls * 3 if databases == 1 else made_urls
        engine = Engine(data_dir or workdir / "engine", sims.gateways_file,
                        broker.url if broker else None, urls)  # fmt: skip
        engine.log_path = workdir / "engine.serve.log"
        engine.data_dir.mkdir(exist_ok=True)
        env = engine.command_env()
        if urls:
            done = quickpay("db", "migrate", *engine.store_flags(data_dir=False), env=env)
            assert done.returncode == 0, done.stderr
        done = quickpay(
            "subscribers", "import", str(subscribers_csv), *engine.store_flags(), env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        st = Stage(name, workdir, sims, engine, Load(workdir, subscribers_csv), broker, cluster,
                   properties=request.node.user_properties)  # fmt: skip
        made.append(st)
        return st

    yield build
    for st in made:
        for process in st.load.processes:
            process.kill()
            process.wait()
        st.engine.kill()
    for stop in reversed(undo):
        stop()
    for st in made:
        if st.pg is not None:
            # The cluster stays for the next scenario; a stopped one is started again.
            try:
                st.pg.prepared()
            except Exception:
                st.pg.start()
    shutil.rmtree(tmp_path / "nats", ignore_errors=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A small filesystem of the test's own to fill: a 32 MiB tmpfs, mounted when the
    test runs as root; skipped, saying why, where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a filesystem of the test's own: mount needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> int:
    """Writes a file into ``directory`` until the filesystem is full; returns its size."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with (directory / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk)
        except OSError:
            pass
    # The last partial chunks: down to the final free bytes.
    with (directory / "filler").open("ab", buffering=0) as f:
        for size in (65_536, 4_096, 512, 1):
            try:
                while True:
                    written += f.write(b"\0" * size)
            except OSError:
                continue
    return written
