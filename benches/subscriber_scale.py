"""Subscriber scale: import time and peak memory, and serve's ready time and memory
over an empty base, for a seeded file of N subscribers (issue #24).

    .venv/bin/python benches/subscriber_scale.py 1000000
    .venv/bin/python benches/subscriber_scale.py 10000000 --work /tmp/subs10m

Steps, each a process of its own: `quickpay seed` writes the file (not timed), `quickpay
subscribers import` loads it into a fresh data dir (wall time and peak RSS, from
wait4's rusage), then `quickpay serve` starts on an empty data dir and on the loaded
one, each until its health check answers SERVING: the time from spawn to SERVING, and
the serve process's RSS then (the bundled gateway simulators are processes of their
own, not counted). The difference of the two RSS figures over N is the memory per
subscriber. tests/test_subscriber_scale.py runs the same at 200,000 in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

QUICKPAY = [sys.executable, "-m", "quickpay_engine.cli"]
READY_TIMEOUT_S = 600.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("QUICKPAY_DATA_DIR", None)
    env.pop("QUICKPAY_DATABASE_URL", None)
    return env


def run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, env=_env())


def import_file(csv: Path, data_dir: Path, replace: bool = False) -> tuple[float, int]:
    """Imports ``csv`` into ``data_dir``; returns (seconds, peak RSS bytes)."""
    args = [*QUICKPAY, "subscribers", "import", str(csv), "--data-dir", str(data_dir)]
    if replace:
        args.append("--replace")
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"import failed: {err.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def _serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def serve_ready(data_dir: Path, settle_s: float = 1.0) -> tuple[float, int]:
    """Starts serve on ``data_dir``; returns (seconds to SERVING, its RSS in bytes then,
    after ``settle_s``), and stops it."""
    port = _free_port()
    log = open(data_dir / "serve-bench.log", "w")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*QUICKPAY, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    try:
        while not _serving(port):
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited {proc.returncode}: see {log.name}")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError("serve not SERVING in time")
            time.sleep(0.05)
        ready = time.perf_counter() - started
        time.sleep(settle_s)
        return ready, _rss(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def measure(n: int, work: Path, seed: int = 7) -> dict[str, float]:
    """Every figure for ``n`` subscribers, built under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"subscribers-{n}-{seed}.csv"
    if not csv.exists():
        run([*QUICKPAY, "seed", "--subscribers", str(n), "--seed", str(seed), "--out", str(csv)])
    loaded, empty = work / "loaded", work / "empty"
    for d in (loaded, empty):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    import_s, import_peak = import_file(csv, loaded)
    reimport_s, reimport_peak = import_file(csv, loaded, replace=True)
    empty_ready, empty_rss = serve_ready(empty)
    ready, rss = serve_ready(loaded)
    return {
        "subscribers": n,
        "file_bytes": csv.stat().st_size,
        "import_s": round(import_s, 2),
        "import_peak_rss_mib": round(import_peak / 2**20, 1),
        "reimport_replace_s": round(reimport_s, 2),
        "reimport_peak_rss_mib": round(reimport_peak / 2**20, 1),
        "serve_ready_empty_s": round(empty_ready, 2),
        "serve_rss_empty_mib": round(empty_rss / 2**20, 1),
        "serve_ready_s": round(ready, 2),
        "serve_rss_mib": round(rss / 2**20, 1),
        "rss_growth_mib": round((rss - empty_rss) / 2**20, 1),
        "bytes_per_subscriber": round((rss - empty_rss) / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subscribers", type=int)
    parser.add_argument("--work", type=Path, help="where the file and data dirs go")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="subscriber-scale-"))
    print(f"load average {os.getloadavg()[0]:.2f}, work dir {work}", file=sys.stderr)
    print(json.dumps(measure(args.subscribers, work, args.seed), indent=2))


if __name__ == "__main__":
    main()
