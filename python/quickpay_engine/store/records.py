"""Payment history rows back into domain records, the same for every store."""

from __future__ import annotations

from quickpay_engine.domain import (
    Confirmation,
    FraudAssessment,
    LineStatus,
    Method,
    MethodKind,
    Outcome,
    PaymentIntent,
    PaymentRecord,
    PaymentStatus,
    Purpose,
)

# The payments columns `payment_record` reads, in its order.
PAYMENT_COLUMNS = (
    "seq, payment_id, idempotency_key, fingerprint, account_id, msisdn, amount_minor,"
    " currency, purpose, method_kind, method_display, channel, device_id, ip, status,"
    " decline_reason, decline_detail, confirmation_id, settled_at_us, balance_after_minor,"
    " service_state_after, gateway, gateway_reference, fraud_score, fraud_decision,"
    " fraud_reasons, refunded_minor, created_at_us, sender"
)


def payment_record(row: tuple) -> PaymentRecord:  # type: ignore[type-arg]
    """A payments row, selected as PAYMENT_COLUMNS, as the domain's record."""
    (
        seq, payment_id, key, fingerprint, account_id, msisdn, amount, currency, purpose,
        method_kind, method_display, channel, device_id, ip, status, reason, detail,
        confirmation_id, settled_at_us, balance_after, state_after, gateway, gateway_ref,
        fraud_score, fraud_decision, fraud_reasons, refunded, created_at_us, sender,
    ) = row  # fmt: skip
    intent = PaymentIntent(
        idempotency_key=key,
        fingerprint=fingerprint,
        account_id=account_id,
        msisdn=msisdn,
        amount_minor=amount,
        currency=currency,
        purpose=Purpose(purpose),
        method=Method(MethodKind(method_kind), method_display),
        channel=channel,
        device_id=device_id,
        ip=ip,
        sender=sender,
    )
    confirmation = None
    if confirmation_id is not None:
        confirmation = Confirmation(
            confirmation_id,
            seq,
            settled_at_us,
            gateway,
            gateway_ref,
            balance_after,
            currency,
            LineStatus(state_after),
        )
    fraud = None
    if fraud_score is not None:
        reasons = tuple(fraud_reasons.split(",")) if fraud_reasons else ()
        fraud = FraudAssessment(fraud_score, fraud_decision, reasons)
    outcome = Outcome(
        payment_id, key, PaymentStatus(status), reason, detail, confirmation, fraud=fraud
    )
    return PaymentRecord(intent, outcome, created_at_us, refunded)
