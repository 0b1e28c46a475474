"""`serve --metrics-listen`: Prometheus metrics and the HTTP probes of a real server.

The server runs in process on real sockets; /metrics is scraped over HTTP and parsed
with prometheus_client's own parser, and the shipped Grafana dashboard is checked to
name only metrics that scrape shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from conftest import bill, settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.server import LIVENESS_SERVICE, RunningServer, create_server

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "quickpay.json"


@pytest.fixture
async def observed(data_dir: Path) -> AsyncIterator[RunningServer]:
    settings = dataclasses.replace(settings_for(data_dir), metrics_listen="127.0.0.1:0")
    running = await create_server(settings)
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: {(name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in scraped.items()
        if n == name and set(labels.items()) <= set(ls)
    )  # fmt: skip


async def scrape_when_ended(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape taken once the server has counted the stream and the NOT_FOUND: both are
    counted as their calls end, which is after the client has its status (grpc.aio's
    abort sends the status, then raises; a stream's done callback runs after it), so a
    scrape taken at once could miss them. Polled, never slept for a fixed time."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        status, text = await get(port, "/metrics")
        assert status == 200
        scraped = samples(text)
        ended = (
            value(scraped, "quickpay_rpc_requests_total", rpc="PayStream") >= 1
            and value(scraped, "quickpay_rpc_errors_total", rpc="GetPayment") >= 1
        )
        if ended or asyncio.get_running_loop().time() > deadline:
            return scraped
        await asyncio.sleep(0.05)


async def drive(port: int) -> None:
    """A few of each: unary settles, a batch, a stream, a NOT_FOUND."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SettlementStub(channel)
        assert (await stub.Pay(bill("m-1"))).status == pb.SETTLED
        assert (await stub.Pay(topup("m-2"))).status == pb.SETTLED
        await stub.PayBatch(pb.PayBatchRequest(payments=[topup(f"m-b{n}") for n in range(3)]))
        stream = stub.PayStream(iter([bill("m-s1")]))
        async for _ in stream:
            pass
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetPayment(pb.GetPaymentRequest(payment_id="pay_" + "0" * 32))
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_scrape_shows_rpcs_outcomes_stages_wal_ledger_and_gateways(
    observed: RunningServer,
) -> None:
    await drive(observed.port)
    scraped = await scrape_when_ended(observed.metrics_port)

    assert value(scraped, "quickpay_rpc_requests_total", rpc="Pay") == 2
    assert value(scraped, "quickpay_rpc_requests_total", rpc="PayBatch") == 1
    assert value(scraped, "quickpay_rpc_requests_total", rpc="PayStream") == 1
    assert value(scraped, "quickpay_rpc_errors_total", rpc="GetPayment", code="NOT_FOUND") == 1
    assert value(scraped, "quickpay_rpc_errors_total", rpc="Pay") == 0
    assert value(scraped, "quickpay_rpc_duration_seconds_count", rpc="Pay") == 2
    # Every payment reached an outcome, counted once.
    assert value(scraped, "quickpay_settlements_total") == 6
    assert value(scraped, "quickpay_settlements_total", status="SETTLED") >= 2
    # A payment deferred behind another of its account is in two batches.
    assert value(scraped, "quickpay_batch_payments_sum") >= 6
    for stage in ("replay_lookup", "validate_score", "reserve", "gateways", "capture_commit"):
        assert value(scraped, "quickpay_saga_stage_duration_seconds_count", stage=stage) >= 1
    # The write-ahead log, as the core counts it: each group commit has records and bytes.
    fsyncs = value(scraped, "quickpay_wal_fsync_duration_seconds_count")
    assert fsyncs >= 1
    assert value(scraped, "quickpay_wal_fsync_duration_seconds_bucket", le="+Inf") == fsyncs
    assert value(scraped, "quickpay_wal_records_total") >= fsyncs
    assert value(scraped, "quickpay_wal_written_bytes_total") > 0
    assert value(scraped, "quickpay_ledger_entries", table="payments") >= 2
    assert value(scraped, "quickpay_ledger_entries_max", table="payments") > 0
    assert 0 < value(scraped, "quickpay_ledger_capacity_used_ratio", table="accounts") < 0.8
    assert value(scraped, "quickpay_gateway_sales_total") >= 2
    assert value(scraped, "quickpay_gateway_breaker_state") == 0  # all closed
    assert value(scraped, "quickpay_ready") == 1
    assert ("quickpay_queue_waiting_payments", ()) in scraped
    assert value(scraped, "quickpay_event_loop_cpu_seconds_total") > 0
    # The SQLite store: its write-ahead log holds the commits (a few, far from the
    # checkpoint thread's mark), and no checkpoint failed.
    assert value(scraped, "quickpay_sqlite_wal_bytes") > 0
    assert ("quickpay_sqlite_checkpoints_total", ()) in scraped
    assert value(scraped, "quickpay_sqlite_checkpoint_failures_total") == 0


async def test_the_event_loop_s_cpu_is_its_own_thread_s(observed: RunningServer) -> None:
    """The server runs on this test's loop, so its loop thread is this one: CPU burnt
    here shows in the scrape, and the scrape never says more than this thread used."""
    burnt_from = time.thread_time()
    while time.thread_time() - burnt_from < 0.2:
        pass
    _, text = await get(observed.metrics_port, "/metrics")
    loop_cpu = value(samples(text), "quickpay_event_loop_cpu_seconds_total")
    assert burnt_from + 0.2 <= loop_cpu <= time.thread_time()


async def test_the_dashboard_names_only_metrics_the_server_exports(
    observed: RunningServer,
) -> None:
    await drive(observed.port)
    _, text = await get(observed.metrics_port, "/metrics")
    # A family is exported once declared (HELP and TYPE), with or without samples yet
    # (recovery's actions have none until recovery does something).
    exported = {name for name, _ in samples(text)}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported.update(family.name + s for s in suffixes.get(family.type, [""]))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {m for expr in exprs for m in re.findall(r"\bquickpay_[a-z_]+", expr)}
    assert len(named) >= 15
    assert named <= exported, f"not exported: {sorted(named - exported)}"


async def test_probes_live_and_ready_then_not_ready_from_the_start_of_a_drain(
    data_dir: Path,
) -> None:
    settings = dataclasses.replace(settings_for(data_dir), metrics_listen="127.0.0.1:0")
    observed = await create_server(settings)
    port = observed.metrics_port
    assert await get(port, "/livez") == (200, "ok\n")
    assert (await get(port, "/readyz"))[0] == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{observed.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name, want in (("", "SERVING"), (LIVENESS_SERVICE, "SERVING")):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status) == want
        # A stream left open holds the drain for its grace: readiness is already gone.
        requests: asyncio.Queue[pb.PayRequest | None] = asyncio.Queue()

        async def feed() -> AsyncIterator[pb.PayRequest]:
            while (item := await requests.get()) is not None:
                yield item

        stream = pb_grpc.SettlementStub(channel).PayStream(feed())
        await requests.put(bill("drain-1"))
        await stream.read()
        stopping = asyncio.ensure_future(observed.stop(grace_s=30))
        await asyncio.sleep(0)
        assert (await get(port, "/readyz"))[0] == 503
        assert await get(port, "/livez") == (200, "ok\n")
        await requests.put(None)
        await stopping


async def test_live_but_not_ready_while_recovery_runs(data_dir: Path, monkeypatch) -> None:
    """The probes answer from before recovery: /livez 200 and /readyz 503 until
    recovery has finished and the subscribers are loaded, then 200."""
    import socket

    from quickpay_engine.settlement.recovery import Recovery

    held = asyncio.Event()
    release = asyncio.Event()
    run = Recovery.run

    async def slow_run(self, *args, **kwargs):
        held.set()
        await release.wait()
        return await run(self, *args, **kwargs)

    monkeypatch.setattr(Recovery, "run", slow_run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = dataclasses.replace(settings_for(data_dir), metrics_listen=f"127.0.0.1:{port}")
    starting = asyncio.ensure_future(create_server(settings))
    await asyncio.wait_for(held.wait(), 30)  # recovery has begun: the probes are up
    assert await get(port, "/livez") == (200, "ok\n")
    assert (await get(port, "/readyz"))[0] == 503
    release.set()
    running = await asyncio.wait_for(starting, 30)
    try:
        assert (await get(port, "/readyz"))[0] == 200
    finally:
        await running.stop(grace_s=1)
