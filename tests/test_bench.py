"""`quickpay bench` at tiny sizes against the real server: the report's structure and
counts, never its timings; the scenario's shares; the open loop's latency reference;
and a smoke run of every micro-benchmark in benches/ so none of them can rot."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from conftest import SUBSCRIBERS
from quickpay_engine import cli
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.bench.echo import create_echo_server
from quickpay_engine.bench.histogram import Latency
from quickpay_engine.bench.load import (
    GRPC_WRITE_FAILED,
    Answer,
    LoadPlan,
    StreamSender,
    Tally,
    Worker,
    call_sizes,
    stream_error_answer,
)
from quickpay_engine.bench.report import rates, table, to_json
from quickpay_engine.bench.runner import Timeline, split, worker_plans
from quickpay_engine.bench.scenario import KINDS, Mix, RequestSource, subscriber_pan
from quickpay_engine.server import RunningServer
from quickpay_engine.subscribers import write_csv

ROOT = Path(__file__).resolve().parent.parent
REPORT_KEYS = {
    "schema_version", "plan", "processes", "mix", "client", "sent", "warmup", "kinds",
    "statuses", "declines", "errors", "replayed", "fraud_decisions", "elapsed_s",
    "throughput_per_s", "settled_per_s", "latency_ms", "service_ms", "answered_ms", "timeline",
}  # fmt: skip
PERCENTILES = {"p50", "p90", "p99", "p99.9", "max"}


@pytest.fixture
def csv_file(data_dir: Path) -> Path:
    path = data_dir / "subscribers.csv"
    with path.open("w", newline="") as out:
        write_csv(SUBSCRIBERS, out)
    return path


async def bench(data_dir: Path, target: str, *flags: str) -> tuple[int, dict]:
    """Runs `quickpay bench` (in a thread: it runs its own event loop) and its JSON."""
    out = data_dir / f"report-{time.monotonic_ns()}.json"
    argv = ["bench", "--data-dir", str(data_dir), "--target", target, "--no-progress"]
    code = await asyncio.to_thread(cli.main, [*argv, "--json", str(out), *flags])
    return code, json.loads(out.read_text()) if out.exists() else {}


def assert_counts_add_up(report: dict, sent: int) -> None:
    assert set(report) >= REPORT_KEYS
    assert report["sent"] == sent
    assert sum(report["kinds"].values()) == sent
    assert sum(report["statuses"].values()) + sum(report["errors"].values()) == sent
    assert set(report["latency_ms"]) == PERCENTILES
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert report["timeline"], "at least one tick"
    assert sum(p["rate_per_s"] > 0 for p in report["timeline"]) >= 1
    # The two rates over the same window: every answer, and the SETTLED ones alone.
    elapsed = report["elapsed_s"]
    assert report["throughput_per_s"] == pytest.approx(sent / elapsed)
    assert report["settled_per_s"] == pytest.approx(report["statuses"].get("SETTLED", 0) / elapsed)


async def test_closed_loop_report_counts_every_request_once(
    server: RunningServer, data_dir: Path, csv_file: Path
) -> None:
    png = data_dir / "run.png"
    code, report = await bench(
        data_dir, f"127.0.0.1:{server.port}", "--count", "60", "--concurrency", "4",
        "--invalid-share", "0.2", "--declined-share", "0.2", "--plot", str(png),
    )  # fmt: skip
    assert code == 0
    assert_counts_add_up(report, 60)
    # Every malformed request is refused with its code; every wrong-line one declined.
    assert report["errors"] == {"INVALID_ARGUMENT": report["kinds"]["invalid"]}
    assert report["statuses"]["DECLINED"] == report["kinds"]["declined"] > 0, report["declines"]
    assert report["declines"] == {"MSISDN_MISMATCH": report["kinds"]["declined"]}
    assert report["statuses"]["SETTLED"] == report["kinds"]["good"] > 0
    assert report["replayed"] == 0
    # Declines and refusals are answers, not settlements.
    assert 0 < report["settled_per_s"] < report["throughput_per_s"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the report says settled is in the store.
    stored = server.store._db.execute("SELECT count(*) FROM payments WHERE status = 1")
    assert stored.fetchone()[0] == report["statuses"]["SETTLED"]


async def test_duplicates_are_replayed_not_settled_twice(
    server: RunningServer, data_dir: Path, csv_file: Path
) -> None:
    code, report = await bench(
        data_dir, f"127.0.0.1:{server.port}", "--count", "80", "--concurrency", "2",
        "--duplicate-share", "0.4", "--invalid-share", "0", "--declined-share", "0",
    )  # fmt: skip
    assert code == 0
    assert_counts_add_up(report, 80)
    dups = report["kinds"]["duplicate"]
    assert dups > 0
    assert report["replayed"] == dups, "every retry comes back as the stored outcome"
    stored = server.store._db.execute("SELECT count(*) FROM payments").fetchone()[0]
    assert stored == 80 - dups, report


async def test_open_loop_stream_in_two_processes_merges_their_counts(
    server: RunningServer, data_dir: Path, csv_file: Path
) -> None:
    code, report = await bench(
        data_dir, f"127.0.0.1:{server.port}", "--rpc", "stream", "--rate", "200",
        "--arrival", "poisson", "--count", "50", "--processes", "2", "--concurrency", "2",
        "--warmup", "0.1", "--interval", "0.2",
    )  # fmt: skip
    assert code == 0
    assert_counts_add_up(report, 50)
    assert report["processes"] == 2
    assert report["plan"]["rpc"] == "stream"
    assert report["warmup"] > 0, "the warm-up was sent and left out"
    assert report["errors"].keys() <= {"INVALID_ARGUMENT"}
    assert set(report["service_ms"]) == PERCENTILES


async def test_batch_rpc_sends_paybatch_calls_and_counts_each_payment(
    server: RunningServer, data_dir: Path, csv_file: Path
) -> None:
    """PayBatch calls of 8: every payment counted once, with its own outcome (a malformed
    one an INVALID_ARGUMENT error, a wrong line a decline), as in the unary report; the
    answers file keeps what each error said (its detail names the field)."""
    answers = data_dir / "answers.csv"
    code, report = await bench(
        data_dir, f"127.0.0.1:{server.port}", "--rpc", "batch", "--batch-size", "8",
        "--count", "64", "--concurrency", "16", "--invalid-share", "0.2",
        "--declined-share", "0.2", "--answers", str(answers),
    )  # fmt: skip
    with answers.open(newline="") as f:
        rows = list(csv.DictReader(f))
    invalid = [r for r in rows if r["error"] == "INVALID_ARGUMENT"]
    assert len(invalid) == report["kinds"]["invalid"] > 0
    assert all(r["detail"] and ":" in r["detail"] for r in invalid), invalid
    assert all(not r["detail"] for r in rows if r["status"] == "SETTLED")
    assert code == 0
    assert_counts_add_up(report, 64)
    assert report["plan"]["rpc"] == "batch" and report["plan"]["batch_size"] == 8
    assert report["errors"] == {"INVALID_ARGUMENT": report["kinds"]["invalid"]}
    assert report["statuses"]["DECLINED"] == report["kinds"]["declined"] > 0
    assert report["statuses"]["SETTLED"] == report["kinds"]["good"] > 0
    stored = server.store._db.execute("SELECT count(*) FROM payments WHERE status = 1")
    assert stored.fetchone()[0] == report["statuses"]["SETTLED"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--count", "0"],
        ["--rpc", "batch", "--batch-size", "1001"],
        ["--count", "5", "--duration", "1"],
        ["--rate", "-3"],
        ["--invalid-share", "0.9", "--declined-share", "0.2"],
        ["--methods", "paypal=1"],
        ["--methods", "card"],
        ["--processes", "3", "--concurrency", "2"],
        ["--bill-share", "1.5"],
    ],
)
async def test_bad_flags_are_refused_before_any_call(
    data_dir: Path, csv_file: Path, flags: list[str]
) -> None:
    # Port 1 has no server: a flag that got through would fail differently (exit 1).
    code, report = await bench(data_dir, "127.0.0.1:1", *flags)
    assert code == 2
    assert report == {}


async def test_missing_subscriber_file_is_refused(data_dir: Path) -> None:
    code, _ = await bench(data_dir, "127.0.0.1:1", "--subscribers", str(data_dir / "nope.csv"))
    assert code == 2


def test_scenario_file_sets_the_mix_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "mix.toml"
    path.write_text("fraud = 0.5\ninvalid = 0.1\nmethods = { wallet = 1.0 }\n")
    mix = Mix.from_file(path, invalid=0.0)
    assert (mix.fraud, mix.invalid, mix.methods) == (0.5, 0.0, {"wallet": 1.0})
    source = RequestSource(SUBSCRIBERS, 3, mix, "r")
    sent = [source.__next__() for _ in range(400)]
    kinds = Counter(k for k, _ in sent)
    assert set(kinds) <= set(KINDS)
    assert 150 < kinds["fraud"] < 250
    assert kinds["invalid"] == 0
    # Fraud-like traffic pays by card from few devices; the rest by wallet only.
    fraud = [r for k, r in sent if k == "fraud"]
    assert all(r.method.WhichOneof("kind") == "card" for r in fraud)
    assert len({r.device_id for r in fraud}) < len(fraud) / 5
    assert all(r.method.WhichOneof("kind") == "wallet" for k, r in sent if k == "good")
    # A near miss: an unknown key in the file is refused, not ignored.
    path.write_text("frauds = 0.5\n")
    with pytest.raises(ValueError, match="unknown keys"):
        Mix.from_file(path)


def test_bill_share_picks_the_plan_and_the_same_seed_the_same_load() -> None:
    bills = RequestSource(SUBSCRIBERS, 5, Mix(invalid=0, declined=0, bill_share=1.0), "r")
    assert all(r.purpose == pb.BILL_PAYMENT for r in bills.take(50))
    a = RequestSource(SUBSCRIBERS, 5, Mix(), "r").take(30)
    b = RequestSource(SUBSCRIBERS, 5, Mix(), "r").take(30)
    c = RequestSource(SUBSCRIBERS, 6, Mix(), "r").take(30)
    assert a == b
    assert a != c


def test_every_subscriber_pays_once_before_any_pays_twice() -> None:
    """A fast load over a few thousand lines must not have the same line pay seconds
    apart (fraud scoring's velocity windows decline that): subscribers are dealt from a
    shuffled deck, each once per round, in another order each round and each seed."""
    payable = {s.account_id for s in SUBSCRIBERS if s.status.name != "CLOSED"}
    assert len(payable) >= 4
    source = RequestSource(SUBSCRIBERS, 7, Mix(invalid=0, declined=0), "r")
    first = [r.account_id for r in source.take(len(payable))]
    second = [r.account_id for r in source.take(len(payable))]
    assert set(first) == set(second) == payable
    assert len(set(first)) == len(first)
    # Another order each round (4 lines: 24 orders, so look at a few rounds).
    rounds = [first, second] + [[r.account_id for r in source.take(len(payable))] for _ in range(4)]
    assert all(len(set(r)) == len(payable) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1


# The load two mixes make from the test subscribers, 400 requests each: their kinds and
# wire bytes, hashed. A/B runs of two builds (benches/*_ab.py, machine_cpu.py) give each
# the same seed so that both settle the same payments; that holds only while the load
# generator makes the same requests for a seed. Change this only on purpose, when the
# load itself is meant to change, and say so in the CHANGELOG: runs before and after are
# then no longer the same load.
LOAD_DIGEST = "3ec3232e8ccfba8e8dfba67248515cddf8139f27e8233a3ab32060b829216a8e"


def test_the_same_seed_makes_the_same_requests_as_the_load_always_has() -> None:
    every_kind = Mix(
        invalid=0.1, declined=0.1, fraud=0.1, duplicate=0.1,
        methods={"card": 1, "wallet": 1, "bank_account": 1, "carrier_balance": 1},
    )  # fmt: skip
    digest = hashlib.sha256()
    for seed, mix in ((1, Mix()), (2, every_kind)):
        source = RequestSource(SUBSCRIBERS, seed, mix, "golden")
        for _ in range(400):
            kind, request = next(source)
            digest.update(kind.encode() + b"\0" + request.SerializeToString())
    assert digest.hexdigest() == LOAD_DIGEST


def test_each_line_pays_by_its_own_luhn_valid_visa_card() -> None:
    """The load's card numbers pass the Luhn check the engine applies (checked here by
    a plain digit walk, not the generator's own arithmetic), are 16-digit Visa numbers,
    and stay one per line."""

    def luhn_ok(pan: str) -> bool:
        total = 0
        for i, ch in enumerate(reversed(pan)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    pans = {f"acc-{n:08d}": subscriber_pan(f"acc-{n:08d}") for n in range(5_000)}
    assert all(luhn_ok(p) and len(p) == 16 and p[0] == "4" for p in pans.values())
    assert len(set(pans.values())) > 4_900  # one card per line, nearly never shared
    assert subscriber_pan("acc-00000001") == pans["acc-00000001"]


def test_report_gives_the_settled_rate_beside_every_answer() -> None:
    """throughput_per_s counts every measured request, settled_per_s only the SETTLED
    answers; the table prints both, the JSON keeps throughput_per_s as it was."""
    tally = Tally(sent=100, elapsed_s=4.0)
    tally.statuses.update({"SETTLED": 60, "DECLINED": 25, "FAILED": 5})
    tally.errors.update({"INVALID_ARGUMENT": 8, "DEADLINE_EXCEEDED": 2})
    plan = LoadPlan(target="127.0.0.1:1", count=100)
    report = to_json(tally, plan, Mix(), Timeline(1.0, None), processes=1)
    assert report["throughput_per_s"] == 25.0
    assert report["settled_per_s"] == 15.0
    text = table(tally, plan).splitlines()
    assert [line.split()[1] for line in text if line.startswith(("payments/s", "settled/s"))] == [
        "25",
        "15",
    ]
    # Nothing measured (a run that ended in its warm-up): both zero, no division.
    assert rates(Tally()) == (0.0, 0.0)


def test_report_says_when_fraud_scoring_refused_the_loads_own_payments() -> None:
    """Fraud declines past a tenth of the good payments sent (beyond the fraud-like share
    the load meant to be caught) get a line saying what they mean and what to do."""
    plan = LoadPlan(target="127.0.0.1:1", count=100)
    tally = Tally(sent=100, elapsed_s=1.0)
    tally.kinds.update({"good": 90, "fraud": 10})
    tally.statuses.update({"SETTLED": 70, "DECLINED": 30})
    tally.declines.update({"FRAUD_DECLINED": 10})
    assert "note" not in table(tally, plan)  # the fraud-like ones, caught as meant
    tally.declines.update({"FRAUD_DECLINED": 8, "FRAUD_REVIEW": 12})
    note = [line for line in table(tally, plan).splitlines() if line.startswith("note")]
    assert len(note) == 1 and "20 more payments" in note[0] and "--fraud-mode observe" in note[0]


def test_histograms_merge_exactly_and_survive_encoding() -> None:
    a, b = Latency(), Latency()
    for ms in range(1, 101):
        a.record_s(ms / 1_000)
    b.record_s(5.0)
    b.record_s(1_000.0)  # beyond the range: clamped to the maximum, still counted
    merged = Latency.decode(a.encode())
    merged.add(b)
    assert merged.count == 102
    assert merged.percentile_ms(50) == pytest.approx(51, rel=0.01)
    assert merged.max_ms() == pytest.approx(120_000, rel=0.01)
    assert Latency().summary_ms() == dict.fromkeys(PERCENTILES, 0.0)


def test_work_is_split_without_losing_a_request() -> None:
    assert split(10, 3) == [4, 3, 3]
    plan = LoadPlan(target="x:1", count=101, concurrency=7, rate_per_s=90.0)
    plans = worker_plans(plan, 3)
    assert sum(p.count or 0 for p in plans) == 101
    assert sum(p.concurrency for p in plans) == 7
    assert sum(p.rate_per_s or 0 for p in plans) == pytest.approx(90.0)
    assert len({p.seed for p in plans}) == 3, "each worker its own requests"
    with pytest.raises(ValueError):
        worker_plans(plan, 8)


class _StallingSender:
    """Answers at once, except that one call blocks the whole event loop for a while,
    as a client stuck in a long GC pause or a saturated CPU would."""

    def __init__(self, stall_s: float, at_call: int) -> None:
        self.calls = 0
        self._stall_s = stall_s
        self._at = at_call

    async def call(self, request: pb.PayRequest) -> Answer:
        self.calls += 1
        if self.calls == self._at:
            time.sleep(self._stall_s)  # noqa: ASYNC251  (blocks the loop on purpose)
        return Answer(status="SETTLED")

    async def close(self) -> None:
        pass


async def test_open_loop_latency_counts_the_time_a_request_waited_to_be_sent() -> None:
    plan = LoadPlan(target="unused:1", rate_per_s=200.0, count=120, interval_s=0.1)
    worker = Worker(plan, RequestSource(SUBSCRIBERS, 1, Mix(), "co"), lambda _: None)
    tally = await worker.drive(_StallingSender(stall_s=0.3, at_call=20))
    assert tally.sent == 120
    # Requests due during the stall were sent late; from their intended time they
    # waited up to the stall, while the calls themselves took no time at all.
    # About 60 of the 120 were due during the 0.3 s stall, waiting 0 to 300 ms each.
    assert tally.latency.max_ms() >= 250
    assert tally.latency.percentile_ms(75) >= 75
    assert tally.service.percentile_ms(75) < tally.latency.percentile_ms(75) / 3


async def test_echo_baseline_answers_like_a_settled_payment(
    server: RunningServer, data_dir: Path
) -> None:
    echo, port = await create_echo_server("127.0.0.1:0")
    request = pb.PayRequest(
        idempotency_key="k-1", account_id="acc-post", msisdn="+306900000002",
        amount=pb.Money(amount_minor=100, currency="EUR"), purpose=pb.BILL_PAYMENT,
        method=pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id="w-1")),
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            baseline = await pb_grpc.SettlementStub(ch).Pay(request)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            real = await pb_grpc.SettlementStub(ch).Pay(request)
    finally:
        await echo.stop(0)
    assert real.status == baseline.status == pb.SETTLED
    assert baseline.idempotency_key == "k-1"
    # Of a size with the real reply, so the baseline carries the same bytes.
    size, real_size = baseline.ByteSize(), real.ByteSize()
    assert 0.5 * real_size <= size <= 1.5 * real_size


def test_micro_benchmarks_run_at_tiny_sizes() -> None:
    # Every benches/bench_*.py, once each, timings off: they must keep working.
    env = {**os.environ, "QUICKPAY_BENCH_SIZE": "smoke"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benches", "-o", "python_files=bench_*.py",
         "--benchmark-disable", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_requests_columns_bench_prints_a_row_per_size() -> None:
    # benches/requests_columns.py: the core's columns against the Python builders.
    done = subprocess.run(
        [sys.executable, "benches/requests_columns.py", "--sizes", "1,8", "--repeat", "2"],
        cwd=ROOT, env={**os.environ, "QUICKPAY_BENCH_SIZE": "smoke"}, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 8 |")]  # fmt: skip
    assert len(rows) == 2 and all(line.count("|") == 9 for line in rows), done.stdout


def test_make_bench_driver_writes_its_section_and_keeps_the_others(tmp_path: Path) -> None:
    # The `make bench` driver at tiny sizes: every part runs, the section is replaced in
    # place, and another area's section is left as it was.
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n## Ledger\n\nledger figures stay\n\n"
        "<!-- section: load benchmarking (quickpay bench, make bench) -->\nstale figures\n"
        "<!-- end section: load benchmarking -->\n\n## Fraud\n\nfraud figures stay\n"
    )
    done = subprocess.run(
        [sys.executable, "benches/compare.py", "--quick", "--out", str(results),
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    assert "stale figures" not in text
    assert text.count("<!-- section: load benchmarking") == 1
    assert "ledger figures stay" in text and "fraud figures stay" in text
    assert text.index("## Ledger") < text.index("## Load benchmarking") < text.index("## Fraud")
    for scenario in (
        "unary closed 64",
        "unary closed 64, 2 procs",
        "stream closed 256",
        "batch closed 2000, 500 per call",
    ):
        assert f"| {scenario} | payments/s |" in text
        assert f"| {scenario} | settled/s |" in text
    assert "| benches/bench_store.py | test_store_commit_batch[batch] |" in text
    assert "kernel " in text and "quickpay bench --data-dir" in text


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_tls_target_is_reached_with_its_ca_and_refused_without(
    data_dir: Path, csv_file: Path, tls_pair: tuple[Path, Path]
) -> None:
    key, cert = tls_pair
    echo, port = await create_echo_server("127.0.0.1:0", (key.read_bytes(), cert.read_bytes()))
    target = f"127.0.0.1:{port}"
    tls = ["--tls-ca", str(cert), "--tls-server-name", "localhost"]
    try:
        code, report = await bench(data_dir, target, "--count", "20", "--concurrency", "2", *tls)
        assert code == 0
        assert_counts_add_up(report, 20)
        assert report["plan"]["tls"] is True
        # Near misses: plaintext to a TLS server, or TLS without trusting its CA.
        for flags in (["--connect-timeout", "1"], ["--tls", "--connect-timeout", "1"]):
            code, report = await bench(data_dir, target, "--count", "5", *flags)
            assert code == 1
            assert report == {}
    finally:
        await echo.stop(0)


@pytest.mark.parametrize("path", sorted((ROOT / "benches" / "scenarios").glob("*.toml")))
def test_shipped_scenarios_load(path: Path) -> None:
    mix = Mix.from_file(path)
    assert 0 <= mix.invalid + mix.declined + mix.fraud + mix.duplicate <= 1
    assert RequestSource(SUBSCRIBERS, 1, mix, "s").take(20)


def test_cpu_budget_reads_every_process_and_writes_its_section(tmp_path: Path) -> None:
    # benches/cpu_budget.py at its smallest: a row per server and load, with CPU read
    # for the server, the engine's simulators and the client, written in place.
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n<!-- section: cpu budget (benches/cpu_budget.py) -->\nstale\n"
        "<!-- end section: cpu budget -->\n\n## Fraud\n\nfraud figures stay\n"
    )
    done = subprocess.run(
        [sys.executable, "benches/cpu_budget.py", "--runs", "1", "--seconds", "5",
         "--subscribers", "2000", "--out", str(results), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    assert "stale" not in text and "fraud figures stay" in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| e")]
    assert [(r[0].strip(), r[1].split()[1]) for r in rows] == [
        ("engine", "unary"), ("engine", "stream"), ("engine", "batch"),
        # The same engine with --metrics-listen, scraped every second while measured.
        ("engine+metrics", "unary"), ("engine+metrics", "stream"), ("engine+metrics", "batch"),
        ("echo", "unary"), ("echo", "stream"), ("echo", "batch"),
    ]  # fmt: skip
    # CPU is read in clock ticks (10 ms), which a process doing little in the short
    # window may not reach: the echo server answering two PayBatch calls a second, the
    # simulators of one run on a loaded machine. So a figure must be read, not be over
    # zero, except where thousands of payments cost more than a tick: the engine's
    # server and client, and the simulators summed over the engine's runs.
    simulated = 0.0
    for who, _, rate, server, simulators, client, *_, settled_rate in rows:
        assert float(rate.replace(",", "")) > 0
        # The echo server answers SETTLED as well; fraud velocity declines some of the
        # engine's, never all of them at 20,000 subscribers.
        assert 0 < float(settled_rate.replace(",", "")) <= float(rate.replace(",", ""))
        assert float(server) >= 0 and float(client) >= 0
        if who.strip().startswith("engine"):
            assert float(server) > 0 and float(client) > 0
            simulated += float(simulators)
        else:
            assert float(simulators) == 0  # only the engine starts gateway simulators
    assert simulated > 0


def test_a_closed_paybatch_loop_keeps_its_concurrency_in_calls_of_the_batch_size() -> None:
    plan = LoadPlan(target="unused:1", rpc="batch", batch_size=500, concurrency=1100, count=10)
    assert call_sizes(plan) == [500, 500, 100]
    assert call_sizes(dataclasses.replace(plan, concurrency=64)) == [64]
    assert call_sizes(dataclasses.replace(plan, concurrency=1000)) == [500, 500]


def test_machine_cpu_reads_the_processes_and_the_server_threads(tmp_path: Path) -> None:
    # benches/machine_cpu.py at its smallest, two flag sets alternating: a line per run
    # with its flags and figures, and the server's threads and the busiest processes.
    done = subprocess.run(
        [sys.executable, "benches/machine_cpu.py", "--rpc", "batch", "--seconds", "4",
         "--subscribers", "2000", "--runs", "1", "--flags-b", "--batches-in-flight 2",
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = [line for line in done.stdout.splitlines() if line.startswith("flags ")]
    assert [r.split(":")[0] for r in runs] == [
        "flags '(defaults)'",
        "flags '--batches-in-flight 2'",
    ]
    assert all("ms per settled payment" in r and "mean " in r for r in runs)
    # Every thread of the server that lived through the window (the event loop's, named
    # after the process, from the start), and the load's own processes, whatever else
    # the machine runs: the server, its simulators and the client.
    threads = [line.split() for line in done.stdout.splitlines() if line.startswith("  thread")]
    assert any(t[1] == "quickpay" for t in threads), done.stdout
    processes = [line for line in done.stdout.splitlines() if line.startswith("  process")]
    assert sum("quickpay serve" in line for line in processes) == 2, done.stdout
    assert sum("quickpay bench" in line for line in processes) == 2, done.stdout
    assert sum("gateway-sim" in line for line in processes) >= 2, done.stdout


def test_machine_cpu_alternates_two_builds_with_trees(tmp_path: Path) -> None:
    # --trees A,B: the server of each run is that tree's build (here the same tree
    # twice); each run's line names its tree.
    done = subprocess.run(
        [sys.executable, "benches/machine_cpu.py", "--rpc", "batch", "--seconds", "3",
         "--subscribers", "2000", "--runs", "1", "--trees", f"{ROOT},{ROOT}",
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = [line for line in done.stdout.splitlines() if line.startswith("tree ")]
    assert [r.split(",")[0] for r in runs] == [f"tree {ROOT.resolve()}"] * 2, done.stdout
    assert all("ms per settled payment" in r for r in runs)


class _LostStream:
    """A PayStream call as grpc.aio leaves it when its connection breaks under a write
    (grpc/grpc#36066): the first write is sent, the second fails with INTERNAL
    "Internal error from Core", and the reader then ends with that same status."""

    def __init__(self) -> None:
        self.writes = 0
        self.lost = asyncio.Event()

    def _error(self) -> grpc.aio.AioRpcError:
        none = grpc.aio.Metadata()
        return grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, none, none, GRPC_WRITE_FAILED)

    async def write(self, request: pb.PayRequest) -> None:
        self.writes += 1
        if self.writes > 1:
            self.lost.set()
            raise self._error()

    async def done_writing(self) -> None:
        pass

    def __aiter__(self) -> _LostStream:
        return self

    async def __anext__(self) -> pb.PayResponse:
        await self.lost.wait()
        raise self._error()


class _Channel:
    """Just enough of a grpc.aio.Channel for SettlementStub: PayStream is the lost
    stream, every other method is never called."""

    def __init__(self, call: _LostStream) -> None:
        self.call = call

    def stream_stream(self, *args: object, **kwargs: object) -> object:
        return lambda *a, **k: self.call

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


async def test_a_stream_lost_under_a_write_is_unavailable_not_internal() -> None:
    """When the engine dies, a PayStream write can fail before the reader sees the
    connection go: grpc.aio then reports INTERNAL for the write and for every reply the
    stream still owed (grpc/grpc#36066). The server said nothing of the kind (issue
    #19: the 2pc-kill chaos scenario heard 10 INTERNAL): they are UNAVAILABLE."""
    call = _LostStream()
    sender = StreamSender([_Channel(call)], timeout_s=5.0)  # type: ignore[list-item]
    owed = asyncio.ensure_future(sender.call(pb.PayRequest(idempotency_key="k1")))
    await asyncio.sleep(0)  # k1 is written and waits for its reply
    lost = await sender.call(pb.PayRequest(idempotency_key="k2"))
    answers = [await owed, lost]
    assert [a.error for a in answers] == ["UNAVAILABLE", "UNAVAILABLE"], answers
    assert all(GRPC_WRITE_FAILED in a.detail for a in answers)
    # A status the server sent is kept as it is, INTERNAL included.
    none = grpc.aio.Metadata()
    said = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, none, none, "boom")
    assert stream_error_answer(said) == Answer(error="INTERNAL", detail="boom")
