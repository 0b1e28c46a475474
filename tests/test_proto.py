"""The contract decoded by the core (engine/src/proto, prost) against the Python view
(the generated protobuf stubs): field by field, the same intent and the same keyed
fingerprint, and bytes that are not the contract's message are INVALID_ARGUMENT on
every payment RPC."""

from __future__ import annotations

import dataclasses
import random

import grpc
import pytest

from conftest import bill, topup
from quickpay_engine._engine import (
    PAY_REQUEST_BYTES_MAX,
    IntentTypes,
    decode_pay_batch,
    decode_pay_requests,
    encode_pay_batch_response,
    encode_pay_responses,
)
from quickpay_engine.api import convert
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import (
    Confirmation,
    FraudAssessment,
    LineStatus,
    Method,
    MethodDetail,
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentStatus,
    Purpose,
)
from quickpay_engine.errors import InvalidArgument, RequestUndecodable

KEY = b"k" * 32
SAMPLES = 3_000
# Text with what clients send in practice and what they should not: empty, ASCII,
# non-ASCII letters, emoji, control characters and NUL.
ALPHABET = "abcXYZ019+-_ .:/@éßΩ漢🙂\x00\x07\x7f"


def _text(rng: random.Random, longest: int = 40) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def _method(rng: random.Random) -> pb.PaymentMethod | None:
    arm = rng.randrange(5)
    if arm == 0:
        return None
    if arm == 1:
        pan = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.2:
            pan += rng.choice("x ")  # not all digits: shown as "card" alone
        return pb.PaymentMethod(
            card=pb.Card(
                pan=pan,
                expiry_month=rng.choice([0, 1, 12, 13, 2**32 - 1]),
                expiry_year=rng.choice([0, 2031, 2**32 - 1]),
            )
        )
    if arm == 2:
        return pb.PaymentMethod(wallet=pb.Wallet(provider=_text(rng, 60), wallet_id=_text(rng)))
    if arm == 3:
        return pb.PaymentMethod(bank_account=pb.BankAccount(iban=_text(rng, 34)))
    return pb.PaymentMethod(carrier_balance=pb.CarrierBalance())


def random_request(rng: random.Random) -> pb.PayRequest:
    """A PayRequest with every field drawn, each sometimes left at its default."""
    request = pb.PayRequest(
        idempotency_key=_text(rng),
        account_id=_text(rng),
        msisdn=_text(rng, 16),
        purpose=rng.choice([0, 1, 2, 3, 99]),  # unknown numbers are kept by proto3
        channel=_text(rng, 12),
        device_id=_text(rng),
        ip=_text(rng, 20),
        subscriber_assertion=_text(rng, 80),
    )
    if rng.random() < 0.9:
        request.amount.CopyFrom(
            pb.Money(
                amount_minor=rng.choice([0, 1, -1, 3_000, 2**63 - 1, -(2**63)]),
                currency=_text(rng, 4),
            )
        )
    method = _method(rng)
    if method is not None:
        request.method.CopyFrom(method)
    return request


def _view(intent: PaymentIntent) -> tuple[PaymentIntent, tuple[object, ...]]:
    """Everything an intent carries: its fields, and its method detail (which equality
    leaves out)."""
    return intent, dataclasses.astuple(intent.detail)


def test_the_core_decodes_every_field_as_the_python_stubs_do() -> None:
    rng = random.Random(20261206)
    requests = [random_request(rng) for _ in range(SAMPLES)]
    decoded = convert.intents_of_frames([r.SerializeToString() for r in requests], KEY)
    for request, intent in zip(requests, decoded, strict=True):
        assert not isinstance(intent, InvalidArgument), (request, intent)
        # intent_of is the Python view: the stubs' fields, and the fingerprint as every
        # stored payment has it (HMAC of the deterministic serialization), so a retry of
        # a payment stored before the core decoded requests still matches its key.
        assert _view(intent) == _view(convert.intent_of(request, KEY)), request


def test_intents_the_core_builds_are_the_dataclasses_python_would_build() -> None:
    """The core builds each PaymentIntent itself (``IntentTypes``), setting the frozen
    dataclass's fields as its own ``__init__`` does: the objects are equal, hash alike,
    stay frozen, carry the enum members themselves, and keep the call's deadline and
    sender, on the PayBatch path as on the frames path."""
    rng = random.Random(7)
    requests = [random_request(rng) for _ in range(200)]
    call = pb.PayBatchRequest(payments=requests).SerializeToString()
    built = convert.intents_of_batch(call, KEY, 1_000, deadline=123.5, sender="gw-1")
    for request, intent in zip(requests, built, strict=True):
        assert type(intent) is PaymentIntent
        expected = dataclasses.replace(
            convert.intent_of(request, KEY), deadline=123.5, sender="gw-1"
        )
        assert _view(intent) == _view(expected)
        assert (intent.deadline, intent.sender) == (123.5, "gw-1")
        assert hash(intent) == hash(expected)
        assert type(intent.purpose) is Purpose and type(intent.method.kind) is MethodKind
        assert intent.purpose is expected.purpose and intent.method.kind is expected.method.kind
        assert repr(intent.detail) == "MethodDetail(<redacted>)"
        with pytest.raises(dataclasses.FrozenInstanceError):
            intent.amount_minor = 1  # type: ignore[misc]
    (unsent,) = convert.intents_of_frames([requests[0].SerializeToString()], KEY)
    assert isinstance(unsent, PaymentIntent)
    assert (unsent.deadline, unsent.sender) == (None, "")


def intent_types(**changed: object) -> IntentTypes:
    """IntentTypes with convert.INTENT_TYPES's arguments, ``changed`` in place of some."""
    args: dict[str, object] = {
        "intent": PaymentIntent,
        "method": Method,
        "detail": MethodDetail,
        "purposes": [(p.value, p) for p in (Purpose.BILL_PAYMENT, Purpose.PREPAID_TOPUP)],
        "purpose_other": Purpose.UNSPECIFIED,
        "kinds": [MethodKind(k) for k in range(5)],
    }
    return IntentTypes(**{**args, **changed})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kinds",
    [[MethodKind(k % 5) for k in range(count)] for count in (0, 4, 6)]
    + [
        list(reversed(MethodKind)),  # five, out of order
        [MethodKind.MISSING, *([MethodKind.CARD] * 4)],  # five, one repeated
    ],
)
def test_intent_types_refuse_kinds_that_are_not_the_five_by_number(kinds: list[object]) -> None:
    """The decode picks a method's kind from ``kinds`` by the contract's number (0 to
    4), and an unknown number falls back to ``kinds[0]``: with four, a CARRIER_BALANCE
    payment would be decoded as MISSING; with none the fallback has nothing to take; in
    another order a card payment would be decoded as another kind. So anything but the
    five members in the contract's order is refused when the types are handed over, with
    a ValueError that names the argument, not met at the first payment."""
    intent_types()  # as convert.py hands them over
    with pytest.raises(ValueError, match=r"^kinds: MethodKind's five members, by number$"):
        intent_types(kinds=kinds)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        # The classes the decode instantiates, not something else of the same name.
        ("intent", "PaymentIntent"),
        ("method", None),
        ("detail", MethodDetail()),  # an instance, not the class
        # Purpose numbers are the contract's integers.
        ("purposes", [("1", Purpose.BILL_PAYMENT)]),
        ("purposes", {1: Purpose.BILL_PAYMENT}),
        # A string of five characters is not a list of five members.
        ("kinds", "abcde"),
    ],
)
def test_intent_types_refuse_arguments_of_the_wrong_type(argument: str, value: object) -> None:
    """The constructor's other refusals: the bindings' argument conversion turns away a
    class that is not a class, purposes that are not (number, member) pairs and kinds
    that are not a sequence, with a TypeError, before anything is built."""
    with pytest.raises(TypeError):
        intent_types(**{argument: value})


def test_every_field_of_the_request_reaches_the_intent() -> None:
    """Changing any one field changes what the core decodes (the fingerprint at least),
    so no field of the contract is dropped on the way in."""
    base = bill("every-field", subscriber_assertion="token", device_id="d", ip="192.0.2.1")
    (reference,) = decode_pay_requests([base.SerializeToString()], KEY)
    changed: set[str] = set()
    for field in pb.PayRequest.DESCRIPTOR.fields:
        request = pb.PayRequest()
        request.CopyFrom(base)
        if field.message_type is None:
            value = getattr(request, field.name)
            setattr(request, field.name, value + 1 if isinstance(value, int) else value + "x")
        elif field.name == "amount":
            request.amount.amount_minor += 1
        else:
            request.method.card.expiry_month += 1
        (other,) = decode_pay_requests([request.SerializeToString()], KEY)
        if other != reference:
            changed.add(field.name)
    assert changed == {f.name for f in pb.PayRequest.DESCRIPTOR.fields}


def test_the_fingerprint_ignores_field_order_and_is_keyed() -> None:
    request = bill("fp-order")
    forward = request.SerializeToString(deterministic=True)
    # The same fields, written last to first: still the same payload.
    fields = [(f, v) for f, v in request.ListFields()]
    backward = b"".join(
        pb.PayRequest(**{f.name: v}).SerializeToString() for f, v in reversed(fields)
    )
    assert backward != forward
    a, b = decode_pay_requests([forward, backward], KEY)
    assert a == b
    (c,) = decode_pay_requests([forward], b"another key")
    assert c[0][1] != a[0][1]


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff\xff\xff",  # a key cut short
        b"\x0a\x05ab",  # a string running past the end
        b"\x22\x04\x12\x02\xff\xfe",  # amount.currency not UTF-8
        b"\x0b",  # a group start (wire type 3)
        bytes(range(256)),
    ],
)
def test_bytes_that_are_not_a_request_name_the_problem(frame: bytes) -> None:
    (item,) = convert.intents_of_frames([frame], KEY)
    assert isinstance(item, InvalidArgument)
    assert str(item).startswith("request: not a PayRequest"), item


def test_truncations_and_mutations_never_crash_the_decoder() -> None:
    """Every prefix and thousands of single-byte mutations of real requests: each is a
    request or a named refusal, never an exception."""
    rng = random.Random(7)
    frames = []
    for _ in range(50):
        good = random_request(rng).SerializeToString()
        frames += [good[:n] for n in range(len(good))]
        for _ in range(40):
            mutated = bytearray(good or b"\x00")
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            frames.append(bytes(mutated))
    for start in range(0, len(frames), 5_000):
        for item in decode_pay_requests(frames[start : start + 5_000], KEY):
            assert isinstance(item, (tuple, str))


def test_an_oversized_request_is_refused_unread() -> None:
    (item,) = decode_pay_requests([b"\x00" * (PAY_REQUEST_BYTES_MAX + 1)], KEY)
    assert isinstance(item, str) and "over the bound" in item


def test_a_batch_decodes_each_payment_alone_and_refuses_broken_framing() -> None:
    good = bill("b-1").SerializeToString()
    bad = b"\x22\x04\x12\x02\xff\xfe"
    call = b"".join(b"\x0a" + bytes([len(f)]) + f for f in (good, bad, good))
    first, second, third = decode_pay_batch(call, KEY, 1_000)
    assert first == third and isinstance(second, str)
    with pytest.raises(RequestUndecodable, match="payments: 3 in one call; at most 2"):
        decode_pay_batch(call, KEY, 2)
    with pytest.raises(RequestUndecodable, match="not a PayBatchRequest"):
        decode_pay_batch(call[:-1], KEY, 1_000)


# -- through a real server ---------------------------------------------------------------


def _raw(channel: grpc.aio.Channel, method: str, response: type) -> object:
    return channel.unary_unary(
        f"/quickpay.v1.Settlement/{method}",
        request_serializer=None,
        response_deserializer=response.FromString,
    )


@pytest.mark.parametrize("frame", [b"\xff\xff\xff", b"\x22\x04\x12\x02\xff\xfe", b"\x0b"])
async def test_pay_answers_undecodable_bytes_with_invalid_argument(channel, frame) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw(channel, "Pay", pb.PayResponse)(frame)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("request: not a PayRequest")


async def test_pay_batch_fails_an_undecodable_payment_alone(channel, server) -> None:
    good = topup("raw-batch-1").SerializeToString()
    bad = b"\x22\x04\x12\x02\xff\xfe"
    call = b"".join(b"\x0a" + bytes([len(f)]) + f for f in (good, bad))
    reply = await _raw(channel, "PayBatch", pb.PayBatchResponse)(call)
    settled, refused = reply.results
    assert settled.status == pb.SETTLED and settled.idempotency_key == "raw-batch-1"
    assert (refused.status, refused.decline_reason) == (pb.FAILED, "INVALID_ARGUMENT")
    assert "Money.currency" in refused.decline_detail
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw(channel, "PayBatch", pb.PayBatchResponse)(call[:-1])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PayBatchRequest" in (err.value.details() or "")
    assert server.store.verify() == []


def test_every_rpc_of_the_contract_is_served() -> None:
    """The servicer registers each RPC the proto declares, raw or typed, none twice."""
    from quickpay_engine.api.servicer import RAW_RPCS, TYPED_RPCS

    declared = {m.name for m in pb.DESCRIPTOR.services_by_name["Settlement"].methods}
    assert set(RAW_RPCS) | set(TYPED_RPCS) == declared
    assert not set(RAW_RPCS) & set(TYPED_RPCS)


async def test_one_over_long_field_fails_its_payment_alone_and_costs_the_batch_nothing(
    channel, server
) -> None:
    """A 1 MB msisdn is refused when its request is decoded, naming the field, before
    it is batched: the other payments of the call settle, and no batch's validation
    columns are ever a megabyte wide."""
    from quickpay_engine._engine import PAY_REQUEST_FIELD_BYTES_MAX

    payments = [
        topup("long-0"),
        bill("long-1", msisdn="+" + "3" * 1_000_000),
        topup("long-2", amount=pb.Money(amount_minor=100, currency="KES")),
    ]
    call = pb.PayBatchRequest(payments=payments).SerializeToString()
    first, refused, last = (await _raw(channel, "PayBatch", pb.PayBatchResponse)(call)).results
    assert (refused.status, refused.decline_reason) == (pb.FAILED, "INVALID_ARGUMENT")
    assert refused.decline_detail.startswith(
        f"request: msisdn: 1000001 bytes, over the bound of {PAY_REQUEST_FIELD_BYTES_MAX}"
    )
    assert first.status == pb.SETTLED and last.status == pb.SETTLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw(channel, "Pay", pb.PayResponse)(payments[1].SerializeToString())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "msisdn" in (err.value.details() or "")


# Each RPC the generated stubs used to decode, with a frame its request type refuses: a
# string running past the end, and a string field that is not UTF-8.
_TYPED = {
    "GetPayment": (pb.Payment, "GetPaymentRequest", b"\x0a\x05ab"),
    "Refund": (pb.RefundResponse, "RefundRequest", b"\x12\x02\xff\xfe"),
    "WatchSettlements": (pb.SettlementEvent, "WatchRequest", b"\x1a\x02\xff\xfe"),
    "Reconcile": (pb.ReconcileReport, "ReconcileRequest", b"\xff\xff\xff"),
}


@pytest.mark.parametrize("method", sorted(_TYPED))
async def test_every_other_rpc_answers_undecodable_bytes_with_invalid_argument(
    channel, method
) -> None:
    """Not UNKNOWN with grpc's "Unexpected <class DecodeError>": the message is named."""
    response, name, frame = _TYPED[method]
    path = f"/quickpay.v1.Settlement/{method}"
    if method == "WatchSettlements":
        call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call(frame):
                pass
    else:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _raw(channel, method, response)(frame)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert (err.value.details() or "").startswith(f"request: not a {name}"), err.value.details()


def _outcome(rng: random.Random) -> Outcome:
    confirmation = None
    if rng.random() < 0.6:
        confirmation = Confirmation(
            confirmation_id=_text(rng),
            ledger_sequence=rng.randint(0, 2**63),
            settled_at_us=rng.randint(0, 4_000_000_000_000_000),
            gateway=_text(rng),
            gateway_reference=_text(rng),
            balance_after_minor=rng.randint(-(2**63), 2**63 - 1),
            currency=rng.choice(["EUR", "KES", ""]),
            service_state_after=rng.choice(list(LineStatus)),
        )
    fraud = None
    if rng.random() < 0.6:
        reasons = tuple(_text(rng, 12) for _ in range(rng.randint(0, 4)))
        fraud = FraudAssessment(rng.randint(0, 1000), rng.choice(["APPROVE", "REVIEW"]), reasons)
    return Outcome(
        payment_id=_text(rng),
        idempotency_key=_text(rng),
        status=rng.choice(list(PaymentStatus)),
        decline_reason=_text(rng),
        decline_detail=_text(rng, 200),
        confirmation=confirmation,
        replayed=rng.random() < 0.3,
        fraud=fraud,
    )


def test_the_core_encodes_each_reply_as_the_python_view_does() -> None:
    # The replies of Pay, PayStream and PayBatch are encoded in the core; the generated
    # stubs' message (convert.pay_response) is the reference, field by field.
    rng = random.Random(11)
    outcomes = [_outcome(rng) for _ in range(SAMPLES)]
    for outcome, encoded in zip(outcomes, encode_pay_responses(outcomes), strict=True):
        assert pb.PayResponse.FromString(encoded) == convert.pay_response(outcome)
    batch = pb.PayBatchResponse.FromString(encode_pay_batch_response(outcomes))
    assert list(batch.results) == [convert.pay_response(o) for o in outcomes]
    assert pb.PayBatchResponse.FromString(encode_pay_batch_response([])) == pb.PayBatchResponse()
