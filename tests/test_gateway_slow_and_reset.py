"""The simulator's slow-body and connection-reset faults, each at 100 %, against a real
simulator process and the engine's own HTTP client, router and saga.

What is shown, per fault kind: on the wire it is what it claims (a TCP reset is RST,
not an orderly close; a slow body is a 200 whose headers come and whose body does not);
the engine's client calls it ambiguous, never unreachable (an unreachable sale may go
to the next gateway without a lookup, which after a capture would charge twice); the
router looks the reference up at that gateway before anything else, and voids it there
before failing over; and the payment ends captured and settled, or neither, never half.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for
from gateway_procs import QUIET, SimulatorSet
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.gateways.client import GatewayAmbiguous, GatewayClient
from quickpay_engine.gateways.config import GatewaysConfig
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.types import GATEWAY_UNAVAILABLE, Card, GatewayOutcome
from quickpay_engine.server import create_server
from quickpay_engine.settlement.ledger_book import ROLLED_BACK, SETTLED
from test_gateway_router import report
from test_gateway_sim import PAN, T, card, gateway_config

GO = GatewayOutcome
VISA = Card(PAN, 12, 2031)
# The new kinds; "after" ones process the sale before the fault, "before" ones do not.
KINDS = ("slow_body_rate", "reset_before_rate", "reset_after_rate")
PROCESSED = {"slow_body_rate": True, "reset_before_rate": False, "reset_after_rate": True}
# Long enough that no client here waits it out (each has a deadline of seconds); a
# slow body trickles over it, so its answer never completes inside a test's deadline.
HANG_MS = 60_000


@pytest.fixture(scope="module")
def module_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorSet]:
    """The module's simulators (two card acquirers and a wallet provider); every test
    uses references of its own."""
    sims = SimulatorSet(tmp_path_factory.mktemp("slow-and-reset")).start()
    try:
        yield sims
    finally:
        sims.stop()


@pytest.fixture
def sims(module_sims: SimulatorSet) -> SimulatorSet:
    """The module's simulators, quiet until the test sets faults."""
    for name in module_sims.urls:
        module_sims.set_faults(name, QUIET)
    return module_sims


def _port(sims: SimulatorSet, name: str) -> int:
    return int(sims.urls[name].rsplit(":", 1)[1])


def _client(sims: SimulatorSet, name: str = "acq-a") -> GatewayClient:
    return GatewayClient(gateway_config(name, sims.urls[name]))


def _cards(sims: SimulatorSet) -> GatewaysConfig:
    """The two card acquirers, acq-a first: acq-b is the failover."""
    return GatewaysConfig(tuple(gateway_config(n, sims.urls[n]) for n in ("acq-a", "acq-b")))


def _sale_bytes(reference: str) -> bytes:
    body = json.dumps(
        {"merchant_reference": reference, "amount_minor": 3_000, "currency": "EUR",
         "method": card()}
    ).encode()  # fmt: skip
    head = (
        f"POST /v1/payments/sale HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _exchange(port: int, request: bytes, until_head: bool) -> bytes:
    """Sends a raw request and reads what comes back: to the end of the headers (and
    whatever came with them) if ``until_head``, else to the end of the connection.
    A reset raises ConnectionResetError; an orderly close ends the read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        got = b""
        while not (until_head and b"\r\n\r\n" in got):
            chunk = s.recv(65_536)
            if not chunk:
                break
            got += chunk
        return got


@pytest.mark.parametrize("kind", ["reset_before_rate", "reset_after_rate"])
async def test_a_reset_is_a_tcp_reset_and_after_means_processed(
    sims: SimulatorSet, kind: str
) -> None:
    sims.set_faults("acq-a", {kind: 1.0})
    ref = f"pay_rst_{kind}"
    # RST, not FIN: recv raises ECONNRESET, where an orderly close would read b"".
    with pytest.raises(ConnectionResetError):
        await asyncio.to_thread(_exchange, _port(sims, "acq-a"), _sale_bytes(ref), False)
    found = sims.payment("acq-a", ref)
    if PROCESSED[kind]:
        assert found is not None and found["state"] == "CAPTURED"
    else:
        assert found is None


async def test_a_slow_body_sends_its_headers_and_holds_back_the_body(sims: SimulatorSet) -> None:
    sims.set_faults("acq-a", {"slow_body_rate": 1.0, "hang_ms": HANG_MS})
    port = _port(sims, "acq-a")
    got = await asyncio.to_thread(_exchange, port, _sale_bytes("pay_slow"), True)
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    length = int(next(v for k, _, v in (h.partition(": ") for h in lines[1:])
                      if k.lower() == "content-length"))  # fmt: skip
    # What came with the headers is at most half: the rest trickles over a minute.
    assert len(body) <= length // 2 + 1 < length
    # Processed all the same; a replay is answered whole and at once.
    found = sims.payment("acq-a", "pay_slow")
    assert found is not None and found["state"] == "CAPTURED"
    again = await asyncio.to_thread(_exchange, port, _sale_bytes("pay_slow"), False)
    assert json.loads(again.partition(b"\r\n\r\n")[2])["replayed"] is True


async def test_a_slow_body_waited_out_is_the_whole_answer(sims: SimulatorSet) -> None:
    sims.set_faults("acq-a", {"slow_body_rate": 1.0, "hang_ms": 300})
    client = _client(sims)
    await client.start()
    try:
        answer = await client.sale("pay_patient", 3_000, "EUR", card(), T)
    finally:
        await client.close()
    assert (answer["state"], answer["captured_minor"]) == ("CAPTURED", 3_000)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_engines_client_calls_each_new_fault_ambiguous(
    sims: SimulatorSet, kind: str
) -> None:
    sims.set_faults("acq-a", {kind: 1.0, "hang_ms": HANG_MS})
    ref = f"pay_x_{kind}"
    client = _client(sims)
    await client.start()
    try:
        # Ambiguous, not unreachable: the request reached the gateway.
        with pytest.raises(GatewayAmbiguous):
            await client.sale(ref, 3_000, "EUR", card(), 0.5)
        found = await client.lookup(ref, T)
    finally:
        await client.close()
    assert (found is not None and found["state"] == "CAPTURED") is PROCESSED[kind]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_router_looks_up_before_failover(sims: SimulatorSet, kind: str) -> None:
    sims.set_faults("acq-a", {kind: 1.0, "hang_ms": HANG_MS})
    ref = f"pay_f_{kind}"
    async with GatewayRouter(_cards(sims)) as router:
        result = await router.sale(ref, 3_000, "EUR", VISA, router.deadline(10))
        if PROCESSED[kind]:
            # Looked up at acq-a and found captured there: the failover never saw it.
            assert (result.outcome, result.gateway) == (GO.CAPTURED, "acq-a")
            assert result.attempts == ("acq-a:ambiguous", "acq-a:captured")
        else:
            # Looked up (not there), retried there, looked up again, voided there (so a
            # late copy cannot land), and only then sent to acq-b.
            assert (result.outcome, result.gateway) == (GO.CAPTURED, "acq-b")
            assert result.attempts == (
                "acq-a:ambiguous", "acq-a:not_found", "acq-a:ambiguous", "acq-a:not_found",
                "acq-a:voided", "acq-b:captured",
            )  # fmt: skip
            at_a = await router.status(ref, router.deadline(5), "acq-a")
            assert (at_a.outcome, at_a.captured_minor) == (GO.VOIDED, 0)
        # Captured once, at one gateway, as the settlement reports say.
        rows = await report(router, "acq-a") + await report(router, "acq-b")
        captured = [r for r in rows if r["type"] == "CAPTURE" and r["status"] == "SETTLED"]
        assert [r["merchant_reference"] for r in captured].count(ref) == 1


# The saga: captured and settled, or neither.


@pytest.mark.parametrize("where", ["first", "both"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_payment_ends_settled_and_captured_or_neither(
    data_dir: Path, sims: SimulatorSet, kind: str, where: str
) -> None:
    """The fault at 100 % on the first card acquirer (the second is the failover), or on
    both: the caller hears SETTLED only for a payment captured once and settled in
    billing, and FAILED only for one captured nowhere and rolled back."""
    faulty = ["acq-a"] if where == "first" else ["acq-a", "acq-b"]
    for name in faulty:
        sims.set_faults(name, {"seed": 5, kind: 1.0, "hang_ms": HANG_MS})
    running = await create_server(settings_for(data_dir, gateways=sims.gateways_file))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        reply = await pb_grpc.SettlementStub(channel).Pay(bill(f"sr-{kind}-{where}"), timeout=60)
        await running.service._pipeline.drain()
        states = running.service.book.states([reply.payment_id])
        at = {n: sims.payment(n, reply.payment_id) for n in ("acq-a", "acq-b")}
        captured = [n for n, p in at.items() if p is not None and p["state"] == "CAPTURED"]
        if PROCESSED[kind]:
            # Found by the lookup at the first acquirer, whatever the failover's faults.
            assert reply.status == pb.SETTLED and reply.confirmation.gateway == "acq-a"
            assert (captured, states) == (["acq-a"], [SETTLED])
            assert at["acq-b"] is None
        elif where == "first":
            assert reply.status == pb.SETTLED and reply.confirmation.gateway == "acq-b"
            assert (captured, states) == (["acq-b"], [SETTLED])
            assert at["acq-a"]["state"] == "VOIDED"
        else:
            assert (reply.status, reply.decline_reason) == (pb.FAILED, GATEWAY_UNAVAILABLE)
            assert (captured, states) == ([], [ROLLED_BACK])
            assert {p["state"] for p in at.values()} == {"VOIDED"}
        assert running.service.book.unfinished() == {}
        assert running.store.verify() == []
    finally:
        await channel.close()
        await running.stop(grace_s=1)
