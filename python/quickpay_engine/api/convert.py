"""Protobuf messages to domain types and back. The only module that knows both."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
import time
from datetime import date
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from quickpay_engine._engine import IntentTypes, decode_pay_batch_intents, decode_pay_intents
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import (
    EVENT_KINDS,
    Confirmation,
    FraudAssessment,
    LineStatus,
    Method,
    MethodDetail,
    MethodKind,
    OutboxEvent,
    Outcome,
    PaymentIntent,
    PaymentRecord,
    PaymentStatus,
    Plan,
    Purpose,
    SubscriberRow,
)
from quickpay_engine.errors import InvalidArgument
from quickpay_engine.reconcile.report import ColumnMapping
from quickpay_engine.settlement.adjustments import AdjustmentOutcome, AdjustmentRequest
from quickpay_engine.settlement.reconciliation import DEFAULT_TOLERANCE_S, ReconcileRun
from quickpay_engine.settlement.refunds import RefundOutcome
from quickpay_engine.store.audit import ACCESS_RECONCILE, ACCESS_REFUND
from quickpay_engine.subscriber_changes import ChangeKind, SubscriberChanges

# Channel names are case-insensitive (gateway nodes and operators write "USSD", "APP"):
# ASCII letters are lower-cased before anything else reads the request. ASCII only,
# not str.lower(), which would turn the Kelvin sign into "k" and let a look-alike
# through; any non-ASCII character is left for the engine to refuse.
_CHANNEL_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

_METHOD_KINDS = {
    "card": MethodKind.CARD,
    "wallet": MethodKind.WALLET,
    "bank_account": MethodKind.BANK_ACCOUNT,
    "carrier_balance": MethodKind.CARRIER_BALANCE,
}


def method_of(method: pb.PaymentMethod) -> Method:
    """The method as the engine may keep it: a card shows its last four digits only."""
    arm = method.WhichOneof("kind")
    if arm is None:
        return Method(MethodKind.MISSING, "")
    kind = _METHOD_KINDS[arm]
    if kind is MethodKind.CARD:
        pan = method.card.pan
        last4 = pan[-4:] if len(pan) >= 12 and pan.isdigit() else ""
        return Method(kind, f"card ****{last4}" if last4 else "card")
    if kind is MethodKind.WALLET:
        return Method(kind, f"wallet {method.wallet.provider[:32]}")
    if kind is MethodKind.BANK_ACCOUNT:
        iban = method.bank_account.iban
        return Method(kind, f"iban {iban[:4]}****{iban[-4:]}" if len(iban) >= 12 else "iban")
    return Method(kind, "carrier balance")


def detail_of(request: pb.PayRequest) -> MethodDetail:
    """The request's method fields and assertion, for validation only."""
    m = request.method
    return MethodDetail(
        card_pan=m.card.pan,
        card_expiry_month=m.card.expiry_month,
        card_expiry_year=m.card.expiry_year,
        wallet_provider=m.wallet.provider,
        wallet_id=m.wallet.wallet_id,
        iban=m.bank_account.iban,
        subscriber_assertion=request.subscriber_assertion,
    )


def intent_of(
    request: pb.PayRequest, fingerprint_key: bytes, deadline: float | None = None
) -> PaymentIntent:
    """Decodes a PayRequest. The payload fingerprint is keyed (HMAC-SHA256), because the
    request holds a card number and an unkeyed hash of one can be reversed by search.

    The channel is normalized in ``request`` itself first (see ``normalize_channel``),
    so the fingerprint, validation, fraud scoring and the stored payment all see one
    spelling, and a retry that differs only in the channel's case replays."""
    normalize_channel(request)
    payload = request.SerializeToString(deterministic=True)
    fingerprint = hmac.digest(fingerprint_key, payload, "sha256").hex()
    return PaymentIntent(
        idempotency_key=request.idempotency_key,
        fingerprint=fingerprint,
        account_id=request.account_id,
        msisdn=request.msisdn,
        amount_minor=request.amount.amount_minor,
        currency=request.amount.currency,
        purpose=Purpose(request.purpose) if request.purpose in (1, 2) else Purpose.UNSPECIFIED,
        method=method_of(request.method),
        channel=request.channel,
        device_id=request.device_id,
        ip=request.ip,
        detail=detail_of(request),
        deadline=deadline,
    )


def intents_of_frames(
    frames: list[bytes],
    fingerprint_key: bytes,
    deadline: float | None = None,
    field: str = "request",
    sender: str = "",
) -> list[PaymentIntent | InvalidArgument]:
    """PayRequest frames decoded by the core, in one call: each an intent (sent by
    ``sender``), or the InvalidArgument (on ``field``) of a frame that is not a
    PayRequest. The core builds the intents itself (``IntentTypes``)."""
    decoded = decode_pay_intents(INTENT_TYPES, frames, fingerprint_key, deadline, sender)
    return [InvalidArgument(field, d) if d.__class__ is str else d for d in decoded]


def intents_of_batch(
    request: bytes,
    fingerprint_key: bytes,
    payments_max: int,
    deadline: float | None = None,
    sender: str = "",
) -> list[PaymentIntent | InvalidArgument]:
    """A PayBatchRequest's payments decoded by the core, each on its own; a call over
    ``payments_max`` or with broken framing raises ``RequestUndecodable``."""
    decoded = decode_pay_batch_intents(
        INTENT_TYPES, request, fingerprint_key, payments_max, deadline, sender
    )
    return [InvalidArgument("request", d) if d.__class__ is str else d for d in decoded]


# What the core builds a decoded PayRequest into: the intent's types, the purposes with
# a member (any other number is UNSPECIFIED, as ``intent_of`` reads it), and the method
# kinds by number.
INTENT_TYPES = IntentTypes(
    PaymentIntent,
    Method,
    MethodDetail,
    [(p.value, p) for p in (Purpose.BILL_PAYMENT, Purpose.PREPAID_TOPUP)],
    Purpose.UNSPECIFIED,
    [MethodKind(k) for k in range(5)],
)


def normalize_channel(request: pb.PayRequest) -> None:
    """Lower-cases the ASCII letters of ``request.channel`` in place ("USSD" -> "ussd")."""
    channel = request.channel.translate(_CHANNEL_LOWER)
    if channel != request.channel:
        request.channel = channel


def _timestamp(us: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMicroseconds(us)
    return ts


def confirmation_msg(c: Confirmation) -> pb.SettlementConfirmation:
    return pb.SettlementConfirmation(
        confirmation_id=c.confirmation_id,
        ledger_sequence=c.ledger_sequence,
        settled_at=_timestamp(c.settled_at_us),
        gateway=c.gateway,
        gateway_reference=c.gateway_reference,
        balance_after=pb.Money(amount_minor=c.balance_after_minor, currency=c.currency),
        service_state_after=c.service_state_after.name,
    )


def pay_response(outcome: Outcome) -> pb.PayResponse:
    """A reply as the generated stubs build it: the reference the core's encoder
    (`encode_pay_responses`) is tested against; the servicer encodes in the core."""
    response = pb.PayResponse(
        payment_id=outcome.payment_id,
        idempotency_key=outcome.idempotency_key,
        status=int(outcome.status),
        decline_reason=outcome.decline_reason,
        decline_detail=outcome.decline_detail,
        replayed=outcome.replayed,
    )
    if outcome.confirmation is not None:
        response.confirmation.CopyFrom(confirmation_msg(outcome.confirmation))
    if outcome.fraud is not None:
        response.fraud.CopyFrom(fraud_msg(outcome.fraud))
    return response


def refund_response(o: RefundOutcome) -> pb.RefundResponse:
    """A refund's outcome as the contract's RefundResponse."""
    return pb.RefundResponse(
        refund_id=o.refund_id,
        payment_id=o.payment_id,
        idempotency_key=o.idempotency_key,
        status=int(o.status),  # type: ignore[arg-type]
        refunded_total=pb.Money(amount_minor=o.refunded_total_minor, currency=o.currency),
        gateway_reference=o.gateway_reference,
        replayed=o.replayed,
        decline_reason=o.decline_reason,
        decline_detail=o.decline_detail,
    )


def fraud_msg(f: FraudAssessment) -> pb.FraudAssessment:
    return pb.FraudAssessment(score=f.score, decision=f.decision, reasons=list(f.reasons))


def payment_msg(record: PaymentRecord) -> pb.Payment:
    """The reply to GetPayment."""
    i, o = record.intent, record.outcome
    payment = pb.Payment(
        payment_id=o.payment_id,
        idempotency_key=o.idempotency_key,
        account_id=i.account_id,
        msisdn=i.msisdn,
        amount=pb.Money(amount_minor=i.amount_minor, currency=i.currency),
        purpose=int(i.purpose),
        method_kind=i.method.kind.name,
        method_display=i.method.display,
        status=int(o.status),
        decline_reason=o.decline_reason,
        decline_detail=o.decline_detail,
        refunded=pb.Money(amount_minor=record.refunded_minor, currency=i.currency),
        created_at=_timestamp(record.created_at_us),
        channel=i.channel,
    )
    if o.confirmation is not None:
        payment.confirmation.CopyFrom(confirmation_msg(o.confirmation))
    if o.fraud is not None:
        payment.fraud.CopyFrom(fraud_msg(o.fraud))
    return payment


# The version of SettlementEvent's layout; a consumer checks it before reading the body.
EVENT_SCHEMA_VERSION = 1


def event_msg(event: OutboxEvent) -> pb.SettlementEvent:
    """An outbox event as the contract's SettlementEvent (WatchSettlements, the broker)."""
    p = event.payload
    message = pb.SettlementEvent(
        schema_version=EVENT_SCHEMA_VERSION,
        event_id=event.event_id,
        cursor=event.cursor,
        kind=event.kind,
        occurred_at=_timestamp(event.created_at_us),
        payment_id=event.payment_id,
        account_id=event.account_id,
    )

    def money(field: str) -> pb.Money:  # an amount of the event's currency
        return pb.Money(amount_minor=int(p[field]), currency=str(p["currency"]))

    if event.kind == "settlement":
        message.settled.CopyFrom(
            pb.PaymentSettled(
                amount=money("amount_minor"),
                purpose=int(p["purpose"]),
                confirmation=pb.SettlementConfirmation(
                    confirmation_id=str(p["confirmation_id"]),
                    ledger_sequence=int(p["ledger_sequence"]),
                    settled_at=_timestamp(event.created_at_us),
                    gateway=str(p["gateway"]),
                    gateway_reference=str(p["gateway_reference"]),
                    balance_after=money("balance_after_minor"),
                    service_state_after=str(p["service_state_after"]),
                ),
            )
        )
    elif event.kind == "decline":
        message.declined.CopyFrom(
            pb.PaymentDeclined(
                amount=money("amount_minor"),
                decline_reason=str(p["decline_reason"]),
                decline_detail=str(p["decline_detail"]),
            )
        )
    elif event.kind == "refund":
        message.refunded.CopyFrom(
            pb.PaymentRefunded(
                refund_id=str(p["refund_id"]),
                amount=money("amount_minor"),
                refunded_total=money("refunded_total_minor"),
                status=PaymentStatus[str(p["payment_status"])].value,  # type: ignore[arg-type]
            )
        )
    elif event.kind == "service_state":
        message.service_state_changed.CopyFrom(
            pb.ServiceStateChanged(
                msisdn=str(p["msisdn"]),
                state_before=str(p["state_before"]),
                state_after=str(p["state_after"]),
            )
        )
    elif event.kind == "adjustment":
        message.adjusted.CopyFrom(
            pb.BalanceAdjusted(
                adjustment_id=str(p["adjustment_id"]),
                amount=money("amount_minor"),
                reason=str(p["reason"]),
                source_system=str(p["source_system"]),
                balance_after=money("balance_after_minor"),
                service_state_after=str(p["service_state_after"]),
            )
        )
    elif event.kind == "subscriber_change":
        swapped = p["sim_swapped_at_s"]
        line = SubscriberRow(
            event.account_id, str(p["msisdn"]), Plan[str(p["plan"])],
            LineStatus[str(p["status"])], str(p["currency"]),
            int(p["opening_balance_minor"] or 0), str(p["country"]),
            None if swapped is None else int(swapped), int(p["created_at_s"]),
        )  # fmt: skip
        change = change_message(line, int(p["version"]), ChangeKind[str(p["change"])])
        message.subscriber_changed.CopyFrom(
            pb.SubscriberChanged(change=change, opened=bool(p["opened"]))
        )
    else:
        raise AssertionError(f"outbox event {event.event_id} has unknown kind {event.kind!r}")
    return message


# Cursors, like every integer the stores keep, are signed 64-bit: none is past this.
CURSOR_MAX = 2**63 - 1
# The longest account id a payment can have (the core's account_id rule).
ACCOUNT_ID_MAX = 64
# The longest idempotency key a payment or a refund can have, and the longest payment id
# looked up: a longer one names nothing the engine stores.
KEY_MAX = 255
# The longest refund reason kept, and the longest gateway name a report may give.
REASON_MAX = 1_024
GATEWAY_MAX = 64
# The longest source system an adjustment may name.
SOURCE_SYSTEM_MAX = 64
# The widest cutoff tolerance of a reconciliation: a day either side (seconds).
TOLERANCE_MAX_S = 86_400
# Kinds one WatchRequest may name: each known kind once, and as many again (repeats are
# harmless and dropped); more is refused.
WATCH_KINDS_MAX = 2 * len(EVENT_KINDS)
# The most bytes a request of each typed RPC can take with every field within its bound
# (a character is at most 4 bytes of UTF-8; each field adds a tag and a length of at
# most 3 bytes): a longer request is refused INVALID_ARGUMENT from its size alone,
# before it is parsed, so an oversized field is never copied into a message or a string.
# Reconcile's report is bounded by the transport (server.MESSAGE_BYTES_MAX, the same as
# the service's REPORT_BYTES_MAX).
_UTF8_MAX = 4
_FIELD_OVERHEAD = 4
REQUEST_BYTES_MAX = {
    # One of payment_id or idempotency_key.
    "GetPayment": _UTF8_MAX * KEY_MAX + _FIELD_OVERHEAD,
    # Key, payment id, reason and the amount (an int64 and a 3-letter currency).
    "Refund": _UTF8_MAX * (2 * KEY_MAX + REASON_MAX) + 4 * _FIELD_OVERHEAD + 24,
    # Key, account id, reason, source system, the amount and the flag.
    "AdjustBalance": _UTF8_MAX * (KEY_MAX + ACCOUNT_ID_MAX + REASON_MAX + SOURCE_SYSTEM_MAX + 3)
    + 7 * _FIELD_OVERHEAD
    + 24,
    # Cursor, account id, and WATCH_KINDS_MAX kinds of at most 32 characters each.
    "WatchSettlements": 16 + _UTF8_MAX * ACCOUNT_ID_MAX + WATCH_KINDS_MAX * (32 + _FIELD_OVERHEAD),
}


def largest_field(request: type[Message], data: bytes) -> str:
    """The name of the field taking the most bytes of ``data`` (a serialized ``request``),
    read from the wire format's top-level tags and lengths alone: nothing is copied, so
    an oversized request can be refused naming its field. "request" when the bytes do
    not frame (they are then not the request at all)."""
    sizes: dict[int, int] = {}
    at, end = 0, len(data)
    try:
        while at < end:
            tag, at = _varint(data, at)
            number, wire = tag >> 3, tag & 7
            start = at
            if wire == 0:
                _, at = _varint(data, at)
            elif wire == 1:
                at += 8
            elif wire == 2:
                length, at = _varint(data, at)
                at += length
            elif wire == 5:
                at += 4
            else:
                return "request"
            sizes[number] = sizes.get(number, 0) + at - start
    except IndexError:
        return "request"
    fields = request.DESCRIPTOR.fields_by_number
    named = [(size, fields[n].name) for n, size in sizes.items() if n in fields]
    return max(named)[1] if named else "request"


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80 or shift > 63:
            return value, at
        shift += 7


def text(field: str, value: str, longest: int) -> str:
    """``value`` if it has at most ``longest`` characters and no NUL (which PostgreSQL
    cannot store in text), else InvalidArgument on ``field``."""
    if len(value) > longest:
        raise InvalidArgument(field, f"at most {longest} characters, not {len(value)}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL")
    return value


def get_payment_arguments(request: pb.GetPaymentRequest) -> tuple[str, str]:
    """A GetPaymentRequest checked: (payment_id, idempotency_key), one of them set."""
    which = request.WhichOneof("key")
    if which is None:
        raise InvalidArgument("key", "payment_id or idempotency_key is required")
    return (
        text("payment_id", request.payment_id, KEY_MAX),
        text("idempotency_key", request.idempotency_key, KEY_MAX),
    )


def refund_arguments(
    request: pb.RefundRequest,
) -> tuple[str, str, int | None, str, str]:
    """A RefundRequest's bounds checked: key, payment id, amount (None: what is left),
    currency, reason. The refund itself checks the rest (positive amount, its currency)."""
    amount = request.amount if request.HasField("amount") else None
    return (
        text("idempotency_key", request.idempotency_key, KEY_MAX),
        text("payment_id", request.payment_id, KEY_MAX),
        amount.amount_minor if amount is not None else None,
        text("amount.currency", amount.currency, 3) if amount is not None else "",
        text("reason", request.reason, REASON_MAX),
    )


def adjust_arguments(request: pb.AdjustBalanceRequest) -> AdjustmentRequest:
    """An AdjustBalanceRequest's bounds checked (the adjustment checks the rest: a
    nonzero amount, the account and its currency)."""
    if not request.HasField("amount"):
        raise InvalidArgument("amount", "is required (amount_minor and currency)")
    return AdjustmentRequest(
        text("idempotency_key", request.idempotency_key, KEY_MAX),
        text("account_id", request.account_id, ACCOUNT_ID_MAX),
        request.amount.amount_minor,
        text("amount.currency", request.amount.currency, 3),
        text("reason", request.reason, REASON_MAX),
        text("source_system", request.source_system, SOURCE_SYSTEM_MAX),
        request.allow_negative_balance,
    )


def adjust_response(o: AdjustmentOutcome) -> pb.AdjustBalanceResponse:
    """An adjustment's outcome as the contract's AdjustBalanceResponse."""
    return pb.AdjustBalanceResponse(
        adjustment_id=o.adjustment_id,
        idempotency_key=o.idempotency_key,
        status=pb.APPLIED if o.applied else pb.ADJUSTMENT_DECLINED,
        balance_after=pb.Money(amount_minor=o.balance_after_minor, currency=o.currency),
        decline_reason=o.decline_reason,
        decline_detail=o.decline_detail,
        replayed=o.replayed,
    )


def watch_arguments(
    request: pb.WatchRequest, kinds_known: tuple[str, ...]
) -> tuple[int, list[str], str]:
    """A WatchRequest checked: cursor, kinds (each once, in order), account."""
    if request.from_cursor > CURSOR_MAX:
        raise InvalidArgument(
            "from_cursor", f"at most {CURSOR_MAX} (2^63-1), not {request.from_cursor}"
        )
    if len(request.kinds) > WATCH_KINDS_MAX:
        raise InvalidArgument("kinds", f"at most {WATCH_KINDS_MAX}, not {len(request.kinds)}")
    unknown = sorted(set(request.kinds) - set(kinds_known))
    if unknown:
        raise InvalidArgument(
            "kinds", f"unknown {[k[:40] for k in unknown[:8]]}; expected any of {list(kinds_known)}"
        )
    kinds = list(dict.fromkeys(request.kinds))
    return request.from_cursor, kinds, text("account_id", request.account_id, ACCOUNT_ID_MAX)


_MAPPING_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def refund_access(
    caller: str, key: str, payment_id: str, amount_minor: int | None, currency: str
) -> dict[str, object]:
    """The audit row of a refund asked for by ``caller``: before the work, so a refund
    the gateway then declines or that fails is on record too."""
    return {
        "kind": ACCESS_REFUND,
        "caller": caller,
        "refund_key": key,
        "payment_id": payment_id,
        "amount_minor": amount_minor,  # None: what is left
        "currency": currency,
        "at_us": time.time_ns() // 1_000,
    }


def reconcile_access(caller: str, gateway: str, report_csv: bytes) -> dict[str, object]:
    """The audit row of a reconciliation run asked for by ``caller``: the report itself
    is not kept, its SHA-256 and size are."""
    return {
        "kind": ACCESS_RECONCILE,
        "caller": caller,
        "gateway": gateway,
        "report_sha256": hashlib.sha256(report_csv).hexdigest(),
        "report_bytes": len(report_csv),
        "at_us": time.time_ns() // 1_000,
    }


def reconcile_arguments(
    request: pb.ReconcileRequest, mappings_dir: Path
) -> tuple[str, bytes, ColumnMapping | None, int, date | None]:
    """A ReconcileRequest checked and decoded: gateway, report, mapping, tolerance, day."""
    if not request.gateway:
        raise InvalidArgument("gateway", "the gateway that sent the report is required")
    text("gateway", request.gateway, GATEWAY_MAX)
    if not request.report_csv:
        raise InvalidArgument("report_csv", "the report is empty")
    mapping = None
    if request.column_mapping:
        if not _MAPPING_NAME.fullmatch(request.column_mapping):
            raise InvalidArgument("column_mapping", "a mapping name is 1 to 64 of [A-Za-z0-9_-]")
        path = mappings_dir / f"{request.column_mapping}.toml"
        if not path.exists():
            raise InvalidArgument("column_mapping", f"no mapping {request.column_mapping!r}")
        mapping = ColumnMapping.load(path)
    day = None
    if request.business_day:
        try:
            day = date.fromisoformat(request.business_day)
        except ValueError:
            raise InvalidArgument("business_day", "must be YYYY-MM-DD") from None
    if request.cutoff_tolerance_s > TOLERANCE_MAX_S:
        raise InvalidArgument(
            "cutoff_tolerance_s",
            f"at most {TOLERANCE_MAX_S} (a day), not {request.cutoff_tolerance_s}",
        )
    tolerance_s = request.cutoff_tolerance_s or DEFAULT_TOLERANCE_S
    return request.gateway, request.report_csv, mapping, tolerance_s, day


def reconcile_report(run: ReconcileRun) -> bytes:
    """The reply to Reconcile, as the bytes of its ReconcileReport: encoded by the core
    from the outcome it holds, without the GIL and without a message per discrepancy
    (engine/src/reconcile/reply.rs; tests/test_reconcile_reply.py compares it with
    ``reconcile_message``'s encoding)."""
    r = run.result
    return r.held.encode_report(r.gateway, r.business_day.isoformat())


def reconcile_message(run: ReconcileRun) -> pb.ReconcileReport:
    """The reply to Reconcile as a Python message: what the core's encoding is compared
    with, and the reference of its fields."""
    r = run.result
    report = pb.ReconcileReport(
        records=r.records,
        matched=r.matched,
        gateway=r.gateway,
        business_day=r.business_day.isoformat(),
    )
    report.counts_by_category.update(r.counts())
    for d in r.discrepancies:
        status, note = run.states[d.discrepancy_id]
        report.discrepancies.append(
            pb.Discrepancy(
                discrepancy_id=d.discrepancy_id,
                category=d.category,
                payment_id=d.payment_id,
                gateway_reference=d.gateway_reference,
                gateway_amount=_money(d.gateway_amount_minor, d.currency),
                billing_amount=_money(d.billing_amount_minor, d.currency),
                status=status,
                note=note,
                detail=d.detail,
            )
        )
    return report


def _money(amount_minor: int | None, currency: str) -> pb.Money | None:
    return None if amount_minor is None else pb.Money(amount_minor=amount_minor, currency=currency)


# A SubscriberChange at its bounds (an account id of 64 characters, an E.164 number, a
# plan, a status, a currency, a country, two times and three integers) is well under
# this; a larger one is refused from its size before it is parsed.
SUBSCRIBER_CHANGE_BYTES_MAX = 1_024


def add_subscriber_change(batch: SubscriberChanges, data: bytes, label: str) -> None:
    """One frame of an UpsertSubscribers stream, parsed, checked and appended to
    ``batch``; else ``InvalidArgument`` naming ``label`` and the field."""
    if len(data) > SUBSCRIBER_CHANGE_BYTES_MAX:
        field = largest_field(pb.SubscriberChange, data)
        raise InvalidArgument(
            f"{label}.{field}",
            f"over its bound (the change is {len(data)} bytes, of the"
            f" {SUBSCRIBER_CHANGE_BYTES_MAX} a SubscriberChange can take)",
        )
    try:
        change = pb.SubscriberChange.FromString(data)
    except DecodeError:
        raise InvalidArgument(
            label, "not a SubscriberChange: its bytes do not parse as quickpay.v1.SubscriberChange"
        ) from None
    add_change_message(batch, change, label)


def add_subscriber_message(batch: SubscriberChanges, data: bytes, label: str) -> None:
    """One message of the --subscriber-events feed, a SubscriberChange protobuf-encoded
    or in protobuf's JSON form (its first character other than white space is "{",
    which no protobuf encoding of the message starts with), checked and appended to
    ``batch``; else ``InvalidArgument`` naming ``label`` (and the field)."""
    if data.lstrip()[:1] != b"{":
        add_subscriber_change(batch, data, label)
        return
    if len(data) > 4 * SUBSCRIBER_CHANGE_BYTES_MAX:
        raise InvalidArgument(label, f"{len(data)} bytes of JSON, over the bound of a change")
    change = pb.SubscriberChange()
    try:
        json_format.Parse(data, change)
    except json_format.ParseError as err:
        raise InvalidArgument(label, f"not a SubscriberChange in JSON: {str(err)[:200]}") from None
    add_change_message(batch, change, label)


def add_change_message(batch: SubscriberChanges, change: pb.SubscriberChange, label: str) -> None:
    """A parsed SubscriberChange checked and appended to ``batch`` (``InvalidArgument``
    names ``label`` and the field)."""
    batch.add(
        label,
        change.account_id,
        change.version,
        change.kind,
        change.msisdn,
        change.plan,
        change.status,
        change.currency,
        change.country,
        change.sim_swapped_at.seconds if change.HasField("sim_swapped_at") else None,
        change.created_at.seconds if change.HasField("created_at") else None,
        change.opening_balance_minor,
    )


def change_message(
    row: SubscriberRow, version: int, kind: ChangeKind = ChangeKind.ACTIVATION
) -> pb.SubscriberChange:
    """A line of the subscriber CSV as a change (``quickpay subscribers import
    --listen``): its balance is the opening balance of a line the engine does not hold."""
    change = pb.SubscriberChange(
        account_id=row.account_id,
        version=version,
        kind=int(kind),  # type: ignore[arg-type]
        msisdn=row.msisdn,
        plan=row.plan.name,
        status=row.status.name,
        currency=row.currency,
        country=row.country,
        created_at=Timestamp(seconds=row.created_at_s),
        opening_balance_minor=row.balance_minor,
    )
    if row.sim_swapped_at_s is not None:
        change.sim_swapped_at.seconds = row.sim_swapped_at_s
    return change
