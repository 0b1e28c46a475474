import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_UNSPECIFIED: _ClassVar[Purpose]
    BILL_PAYMENT: _ClassVar[Purpose]
    PREPAID_TOPUP: _ClassVar[Purpose]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    SETTLED: _ClassVar[PaymentStatus]
    DECLINED: _ClassVar[PaymentStatus]
    FAILED: _ClassVar[PaymentStatus]
    REFUNDED: _ClassVar[PaymentStatus]
    PARTIALLY_REFUNDED: _ClassVar[PaymentStatus]

class AdjustmentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADJUSTMENT_STATUS_UNSPECIFIED: _ClassVar[AdjustmentStatus]
    APPLIED: _ClassVar[AdjustmentStatus]
    ADJUSTMENT_DECLINED: _ClassVar[AdjustmentStatus]

class SubscriberChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIBER_CHANGE_KIND_UNSPECIFIED: _ClassVar[SubscriberChangeKind]
    ACTIVATION: _ClassVar[SubscriberChangeKind]
    STATUS_CHANGE: _ClassVar[SubscriberChangeKind]
    SIM_SWAP: _ClassVar[SubscriberChangeKind]
    MSISDN_CHANGE: _ClassVar[SubscriberChangeKind]
    PLAN_CHANGE: _ClassVar[SubscriberChangeKind]
PURPOSE_UNSPECIFIED: Purpose
BILL_PAYMENT: Purpose
PREPAID_TOPUP: Purpose
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
SETTLED: PaymentStatus
DECLINED: PaymentStatus
FAILED: PaymentStatus
REFUNDED: PaymentStatus
PARTIALLY_REFUNDED: PaymentStatus
ADJUSTMENT_STATUS_UNSPECIFIED: AdjustmentStatus
APPLIED: AdjustmentStatus
ADJUSTMENT_DECLINED: AdjustmentStatus
SUBSCRIBER_CHANGE_KIND_UNSPECIFIED: SubscriberChangeKind
ACTIVATION: SubscriberChangeKind
STATUS_CHANGE: SubscriberChangeKind
SIM_SWAP: SubscriberChangeKind
MSISDN_CHANGE: SubscriberChangeKind
PLAN_CHANGE: SubscriberChangeKind

class Money(_message.Message):
    __slots__ = ("amount_minor", "currency")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    currency: str
    def __init__(self, amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Card(_message.Message):
    __slots__ = ("pan", "expiry_month", "expiry_year")
    PAN_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_MONTH_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_YEAR_FIELD_NUMBER: _ClassVar[int]
    pan: str
    expiry_month: int
    expiry_year: int
    def __init__(self, pan: _Optional[str] = ..., expiry_month: _Optional[int] = ..., expiry_year: _Optional[int] = ...) -> None: ...

class Wallet(_message.Message):
    __slots__ = ("provider", "wallet_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    wallet_id: str
    def __init__(self, provider: _Optional[str] = ..., wallet_id: _Optional[str] = ...) -> None: ...

class BankAccount(_message.Message):
    __slots__ = ("iban",)
    IBAN_FIELD_NUMBER: _ClassVar[int]
    iban: str
    def __init__(self, iban: _Optional[str] = ...) -> None: ...

class CarrierBalance(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PaymentMethod(_message.Message):
    __slots__ = ("card", "wallet", "bank_account", "carrier_balance")
    CARD_FIELD_NUMBER: _ClassVar[int]
    WALLET_FIELD_NUMBER: _ClassVar[int]
    BANK_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CARRIER_BALANCE_FIELD_NUMBER: _ClassVar[int]
    card: Card
    wallet: Wallet
    bank_account: BankAccount
    carrier_balance: CarrierBalance
    def __init__(self, card: _Optional[_Union[Card, _Mapping]] = ..., wallet: _Optional[_Union[Wallet, _Mapping]] = ..., bank_account: _Optional[_Union[BankAccount, _Mapping]] = ..., carrier_balance: _Optional[_Union[CarrierBalance, _Mapping]] = ...) -> None: ...

class PayRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "msisdn", "amount", "purpose", "method", "channel", "device_id", "ip", "subscriber_assertion")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_ASSERTION_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    msisdn: str
    amount: Money
    purpose: Purpose
    method: PaymentMethod
    channel: str
    device_id: str
    ip: str
    subscriber_assertion: str
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., msisdn: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., method: _Optional[_Union[PaymentMethod, _Mapping]] = ..., channel: _Optional[str] = ..., device_id: _Optional[str] = ..., ip: _Optional[str] = ..., subscriber_assertion: _Optional[str] = ...) -> None: ...

class FraudAssessment(_message.Message):
    __slots__ = ("score", "decision", "reasons")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    score: int
    decision: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, score: _Optional[int] = ..., decision: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class SettlementConfirmation(_message.Message):
    __slots__ = ("confirmation_id", "ledger_sequence", "settled_at", "gateway", "gateway_reference", "balance_after", "service_state_after")
    CONFIRMATION_ID_FIELD_NUMBER: _ClassVar[int]
    LEDGER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_AT_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_STATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    confirmation_id: str
    ledger_sequence: int
    settled_at: _timestamp_pb2.Timestamp
    gateway: str
    gateway_reference: str
    balance_after: Money
    service_state_after: str
    def __init__(self, confirmation_id: _Optional[str] = ..., ledger_sequence: _Optional[int] = ..., settled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gateway: _Optional[str] = ..., gateway_reference: _Optional[str] = ..., balance_after: _Optional[_Union[Money, _Mapping]] = ..., service_state_after: _Optional[str] = ...) -> None: ...

class PayResponse(_message.Message):
    __slots__ = ("payment_id", "idempotency_key", "status", "decline_reason", "decline_detail", "fraud", "confirmation", "replayed")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    DECLINE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    FRAUD_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    idempotency_key: str
    status: PaymentStatus
    decline_reason: str
    decline_detail: str
    fraud: FraudAssessment
    confirmation: SettlementConfirmation
    replayed: bool
    def __init__(self, payment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., decline_reason: _Optional[str] = ..., decline_detail: _Optional[str] = ..., fraud: _Optional[_Union[FraudAssessment, _Mapping]] = ..., confirmation: _Optional[_Union[SettlementConfirmation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PayBatchRequest(_message.Message):
    __slots__ = ("payments",)
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[PayRequest]
    def __init__(self, payments: _Optional[_Iterable[_Union[PayRequest, _Mapping]]] = ...) -> None: ...

class PayBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PayResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[PayResponse, _Mapping]]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "idempotency_key")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    idempotency_key: str
    def __init__(self, payment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_id", "idempotency_key", "account_id", "msisdn", "amount", "purpose", "method_kind", "method_display", "status", "decline_reason", "decline_detail", "fraud", "confirmation", "refunded", "created_at", "channel")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    METHOD_KIND_FIELD_NUMBER: _ClassVar[int]
    METHOD_DISPLAY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    DECLINE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    FRAUD_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    idempotency_key: str
    account_id: str
    msisdn: str
    amount: Money
    purpose: Purpose
    method_kind: str
    method_display: str
    status: PaymentStatus
    decline_reason: str
    decline_detail: str
    fraud: FraudAssessment
    confirmation: SettlementConfirmation
    refunded: Money
    created_at: _timestamp_pb2.Timestamp
    channel: str
    def __init__(self, payment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., msisdn: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., method_kind: _Optional[str] = ..., method_display: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., decline_reason: _Optional[str] = ..., decline_detail: _Optional[str] = ..., fraud: _Optional[_Union[FraudAssessment, _Mapping]] = ..., confirmation: _Optional[_Union[SettlementConfirmation, _Mapping]] = ..., refunded: _Optional[_Union[Money, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channel: _Optional[str] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("idempotency_key", "payment_id", "amount", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    payment_id: str
    amount: Money
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("refund_id", "payment_id", "idempotency_key", "status", "refunded_total", "gateway_reference", "replayed", "decline_reason", "decline_detail")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    DECLINE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    payment_id: str
    idempotency_key: str
    status: PaymentStatus
    refunded_total: Money
    gateway_reference: str
    replayed: bool
    decline_reason: str
    decline_detail: str
    def __init__(self, refund_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., refunded_total: _Optional[_Union[Money, _Mapping]] = ..., gateway_reference: _Optional[str] = ..., replayed: _Optional[bool] = ..., decline_reason: _Optional[str] = ..., decline_detail: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("from_cursor", "kinds", "account_id")
    FROM_CURSOR_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    from_cursor: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    account_id: str
    def __init__(self, from_cursor: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ..., account_id: _Optional[str] = ...) -> None: ...

class PaymentSettled(_message.Message):
    __slots__ = ("amount", "purpose", "confirmation")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    amount: Money
    purpose: Purpose
    confirmation: SettlementConfirmation
    def __init__(self, amount: _Optional[_Union[Money, _Mapping]] = ..., purpose: _Optional[_Union[Purpose, str]] = ..., confirmation: _Optional[_Union[SettlementConfirmation, _Mapping]] = ...) -> None: ...

class PaymentDeclined(_message.Message):
    __slots__ = ("amount", "decline_reason", "decline_detail")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    DECLINE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    amount: Money
    decline_reason: str
    decline_detail: str
    def __init__(self, amount: _Optional[_Union[Money, _Mapping]] = ..., decline_reason: _Optional[str] = ..., decline_detail: _Optional[str] = ...) -> None: ...

class PaymentRefunded(_message.Message):
    __slots__ = ("refund_id", "amount", "refunded_total", "status")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    amount: Money
    refunded_total: Money
    status: PaymentStatus
    def __init__(self, refund_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., refunded_total: _Optional[_Union[Money, _Mapping]] = ..., status: _Optional[_Union[PaymentStatus, str]] = ...) -> None: ...

class ServiceStateChanged(_message.Message):
    __slots__ = ("msisdn", "state_before", "state_after")
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    STATE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    STATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    msisdn: str
    state_before: str
    state_after: str
    def __init__(self, msisdn: _Optional[str] = ..., state_before: _Optional[str] = ..., state_after: _Optional[str] = ...) -> None: ...

class BalanceAdjusted(_message.Message):
    __slots__ = ("adjustment_id", "amount", "reason", "source_system", "balance_after", "service_state_after")
    ADJUSTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_STATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    adjustment_id: str
    amount: Money
    reason: str
    source_system: str
    balance_after: Money
    service_state_after: str
    def __init__(self, adjustment_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ..., source_system: _Optional[str] = ..., balance_after: _Optional[_Union[Money, _Mapping]] = ..., service_state_after: _Optional[str] = ...) -> None: ...

class SubscriberChanged(_message.Message):
    __slots__ = ("change", "opened")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    change: SubscriberChange
    opened: bool
    def __init__(self, change: _Optional[_Union[SubscriberChange, _Mapping]] = ..., opened: _Optional[bool] = ...) -> None: ...

class SettlementEvent(_message.Message):
    __slots__ = ("schema_version", "event_id", "cursor", "kind", "occurred_at", "payment_id", "account_id", "settled", "declined", "refunded", "service_state_changed", "adjusted", "subscriber_changed")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    cursor: int
    kind: str
    occurred_at: _timestamp_pb2.Timestamp
    payment_id: str
    account_id: str
    settled: PaymentSettled
    declined: PaymentDeclined
    refunded: PaymentRefunded
    service_state_changed: ServiceStateChanged
    adjusted: BalanceAdjusted
    subscriber_changed: SubscriberChanged
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., cursor: _Optional[int] = ..., kind: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payment_id: _Optional[str] = ..., account_id: _Optional[str] = ..., settled: _Optional[_Union[PaymentSettled, _Mapping]] = ..., declined: _Optional[_Union[PaymentDeclined, _Mapping]] = ..., refunded: _Optional[_Union[PaymentRefunded, _Mapping]] = ..., service_state_changed: _Optional[_Union[ServiceStateChanged, _Mapping]] = ..., adjusted: _Optional[_Union[BalanceAdjusted, _Mapping]] = ..., subscriber_changed: _Optional[_Union[SubscriberChanged, _Mapping]] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("gateway", "report_csv", "column_mapping", "cutoff_tolerance_s", "business_day")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    REPORT_CSV_FIELD_NUMBER: _ClassVar[int]
    COLUMN_MAPPING_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_TOLERANCE_S_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_DAY_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    report_csv: bytes
    column_mapping: str
    cutoff_tolerance_s: int
    business_day: str
    def __init__(self, gateway: _Optional[str] = ..., report_csv: _Optional[bytes] = ..., column_mapping: _Optional[str] = ..., cutoff_tolerance_s: _Optional[int] = ..., business_day: _Optional[str] = ...) -> None: ...

class Discrepancy(_message.Message):
    __slots__ = ("discrepancy_id", "category", "payment_id", "gateway_reference", "gateway_amount", "billing_amount", "status", "note", "detail")
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BILLING_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    discrepancy_id: str
    category: str
    payment_id: str
    gateway_reference: str
    gateway_amount: Money
    billing_amount: Money
    status: str
    note: str
    detail: str
    def __init__(self, discrepancy_id: _Optional[str] = ..., category: _Optional[str] = ..., payment_id: _Optional[str] = ..., gateway_reference: _Optional[str] = ..., gateway_amount: _Optional[_Union[Money, _Mapping]] = ..., billing_amount: _Optional[_Union[Money, _Mapping]] = ..., status: _Optional[str] = ..., note: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ReconcileReport(_message.Message):
    __slots__ = ("records", "matched", "discrepancies", "counts_by_category", "gateway", "business_day")
    class CountsByCategoryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_BY_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_DAY_FIELD_NUMBER: _ClassVar[int]
    records: int
    matched: int
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    counts_by_category: _containers.ScalarMap[str, int]
    gateway: str
    business_day: str
    def __init__(self, records: _Optional[int] = ..., matched: _Optional[int] = ..., discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ..., counts_by_category: _Optional[_Mapping[str, int]] = ..., gateway: _Optional[str] = ..., business_day: _Optional[str] = ...) -> None: ...

class AdjustBalanceRequest(_message.Message):
    __slots__ = ("idempotency_key", "account_id", "amount", "reason", "source_system", "allow_negative_balance")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEGATIVE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    account_id: str
    amount: Money
    reason: str
    source_system: str
    allow_negative_balance: bool
    def __init__(self, idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ..., source_system: _Optional[str] = ..., allow_negative_balance: _Optional[bool] = ...) -> None: ...

class AdjustBalanceResponse(_message.Message):
    __slots__ = ("adjustment_id", "idempotency_key", "status", "balance_after", "decline_reason", "decline_detail", "replayed")
    ADJUSTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    DECLINE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    adjustment_id: str
    idempotency_key: str
    status: AdjustmentStatus
    balance_after: Money
    decline_reason: str
    decline_detail: str
    replayed: bool
    def __init__(self, adjustment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., status: _Optional[_Union[AdjustmentStatus, str]] = ..., balance_after: _Optional[_Union[Money, _Mapping]] = ..., decline_reason: _Optional[str] = ..., decline_detail: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SubscriberChange(_message.Message):
    __slots__ = ("account_id", "version", "kind", "msisdn", "plan", "status", "currency", "country", "sim_swapped_at", "created_at", "opening_balance_minor")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    SIM_SWAPPED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OPENING_BALANCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    version: int
    kind: SubscriberChangeKind
    msisdn: str
    plan: str
    status: str
    currency: str
    country: str
    sim_swapped_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    opening_balance_minor: int
    def __init__(self, account_id: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[_Union[SubscriberChangeKind, str]] = ..., msisdn: _Optional[str] = ..., plan: _Optional[str] = ..., status: _Optional[str] = ..., currency: _Optional[str] = ..., country: _Optional[str] = ..., sim_swapped_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., opening_balance_minor: _Optional[int] = ...) -> None: ...

class UpsertSummary(_message.Message):
    __slots__ = ("received", "applied", "created", "stale", "batches")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    received: int
    applied: int
    created: int
    stale: int
    batches: int
    def __init__(self, received: _Optional[int] = ..., applied: _Optional[int] = ..., created: _Optional[int] = ..., stale: _Optional[int] = ..., batches: _Optional[int] = ...) -> None: ...
