"""PayStream with frames that are not PayRequests (issue #20, item 5): an undecodable
frame gets a FAILED reply of its own, the stream goes on, and every payment settled
gets its reply before the stream ends."""

from __future__ import annotations

import grpc

from conftest import topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.server import RunningServer

METHOD = "/quickpay.v1.Settlement/PayStream"
# Not a protobuf message: field 1 as a length-delimited string 127 bytes long, cut off.
GARBAGE = b"\x0a\x7fabc"


def _raw_stream(channel: grpc.aio.Channel):
    """PayStream with requests sent as the caller's bytes, unchecked."""
    return channel.stream_stream(
        METHOD, request_serializer=lambda b: b, response_deserializer=pb.PayResponse.FromString
    )


def _frames(count: int, bad_at: set[int]) -> list[bytes]:
    one_kes = pb.Money(amount_minor=100, currency="KES")
    return [
        GARBAGE if n in bad_at else topup(f"frame-{n}", amount=one_kes).SerializeToString()
        for n in range(count)
    ]


async def test_an_undecodable_frame_gets_a_failed_reply_and_the_stream_goes_on(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    bad = {0, 7, 29}
    call = _raw_stream(channel)(iter(_frames(30, bad)))
    replies = [r async for r in call]
    assert await call.code() == grpc.StatusCode.OK, await call.details()

    by_key = {r.idempotency_key: r for r in replies if r.idempotency_key}
    assert set(by_key) == {f"frame-{n}" for n in range(30) if n not in bad}
    assert all(r.status in (pb.SETTLED, pb.DECLINED) for r in by_key.values())
    failed = [r for r in replies if not r.idempotency_key]
    assert len(failed) == len(bad)
    assert {r.status for r in failed} == {pb.FAILED}
    assert {r.decline_reason for r in failed} == {"INVALID_ARGUMENT"}
    # Each names the frame it answers (by its place in the stream), and nothing else.
    assert sorted(r.decline_detail.split(":")[0] for r in failed) == sorted(
        f"request {n}" for n in bad
    )
    assert all(": not a PayRequest: " in r.decline_detail for r in failed)
    assert not any(r.payment_id for r in failed)


async def test_every_settled_payment_is_answered_before_a_stream_ends(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    """Whatever ends the stream, no payment settles without its reply: the settled ones
    are exactly the ones answered."""
    call = _raw_stream(channel)(iter(_frames(30, {15})))
    replies = [r async for r in call]
    answered = {r.idempotency_key for r in replies if r.status == pb.SETTLED}
    settled = {
        f"frame-{n}"
        for n in range(30)
        if (record := server.store.get_payment(idempotency_key=f"frame-{n}")) is not None
        and record.outcome.status == pb.SETTLED
    }
    assert answered == settled and len(settled) >= 1
