"""Type stubs of the compiled core (engine/src/python.rs and engine/src/python/*.rs)."""

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, TypeVar, final

import numpy as np
import numpy.typing as npt

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

_A = TypeVar("_A")

ENGINE_VERSION: str
"""The Rust crate's version (engine/Cargo.toml) this core was built from."""
BATCH_MAX: int
"""At most this many payments in one ``Engine.validate`` call (else ``BatchTooLarge``)."""
NO_TIME: int
"""In time columns, "no such moment" (a SIM never swapped): ``i64::MIN``."""

class EngineError(Exception):
    """Base class of every engine error."""

class BatchTooLarge(EngineError):
    """A batch is over the engine's bound."""

class InvalidBatch(EngineError):
    """Columns of unequal length or an unknown enum number."""

class ColumnError(InvalidBatch):
    """A column has the wrong dtype, shape or memory layout; the message names it."""

class StateRefused(InvalidBatch):
    """A hold, release, settlement or state batch was refused; none of it was applied."""

class CapacityExceeded(EngineError):
    """An engine table is at its bound."""

class RequestUndecodable(EngineError):
    """The request bytes are not the contract's message; the message names the field."""

class ConfigInvalid(EngineError):
    """The engine configuration was refused; the message names the setting."""

@final
class Engine:
    """The engine: one per process, the single owner of the in-memory state.

    ``config_json`` is the engine configuration as a JSON object; every field is
    optional (``default_engine_config()`` shows them all with their defaults) and an
    unknown field is refused with ``ConfigInvalid``. Fields:

    - ``bill_payment_amount_min``, ``bill_payment_amount_max``,
      ``prepaid_topup_amount_min``, ``prepaid_topup_amount_max``: per-purpose amount
      bounds (format layer). Every amount setting is ``{"major": int, "minor":
      {"EUR": int, ...}}``: ``major`` whole units scaled by each currency's exponent,
      except currencies named in ``minor``, given in minor units outright.
    - ``method_matrix``: ``{"BILL_PAYMENT" | "PREPAID_TOPUP": {channel | "*": [method,
      ...]}}`` with methods ``CARD``, ``WALLET``, ``BANK_ACCOUNT``, ``CARRIER_BALANCE``;
      ``"*"`` covers every other channel and an empty one. At most 32 channels each.
    - ``blocked_bins``: 6- or 8-digit card BIN prefixes to decline (at most 100,000).
    - ``wallet_providers``: accepted ``Wallet.provider`` values (at most 64).
    - ``method_amount_max``: ``{method: amounts}``, the largest amount per method.
    - ``prepaid_balance_max``: the prepaid plan maximum a top-up may not exceed.
    - ``bill_overpay_allowance``: how far a bill payment may exceed what is owed.
    - ``daily_count_max``, ``monthly_count_max`` (int) and ``daily_amount_max``,
      ``monthly_amount_max`` (amounts): settled payments per subscriber per UTC day and
      calendar month, as counted by ``record_settled``.
    - ``assertion_keys``: ``[{"key_id": str, "secret_hex": str}]``, the HMAC-SHA256
      keys that may sign subscriber assertions (several during a rotation; at most 16;
      secrets of at least 32 bytes).
    - ``card_expiry_years_ahead_max``: how far past the current year an expiry may lie.
    """

    def __new__(cls, config_json: str | None = None) -> Engine: ...
    def configure(self, config_json: str) -> None:
        """Replaces the configuration at once (key rotation without a restart);
        subscribers, holds and counters are kept. On error the old one stays."""
    def config_json(self) -> str:
        """The configuration in force, as JSON, defaults filled in."""
    def subscriber_count(self) -> int:
        """Number of subscribers the engine knows."""
    def upsert_subscribers(
        self,
        account_ids: list[str],
        msisdns: list[str],
        plans: npt.NDArray[np.uint8],
        statuses: npt.NDArray[np.uint8],
        currencies: list[str],
        balances_minor: npt.NDArray[np.int64],
        countries: list[str],
        sim_swapped_at_s: npt.NDArray[np.int64],
        created_at_s: npt.NDArray[np.int64],
    ) -> None:
        """Inserts or replaces subscribers, given as columns of equal length. Plans:
        1 prepaid, 2 postpaid; statuses: 1 active, 2 suspended, 3 barred, 4 closed;
        ``balances_minor``: prepaid credit or postpaid amount owed (positive);
        ``sim_swapped_at_s``: ``NO_TIME`` for never. Holds and counters of a known
        account are kept. A subscriber whose account id is not 1 to 64 of
        ``[A-Za-z0-9_-]`` or whose msisdn is over 16 bytes raises ``InvalidBatch``."""
    def load_subscribers_sqlite(self, path: str) -> int:
        """Loads every subscriber of the SQLite store at ``path`` into the table
        (inserting or replacing, as ``upsert_subscribers``), read by the core with no
        Python object per subscriber; returns how many rows were read."""
    def subscriber_profiles(
        self, account_ids: list[str]
    ) -> tuple[npt.NDArray[np.uint8], list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(plans, countries, sim_swapped_at_s, created_at_s) of a batch of accounts, in
        order; an unknown account has plan 0, country "", ``NO_TIME`` and 0."""
    def subscriber_table_bytes(self) -> int:
        """Bytes the subscriber table holds (its allocations)."""
    def set_states(
        self,
        account_ids: list[str],
        balances_minor: npt.NDArray[np.int64],
        statuses: npt.NDArray[np.uint8],
    ) -> None:
        """Records settled balances and service states, all or nothing
        (``StateRefused`` for an unknown account)."""
    def reserve_holds(self, account_ids: list[str], amounts_minor: npt.NDArray[np.int64]) -> None:
        """Puts holds on the accounts' credit (carrier-balance payments in flight), all
        or nothing. ``validate`` checks carrier-balance payments against the credit
        less these holds; the caller releases them when the payment ends."""
    def release_holds(self, account_ids: list[str], amounts_minor: npt.NDArray[np.int64]) -> None:
        """Removes holds, all or nothing; releasing more than is held is refused."""
    def held_minor(self, account_id: str) -> int | None:
        """The amount on hold for an account; None for an unknown account."""
    def record_settled(
        self,
        account_ids: list[str],
        amounts_minor: npt.NDArray[np.int64],
        settled_at_s: npt.NDArray[np.int64],
    ) -> None:
        """Counts settled payments against the daily and monthly limits, all or
        nothing. ``settled_at_s`` is each settlement's Unix time from the caller's
        clock; a settlement for a day or month already past does not count against
        the current one."""
    def validate(
        self,
        idempotency_keys: npt.NDArray[np.bytes_],
        account_ids: npt.NDArray[np.bytes_],
        msisdns: npt.NDArray[np.bytes_],
        amounts_minor: npt.NDArray[np.int64],
        currencies: npt.NDArray[np.bytes_],
        purposes: npt.NDArray[np.uint8],
        methods: npt.NDArray[np.uint8],
        card_pans: npt.NDArray[np.bytes_],
        card_expiry_months: npt.NDArray[np.uint32],
        card_expiry_years: npt.NDArray[np.uint32],
        wallet_providers: npt.NDArray[np.bytes_],
        wallet_ids: npt.NDArray[np.bytes_],
        ibans: npt.NDArray[np.bytes_],
        channels: npt.NDArray[np.bytes_],
        device_ids: npt.NDArray[np.bytes_],
        ips: npt.NDArray[np.bytes_],
        assertions: npt.NDArray[np.bytes_],
        *,
        now_s: int,
    ) -> npt.NDArray[np.uint16]:
        """Validates a batch at the clock ``now_s`` (Unix seconds): formats, account
        authentication, method authorization, balance and limits, stopping at each
        payment's first failure. Returns one reject code per row, 0 for passed (see
        ``reject_codes()``). Text columns are 1-D C-contiguous fixed-width byte
        arrays (dtype ``S<n>``; a value ends at its first NUL, the rest of the cell
        is padding; build them with
        ``quickpay_engine.settlement.validation.text_column``); numeric columns have
        exactly the dtype shown, native byte order. Anything else raises
        ``ColumnError``; unequal lengths ``InvalidBatch``; more than ``BATCH_MAX``
        rows ``BatchTooLarge``. Purposes: 1 bill payment, 2 prepaid top-up; methods:
        1 card, 2 wallet, 3 bank account, 4 carrier balance, 0 none. Fields that do
        not apply to a row's method, and absent optional fields, are empty. The GIL
        is released for the work."""

def reject_codes() -> list[tuple[int, str, str, str]]:
    """Every reject code as (number, name, field, text). 1..99 are format failures
    (INVALID_ARGUMENT naming ``field``), 100 and up business declines."""

def currency_exponent(code: str) -> int | None:
    """The ISO 4217 minor-unit exponent of a currency, or None when it is not one."""

def currency_numeric(code: str) -> int | None:
    """The ISO 4217 numeric code of a currency (978 for EUR), or None when it is not one."""

def default_engine_config() -> str:
    """The default engine configuration, as JSON."""

def sign_assertion(
    key_id: str, secret: bytes, account_id: str, msisdn: str, expires_at_s: int
) -> str:
    """A subscriber assertion ``v1.<key_id>.<account_id>.<msisdn>.<expires_at_s>.<hex
    HMAC-SHA256 of everything before the last dot>``, signed with ``secret``."""

def check_msisdns(msisdns: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint16]:
    """The MSISDN format check alone over an ``S<n>`` column: 0 or a reject code."""

def check_pans(pans: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint16]:
    """The card number check alone (digits, Luhn, scheme, length): 0 or a code."""

def check_ibans(ibans: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint16]:
    """The IBAN check alone (charset, country, length, structure, mod 97-10)."""

# ---- The durable ledger (engine/src/python/ledger.rs) ---------------------------------
#
# 128-bit ids (accounts, transfers, payments, fingerprints) are numpy uint64 arrays of
# shape (n, 2), C-contiguous: column 0 holds the high 64 bits, column 1 the low 64
# bits (`ids_array` / `ids_list` convert from and to Python ints). Every mutating call
# returns `(codes, seq)`: one uint16 result code per row (numbers in
# `ledger_result_codes()`), and the write-ahead log sequence number of the record, which
# is returned only once the record is durable (written and fdatasync'ed). `now_ns` is the
# caller's clock (time.time_ns()); the ledger never reads one and never runs backwards.

LEDGER_BATCH_MAX: int
WAL_FLUSH_BUCKETS_NS: list[int]
ACCOUNT_LINKED: int
ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS: int
ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS: int
TRANSFER_LINKED: int
TRANSFER_PENDING: int
TRANSFER_POST_PENDING: int
TRANSFER_VOID_PENDING: int

class WalFailure(EngineError):
    """The write-ahead log failed (I/O or an earlier fsync error); restart and recover."""

class WalCorruption(WalFailure):
    """The log is corrupt where no crash can have left it; the message says where."""

class LedgerClosed(EngineError):
    """The ledger was closed."""

@final
class Ledger:
    """The durable double-entry ledger, open on a directory (write-ahead log + snapshots)."""

    @staticmethod
    def open(
        dir: str | os.PathLike[str],
        *,
        segment_bytes_max: int = 67108864,
        retention_s: int = 86400,
        accounts_max: int | None = None,
        transfers_max: int | None = None,
        payments_max: int | None = None,
        idempotency_keys_max: int | None = None,
        decisions_max: int | None = None,
    ) -> Ledger:
        """Opens (creating when absent) the ledger in `dir`: loads the newest snapshot,
        replays the log, truncates a torn tail (see `recovery()`), and raises
        `WalCorruption` naming file and offset for corruption anywhere else. Finished
        payments, idempotency keys and transfers are forgotten after `retention_s`,
        except plain transfers (kept for good), holds still pending and the transfers of
        payments not finished; balances keep what they moved."""
    @property
    def dir(self) -> Path:
        """The directory the ledger lives in."""
    def recovery(self) -> dict[str, Any]:
        """What recovery found at open: snapshot_seq, snapshots_skipped, records_replayed,
        records, segments, first_seq, last_seq, torn_tail (None or a dict with segment
        (a Path), offset, bytes, reason)."""
    def create_accounts(
        self,
        now_ns: int,
        ids: npt.NDArray[np.uint64],
        currencies: npt.NDArray[np.uint16],
        kinds: npt.NDArray[np.uint16],
        flags: npt.NDArray[np.uint16],
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Creates accounts (currency: ISO 4217 numeric code; kind: 1 subscriber
        receivable, 2 prepaid credit, 3 gateway clearing, 4 settlement cash, 5 refunds,
        6 fees, 7 suspense). Returns (account result codes, seq)."""
    def create_transfers(
        self,
        now_ns: int,
        ids: npt.NDArray[np.uint64],
        debit_account_ids: npt.NDArray[np.uint64],
        credit_account_ids: npt.NDArray[np.uint64],
        amounts_minor: npt.NDArray[np.int64],
        currencies: npt.NDArray[np.uint16],
        flags: npt.NDArray[np.uint16],
        pending_ids: npt.NDArray[np.uint64],
        timeouts_s: npt.NDArray[np.uint32],
        payment_ids: npt.NDArray[np.uint64],
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Creates transfers: plain, pending (a hold), post (amount 0 posts the whole
        hold) or void; TRANSFER_LINKED chains apply all or nothing. Holds due at
        `now_ns` expire first. Returns (transfer result codes, seq)."""
    def expire(self, now_ns: int) -> int:
        """Expires every hold due at `now_ns`; returns seq."""
    def balances(
        self, account_ids: npt.NDArray[np.uint64]
    ) -> tuple[
        npt.NDArray[np.bool_],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
    ]:
        """(found, debits_pending, debits_posted, credits_pending, credits_posted) per
        account, in minor units; zeros where not found."""
    def record_payment_states(
        self, now_ns: int, payment_ids: npt.NDArray[np.uint64], states: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Records settlement states (1 RESERVED, 2 CAPTURED, 3 SETTLED, 4 ROLLED_BACK):
        RESERVED first, then CAPTURED or ROLLED_BACK, then SETTLED or ROLLED_BACK.
        Returns (payment result codes, seq)."""
    def unfinished_payments(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]:
        """Payments RESERVED or CAPTURED, sorted by id: (ids (n, 2), states)."""
    def payment_states(self, payment_ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
        """The recorded state of each payment (0 when unknown or aged out)."""
    def claim_keys(
        self,
        now_ns: int,
        keys: list[str],
        fingerprints: npt.NDArray[np.uint64],
        payment_ids: npt.NDArray[np.uint64],
    ) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint64], npt.NDArray[np.uint16], int]:
        """Claims idempotency keys (1..255 bytes) with a payload fingerprint. Returns
        (claim codes: 0 NEW, 1 REPLAY, 2 PAYLOAD_MISMATCH, 3 KEY_INVALID; the payment id
        stored for each key (n, 2); the outcome stored (0 while in flight); seq)."""
    def set_outcomes(
        self, now_ns: int, keys: list[str], outcomes: npt.NDArray[np.uint16]
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Sets the (non-zero) outcome of claimed keys, once. Returns (entry codes, seq)."""
    def record_decisions(
        self, now_ns: int, gtids: list[str], decisions: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Records two-phase-commit decisions (1 COMMIT, 2 ABORT) by global transaction
        id (1..200 bytes), once each. Returns (entry codes, seq)."""
    def forget_decisions(self, now_ns: int, gtids: list[str]) -> tuple[npt.NDArray[np.uint16], int]:
        """Forgets decisions whose transactions are resolved. Returns (entry codes, seq)."""
    def decisions(self) -> list[tuple[str, int]]:
        """Every decision not yet forgotten, as (gtid, decision), sorted by gtid."""
    def anchor_audit(
        self, now_ns: int, audit_seq: int, audit_hash: bytes
    ) -> tuple[npt.NDArray[np.uint16], int]:
        """Anchors the audit trail's head (last row's seq and 32-byte hash) after a
        database commit; the ledger keeps the furthest. Returns (anchor codes, seq)."""
    def audit_anchor(self) -> tuple[int, bytes] | None:
        """The furthest audit-trail head anchored: (seq, 32-byte hash), or None."""
    def snapshot(self) -> int:
        """Writes a snapshot atomically and removes the log it covers; returns its last
        record's seq (0 when nothing was logged yet)."""
    def last_seq(self) -> int:
        """The last log sequence number handed out."""
    def counts(self) -> tuple[int, int]:
        """(accounts, transfers) held in memory."""
    def usage(self) -> list[tuple[str, int, int]]:
        """Entries held in each bounded table beside its bound: [(table, held, bound)]."""
    def wal_stats(self) -> dict[str, Any]:
        """What the log has written since open: a dict of flushes, records, bytes,
        flush_ns (summed) and flush_buckets (flushes per `WAL_FLUSH_BUCKETS_NS` bucket,
        then one for slower; not cumulative)."""
    def close(self) -> None:
        """Closes the ledger once the saga steps queued have ended; later calls raise
        `LedgerClosed`."""
    def open_accounts(
        self, now_ns: int, account_ids: list[str], kinds: list[int], currencies: list[str]
    ) -> str | None:
        """Opens the subscribers' accounts and their currencies' clearing and adjustment
        accounts where missing, as the reserve step does; returns once durable (GIL
        released): None, or the first refusal's message."""
    def saga_reserve(
        self,
        done: Completions,
        future: asyncio.Future[Any],
        now_ns: int,
        payment_ids: list[str],
        account_ids: list[str],
        kinds: list[int],
        amounts_minor: list[int],
        currencies: list[str],
    ) -> None:
        """On a ledger thread: opens missing accounts, holds each amount, logs RESERVED;
        sets `future` to None, or a refusal's message, once durable."""
    def saga_capture_and_void(
        self,
        done: Completions,
        future: asyncio.Future[Any],
        now_ns: int,
        captured: list[str],
        voided: list[str],
    ) -> None:
        """On a ledger thread: CAPTURED for `captured`, the holds of `voided` voided and
        ROLLED_BACK; one wait; `future` as for `saga_reserve`."""
    def saga_finish(
        self,
        done: Completions,
        future: asyncio.Future[Any],
        now_ns: int,
        payment_ids: list[str],
        post: bool,
        head: tuple[int, str] | None = None,
    ) -> None:
        """On a ledger thread: posts (or voids) the holds and logs SETTLED (or
        ROLLED_BACK), then anchors `head` when given; `future` as for `saga_reserve`."""

@final
class Completions:
    """A queue core threads hand results to; its eventfd wakes the event loop."""

    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """The eventfd to watch (`loop.add_reader`)."""
    def drain(self) -> int:
        """Sets the futures of every step ended since the last drain; returns how many."""

def wal_verify(
    dir: str | os.PathLike[str],
    *,
    transfers_max: int | None = None,
    payments_max: int | None = None,
) -> dict[str, Any]:
    """Checks a log directory offline without changing it (checksums, chain, full replay
    under the bounds the ledger was opened with; the defaults when not given).
    Returns the same report as `Ledger.recovery()` (a torn tail is reported, not
    repaired); raises `WalCorruption` naming file and offset."""

def wal_inspect(
    dir: str | os.PathLike[str], from_seq: int = 0, limit: int = 1000
) -> list[tuple[int, Path, int, int, int, str, int, int, int]]:
    """Lists records offline: (seq, segment, offset, bytes, checksum, kind, events,
    events_ok, now_ns) from `from_seq`, at most `limit`."""

def ids_array(values: list[int]) -> npt.NDArray[np.uint64]:
    """Python ints (0 <= x < 2**128) as an (n, 2) uint64 id array."""

def ids_list(array: npt.NDArray[np.uint64]) -> list[int]:
    """An (n, 2) uint64 id array as Python ints."""

def ledger_result_codes() -> list[tuple[str, list[tuple[int, str]]]]:
    """Every ledger result code by family: account, transfer, payment, claim, entry,
    anchor."""

# Reconciliation (engine/src/python/reconcile.rs).

_RowTuple = tuple[int, str, str, int, str, str, str, int]
_DiscrepancyTuple = tuple[str, str, str, str, int | None, int | None, str, str]

class ReportInvalid(EngineError):
    """A settlement report row cannot be read; the message names its line."""

@final
class SettlementReport:
    """A gateway settlement report, parsed and held by the engine."""

    @staticmethod
    def parse(
        text: str, columns: list[str], amount_unit: str, values: dict[str, str]
    ) -> SettlementReport:
        """Parses report text; `columns` names the CSV column of each field in the order
        of `report_fields()`, `amount_unit` is "minor" or "major", `values` maps the
        gateway's words to ours. Raises `ReportInvalid` naming the first bad line."""
    @staticmethod
    def from_rows(rows: list[_RowTuple]) -> SettlementReport:
        """A report from rows already in our terms (tuples as `rows()` returns them)."""
    def __len__(self) -> int: ...
    def rows(self) -> list[_RowTuple]:
        """The rows as tuples (line, gateway_reference, merchant_reference, amount_minor,
        currency, type, status, captured_at_us)."""
    def business_day(self) -> int | None:
        """The UTC day (days since 1970-01-01) most captures fall on, the later day on a
        tie; None for a report without rows."""
    def reconcile(
        self,
        gateway: str,
        business_day: str,
        start_us: int,
        end_us: int,
        tolerance_s: int,
        billed: Iterable[Any],
    ) -> Reconciled:
        """Matches the rows against `billed` (objects with payment_id, gateway_reference,
        amount_minor, currency, settled_at_us, refunded); the outcome stays in the
        engine (`Reconciled`), its discrepancies in the order found."""

@final
class Reconciled:
    """A reconciliation's outcome held by the engine: its discrepancies are written to the
    store (`SqliteWriter.record_discrepancies`, or `set_states` after another store wrote
    them) and encoded as the Reconcile reply without a Python object per row."""

    @property
    def records(self) -> int:
        """Report rows read."""
    @property
    def matched(self) -> int:
        """Rows (and voided captures) that agree with billing."""
    def __len__(self) -> int: ...
    def counts(self) -> list[int]:
        """Discrepancies per category, in `discrepancy_categories()` order."""
    def discrepancies(self, start: int = 0, stop: int | None = None) -> list[_DiscrepancyTuple]:
        """The discrepancies `start..stop` as tuples (discrepancy_id, category, payment_id,
        gateway_reference, gateway_amount_minor, billing_amount_minor, currency, detail)."""
    def set_states(self, start: int, states: list[tuple[str, str]]) -> None:
        """Records the (status, note) of the discrepancies from `start` on, as a store
        other than SQLite's core writer read them back."""
    def states(self) -> list[tuple[str, str]]:
        """The (status, note) of every discrepancy; ValueError when one was not recorded."""
    def encode_report(self, gateway: str, business_day: str) -> bytes:
        """The Reconcile RPC's reply (quickpay.v1.ReconcileReport), encoded without the
        GIL: the bytes Python's `SerializeToString(deterministic=True)` gives for the
        same message."""

def report_fields() -> list[str]:
    """The report fields a column mapping names, in the order `SettlementReport.parse`
    takes them."""

def discrepancy_categories() -> list[str]:
    """The discrepancy categories, in the order reports list them."""

# Fraud scoring (engine/src/python/fraud.rs).

FRAUD_FEATURE_COUNT: int
FRAUD_REASONS_MAX: int
FRAUD_KEYS_MAX_DEFAULT: int

class FraudConfigError(EngineError):
    """A fraud model, rules or BIN file cannot be used; the message names the place."""

class FraudColumns(TypedDict):
    """A batch for FraudScorer.score, observe and replay: 14 columns of equal length.

    For type checkers only: at run time the batch is a plain dict with these keys.

    Text columns are lists (or tuples) of str; the others numpy arrays of exactly the
    dtype shown, C-contiguous. Numbers are the contract's (purposes, methods) and the
    subscriber table's (plans: 1 prepaid, 2 postpaid).
    """

    account_ids: list[str]
    msisdns: list[str]  # the line paid for; "" if unknown
    amounts_minor: npt.NDArray[np.int64]
    purposes: npt.NDArray[np.uint8]
    methods: npt.NDArray[np.uint8]
    card_fingerprints: npt.NDArray[np.uint64]  # keyed hash of the card, 0 if not a card
    card_bins: list[str]  # first 6 to 8 digits, "" if none
    device_ids: list[str]
    ips: list[str]
    channels: list[str]
    plans: npt.NDArray[np.uint8]
    countries: list[str]  # ISO 3166 alpha-2 of the subscriber
    sim_swapped_at_s: npt.NDArray[np.int64]  # NO_TIME if never
    created_at_s: npt.NDArray[np.int64]

@final
class FraudBatch:
    """A batch's fraud inputs as the core built them (FraudScorer.score_validated)."""

    def __len__(self) -> int: ...
    @property
    def card_fingerprints(self) -> npt.NDArray[np.uint64]:
        """The rows' card fingerprints, in order (0: no card)."""
    @property
    def card_bins(self) -> list[str]:
        """The rows' card BINs, in order ("" for none)."""

def fraud_card_fingerprint(key: bytes, pan: str) -> int:
    """The card fingerprint score_validated computes for ``pan`` (0 for "")."""

@final
class FraudScorer:
    """The fraud scorer: one per engine, the single owner of the fraud state.

    Every scoring method takes the batch as one FraudColumns dict (14 columns of equal
    length, at most BATCH_MAX rows).

    Settlement semantics (wired by the pipeline): DECLINE is status DECLINED with
    decline_reason FRAUD_DECLINED; REVIEW is declined with FRAUD_REVIEW and queued for
    review, unless the request carries a valid subscriber assertion (step-up) and the
    score is below the decline threshold, in which case it proceeds.
    """

    def __new__(
        cls,
        model_json: str,
        rules: str = "",
        bin_table: str = "",
        *,
        review_threshold: int | None = None,
        decline_threshold: int | None = None,
        keys_max: int = ...,
    ) -> FraudScorer:
        """Builds a scorer from model JSON, rules and BIN table texts.

        Thresholds default to the model file's; keys_max bounds every per-key map
        (at the bound a key not seen recently is evicted, by CLOCK).
        Raises FraudConfigError for a bad file.
        """
    @property
    def model_id(self) -> str:
        """The model file's model_id."""
    @property
    def thresholds(self) -> tuple[int, int]:
        """The (review, decline) score thresholds in force."""
    def tracked(self) -> tuple[int, int, int, int, int]:
        """Tracked keys per map: (accounts, msisdns, cards, devices, IP prefixes)."""
    def score(
        self,
        columns: FraudColumns,
        *,
        now_s: int,
    ) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
        """Scores a batch in order, recording each payment as an attempt.

        Returns scores (0..1000), decisions (0 APPROVE, 1 REVIEW, 2 DECLINE) and reason
        codes of shape (n, FRAUD_REASONS_MAX), 0 padding unused slots.
        """
    def observe(
        self,
        columns: FraudColumns,
        outcomes: npt.NDArray[np.uint8],
        *,
        now_s: int,
    ) -> None:
        """Records outcomes of scored payments: 0 not attempted, 1 settled, 2 failed."""
    def score_validated(
        self,
        engine: Engine,
        columns: Mapping[str, npt.NDArray[Any]],
        rows: npt.NDArray[np.int64],
        *,
        card_key: bytes,
        now_s: int,
        enforce: bool,
        assessment_type: type[_A],
    ) -> tuple[
        FraudBatch,
        npt.NDArray[np.uint16],
        npt.NDArray[np.uint8],
        npt.NDArray[np.uint16],
        npt.NDArray[np.uint8],
        list[_A],
    ]:
        """Scores the payments at ``rows`` of a batch's validation columns (the mapping
        Engine.validate took), in order, recording each as an attempt.

        The core reads the rows' fields, computes their card fingerprints (the first
        8 bytes, big-endian, of HMAC-SHA256 under ``card_key``; 0 for no card, never
        0 for a card) and BINs, and looks up their subscribers' profiles in ``engine``,
        with the GIL released. Returns the batch (for observe_batch); scores,
        decisions and reasons as ``score`` does; what each verdict does (0 proceed,
        1 FRAUD_DECLINED, 2 FRAUD_REVIEW, where a REVIEW proceeds if the row has a
        subscriber assertion and its score is under the decline threshold; all 0 when
        ``enforce`` is False); and an ``assessment_type`` for each payment (a frozen
        dataclass with the fields ``score``, ``decision`` name and ``reasons`` names:
        FraudAssessment), its fields set by the core without running its ``__init__``.
        A row out of range, text that is not UTF-8 or an
        account the engine does not hold raises InvalidBatch.
        """
    def observe_batch(
        self,
        batch: FraudBatch,
        outcomes: npt.NDArray[np.uint8],
        *,
        now_s: int,
    ) -> None:
        """``observe`` for a batch score_validated returned, in its order."""
    def replay(
        self,
        columns: FraudColumns,
        at_s: npt.NDArray[np.int64],
        outcomes: npt.NDArray[np.uint8],
        with_features: bool = False,
    ) -> tuple[
        npt.NDArray[np.uint16],
        npt.NDArray[np.uint8],
        npt.NDArray[np.uint16],
        npt.NDArray[np.float64] | None,
    ]:
        """Replays traffic: each payment scored at its own time, its outcome observed next.

        With with_features, the last item is the float64 feature rows of shape
        (n, FRAUD_FEATURE_COUNT), columns named by fraud_feature_names().
        """

def fraud_feature_names() -> list[str]:
    """The model's feature names, in feature-row column order."""

def fraud_reason_codes() -> list[tuple[int, str]]:
    """Every reason code as (number, name); 0 is NONE."""

def fraud_decisions() -> list[tuple[int, str]]:
    """Every decision as (number, name): APPROVE 0, REVIEW 1, DECLINE 2."""

# -- gateway HTTP transport (src/python/http.rs) -----------------------------------------

SEND_MANY_MAX: int

class HttpSetupError(EngineError):
    """A gateway URL or HTTP client setting that cannot be used."""

@final
class GatewaySim:
    """A running gateway simulator (``quickpay gateway-sim``): hyper on a tokio runtime
    answers the acquirer API, a thread of its own keeps the SQLite books."""

    def __new__(
        cls,
        name: str,
        ledger_path: str | os.PathLike[str],
        key: bytes,
        faults_json: str,
        host: str,
        port: int,
        hooks: object,
    ) -> GatewaySim:
        """Opens the books at ``ledger_path`` and serves gateway ``name`` on
        ``host``:``port`` (port 0 picks a free one, see ``port``). ``faults_json`` is
        ``FaultModel.to_dict()`` as JSON, ``key`` the fingerprint secret, ``hooks`` the
        Python side (``gateways.sim.hooks.Hooks``). A port that cannot be bound or
        books that cannot be opened raise OSError."""

    @property
    def port(self) -> int:
        """The bound port."""

    def stop(self) -> None:
        """Stops accepting, gives requests in flight a second, then closes the books.
        Idempotent."""

@final
class HttpPool:
    """A keep-alive connection pool to one gateway (hyper-util and rustls on a tokio runtime)."""

    def __new__(
        cls,
        base_url: str,
        *,
        connections_max: int,
        keepalive_s: float,
        connect_timeout_s: float = 5.0,
        sales_max: int | None = None,
    ) -> HttpPool:
        """A pool for the gateway at ``base_url`` (http:// or https://): at most
        ``connections_max`` requests in flight (the rest wait for one to end, inside
        their own timeout), of which at most ``sales_max`` sales (``sale_many``;
        default ``connections_max``), idle connections closed after ``keepalive_s``.
        ``HttpSetupError`` for a URL or setting that cannot be used."""

    def send_many(
        self, requests: list[tuple[str, str, bytes | None, float, str | None]]
    ) -> list[tuple[int, int, bytes, str | None, str]]:
        """Sends every request at once and waits, without the GIL, until each has ended.

        Each request is (method, path and query, JSON body or None, timeout in seconds,
        a response header's name or None). Returns, per request, (outcome, status, body,
        header, error): outcome 0 answered (status and body are the gateway's), 1
        unreachable (nothing was sent: no connection, or no free one before the timeout,
        error "busy"), 2 ambiguous (it may have been processed); error names what went
        wrong, for logs. A method, path or timeout that cannot be used:
        ``HttpSetupError``; more than ``SEND_MANY_MAX`` requests: ``BatchTooLarge``;
        either before any request is sent."""

    def sale_many_into(
        self,
        done: Completions,
        future: asyncio.Future[Any],
        path: str,
        sales: Sales,
        rows: list[int],
        timeouts_s: list[float],
        now: float,
        keep_s: float,
    ) -> None:
        """Sends ``rows`` of ``sales`` to this gateway at once (bodies built from the
        requests' strings and answers read in the core, on its HTTP runtime) and sets
        ``future`` to the answers' columns, in the order of ``rows``, through ``done``
        once each has ended, no thread waiting; at most ``sales_max`` are in flight at a
        time across every call.

        Each sale has its timeout (``timeouts_s``, one per row) and its end: its
        deadline's budget at ``now`` (the deadlines' clock) less min(``keep_s``, half
        that budget). It waits for a slot at most min(timeout, end), else not sent
        "busy"; with under 5 ms left it is not sent, "late".

        The columns (outcome, one byte per sale; status, state, gateway_reference,
        decline_reason, captured_minor, refunded_minor, currency, error, message):
        outcome 0 a payment,
        1 not sent (error "connect", "busy" or "late"), 2 ambiguous (a timeout, a
        dropped connection, a 5xx, an answer that is not JSON or holds a non-integer
        number), 3 refused by a 4xx (error its code, message its text). A row out of
        range, an unknown kind, a bad timeout or a text with no UTF-8 form:
        ``HttpSetupError``; ``timeouts_s`` not one per row: ``InvalidBatch``; more than
        ``SEND_MANY_MAX`` rows: ``BatchTooLarge``; each before any sale is sent."""

@final
class Sales:
    """A batch of sales held by the core, one row per payment: the requests' own
    strings, routed and sent by row numbers (``GatewayRouter.sale_columns``) with no
    list per field. Built by ``Requests.sales`` or from columns of equal length
    (``InvalidBatch`` otherwise): merchant references, amounts in minor units,
    currencies, ``MethodKind`` members, the instrument's fields (another kind's are
    ignored) and absolute deadlines on the router's clock. A row out of range:
    ``InvalidBatch``."""

    def __new__(
        cls,
        payment_ids: list[str],
        amounts_minor: list[int],
        currencies: list[str],
        kinds: list[MethodKind] | list[int],
        pans: list[str],
        expiry_months: list[int],
        expiry_years: list[int],
        providers: list[str],
        wallet_ids: list[str],
        ibans: list[str],
        deadlines: list[float],
    ) -> Sales: ...
    def __len__(self) -> int: ...
    def columns(self) -> list[list[Any]]:
        """The constructor's columns, in its order (new lists: for tests and tools)."""
    def row(
        self, row: int
    ) -> tuple[str, int, str, MethodKind | int, str, int, int, str, str, str, float]:
        """Row ``row``, in the constructor's order (the kind as it was given)."""
    def payment_id(self, row: int) -> str: ...
    def currency(self, row: int) -> str: ...
    def deadline(self, row: int) -> float: ...
    def slice(self, start: int, end: int) -> Sales:
        """Rows ``start`` to ``end`` (clamped), as a batch of their own."""
    def routes(self) -> list[tuple[MethodKind | int, str, list[int]]]:
        """The rows by method and currency, in the order each pair first appears (the
        kind as the pair's first row gave it; currencies compared as Python does)."""
    def due(self, rows: list[int], now: float, budget_min: float) -> tuple[list[int], list[int]]:
        """``rows`` split into those with at least ``budget_min`` to their deadline at
        ``now`` and those with less."""

@final
class SqliteWriter:
    """The core's own connection to the engine's SQLite file (the system libsqlite3, the
    one Python's sqlite3 module loads), opened on the first commit."""

    def __new__(cls, path: os.PathLike[str] | str) -> SqliteWriter: ...
    def commit(
        self, columns: Any, now_us: int, audit_key: bytes
    ) -> tuple[
        list[tuple[int, int, int, int, int, str]],
        list[tuple[str, int, int]],
        tuple[int, str] | None,
    ]:
        """Writes a batch of decisions (``store.rows.CommitColumns``) in one transaction,
        without the GIL: every table's rows, the accounts' balances and line states, and
        the payments' journal entries removed. Returns, per payment, (how it ended: 0
        written, 1 a constraint refused it, 2 its account is gone; status; ledger
        sequence; balance after; line state after; the failure's text), each touched
        account's (id, balance, status), and the audit trail's head after the batch.
        An error of SQLite's that is not about one payment raises the sqlite3 module's
        exception for it, and nothing of the batch is written."""

    def commit_into(
        self,
        done: Completions,
        future: asyncio.Future[Any],
        columns: Any,
        now_us: int,
        audit_key: bytes,
        types: OutcomeTypes,
        frauds: list[FraudAssessment | None],
    ) -> None:
        """`commit` on the core's writer thread (``sqlite_writer_0``): `future` is set
        through `done`, on the event loop, to what `commit` returns or raises, with in
        front each payment's ``Outcome`` built by the core (``frauds``: each one's
        assessment), None for one the store refused (or whose outcome has a number no
        enum member has), and how many are None. The columns are read on the caller's
        thread."""

    def journal(self, columns: Any, now_us: int) -> list[bool]:
        """Journals payments about to go to a gateway (``store.rows.CommitColumns``; only
        the request's fields are read), in one transaction, without the GIL: per
        payment, False when its key is already journalled by an unfinished attempt."""

    def journal_into(
        self, done: Completions, future: asyncio.Future[Any], columns: Any, now_us: int
    ) -> None:
        """`journal` on the core's writer thread, ahead of the commits waiting there (the
        saga's first stage, one batch at a time, waits for it); `future` as for
        `commit_into`."""

    def take_turn(self) -> None:
        """Waits, without the GIL, for the writers' turn: a transaction on the store's
        Python connection goes in it, so that connection and the core's never wait
        for each other in SQLite's busy handler. `give_turn` ends it."""

    def give_turn(self) -> None:
        """Ends the turn `take_turn` took."""

    def record_discrepancies(
        self,
        reconciled: Reconciled,
        gateway: str,
        business_day: str,
        start: int,
        stop: int,
        now_us: int,
    ) -> None:
        """Writes the discrepancies `start..stop` of `reconciled` in one transaction
        without the GIL (a re-run only touches their last_seen) and keeps the state
        investigators left each one in, in `reconciled`. SQLite's errors raise the
        sqlite3 module's exception for them, as `commit` does."""

    def checkpoints(self) -> tuple[int, int]:
        """(WAL checkpoints the core's checkpoint thread ran for this file, of which
        failed) since this writer was made, read without waiting for a write."""

    def close(self) -> None:
        """Lets the writes asked for finish, then closes the connection; the next write
        opens it again."""

def encode_pay_responses(outcomes: list[Any]) -> list[bytes]:
    """Each ``domain.Outcome`` as the bytes of its PayResponse (read by attribute)."""

def encode_pay_batch_response(outcomes: list[Any]) -> bytes:
    """The outcomes, in order, as the bytes of one PayBatchResponse."""

PAY_REQUEST_BYTES_MAX: int
"""The largest PayRequest frame the core decodes; a larger one is refused unread."""
PAY_REQUEST_FIELD_BYTES_MAX: int
"""The longest text field of a PayRequest, in bytes; a longer one is refused at decoding,
naming the field, before the payment is batched."""

DecodedPay = tuple[
    tuple[str, str, str, str, int, str, int, int, str, str, str, str],
    tuple[str, int, int, str, str, str, str],
]
"""A decoded PayRequest: (idempotency_key, fingerprint hex, account_id, msisdn,
amount_minor, currency, purpose, method kind, method display, channel, device_id, ip),
then the method detail (card_pan, card_expiry_month, card_expiry_year, wallet_provider,
wallet_id, iban, subscriber_assertion)."""

def decode_pay_requests(frames: list[bytes], fingerprint_key: bytes) -> list[DecodedPay | str]:
    """Decodes PayRequest frames with the GIL released. Each frame gives its fields or,
    when it is not a PayRequest, a message that names the field (the caller answers
    INVALID_ARGUMENT). ``fingerprint_key`` keys the payload fingerprint (HMAC-SHA256 of
    the canonical encoding). At most 10,000 frames (else ``BatchTooLarge``)."""

def decode_pay_batch(
    request: bytes, fingerprint_key: bytes, payments_max: int
) -> list[DecodedPay | str]:
    """Decodes a PayBatchRequest's payments, each on its own, as ``decode_pay_requests``
    does. A call of more than ``payments_max`` payments, or whose own framing is broken,
    is refused whole with ``RequestUndecodable`` before any payment is decoded."""

@final
class OutcomeTypes:
    """The domain's outcome classes and the ``PaymentStatus`` and ``LineStatus``
    members, handed over once: the core builds a committed batch's outcomes as
    ``store.rows.outcome_of`` does."""

    def __new__(
        cls,
        outcome: type[Outcome],
        confirmation: type[Confirmation],
        statuses: list[PaymentStatus],
        lines: list[LineStatus],
    ) -> OutcomeTypes: ...

@final
class Requests:
    """A batch's payment requests, read once from their ``PaymentIntent``s by the core;
    each stage's columns are cut from them with no Python step per payment. Rows are
    the intents' places in the list given; a method given ``rows`` answers in their
    order. Over the engine's batch bound: ``BatchTooLarge``."""

    def __new__(cls, intents: Iterable[PaymentIntent]) -> Requests: ...
    def __len__(self) -> int: ...
    def validation_columns(self) -> dict[str, npt.NDArray[Any]]:
        """``Engine.validate``'s keyword columns (all but ``now_s``) of every row, as
        ``settlement.validation.build_validation_columns`` builds them."""
    def intent_columns(self, rows: Sequence[int]) -> dict[str, list[Any]]:
        """The request's fields of ``store.rows.CommitColumns`` for ``rows``."""
    def sales(self, payment_ids: list[str], rows: Sequence[int], no_deadline: float) -> Sales:
        """The sales of ``rows``, their merchant references ``payment_ids`` (one each;
        ``no_deadline`` where a request has none)."""
    def holds(self, rows: Sequence[int], kinds_by_purpose: Sequence[int]) -> list[list[Any]]:
        """Accounts, account kinds (by purpose number; the last past the list),
        amounts and currencies of ``rows``, for the ledger's reserve step."""

@final
class IntentTypes:
    """The types a decoded PayRequest becomes (``PaymentIntent``, ``Method``,
    ``MethodDetail``, the ``Purpose`` members by number with the one for any other
    number, and ``MethodKind``'s five members by number), handed over once: the decode
    then builds each intent itself."""

    def __new__(
        cls,
        intent: type[PaymentIntent],
        method: type[Method],
        detail: type[MethodDetail],
        purposes: list[tuple[int, Purpose]],
        purpose_other: Purpose,
        kinds: list[MethodKind],
    ) -> IntentTypes: ...

def decode_pay_intents(
    types: IntentTypes,
    frames: list[bytes],
    fingerprint_key: bytes,
    deadline: float | None = None,
    sender: str = "",
) -> list[PaymentIntent | str]:
    """``decode_pay_requests``, each frame built into a ``PaymentIntent`` (with
    ``deadline`` and ``sender``) by the core, or the message of a frame that is not a
    PayRequest."""

def decode_pay_batch_intents(
    types: IntentTypes,
    request: bytes,
    fingerprint_key: bytes,
    payments_max: int,
    deadline: float | None = None,
    sender: str = "",
) -> list[PaymentIntent | str]:
    """``decode_pay_batch``, each payment built into a ``PaymentIntent`` as
    ``decode_pay_intents`` builds it."""

def make_payment_ids(clock_ms: int, raw: bytes, last: int) -> tuple[list[str], int]:
    """The payment ids of one call (settlement/payment_ids.py): the 80-bit draws in
    ``raw`` (10 bytes each, big-endian) sorted, each under ``clock_ms``, any not above
    the id before it (from ``last``) moved to it plus 1 plus its top 40 bits. Returns the
    ids and the last one's number. ValueError: ``raw`` not whole draws, or ``clock_ms``
    past 48 bits."""

# -- subscriber files (store/subscriber_file.rs) ------------------------------------

SUBSCRIBER_ROWS_MAX: int
# The subscriber file's columns, in the order of its header and of a read row.
SUBSCRIBER_COLUMNS: tuple[str, ...]

class SubscriberFileError(ValueError):
    """A subscriber file's first bad line: ``args`` are (line, message)."""

def import_subscribers_sqlite(db_path: str, file_path: str, replace: bool) -> tuple[int, int]:
    """Imports a subscriber CSV into the SQLite store at ``db_path``, streamed, in one
    transaction; returns (rows written, lines closed by ``replace``). A bad line raises
    ``SubscriberFileError``, a constraint against rows already there
    ``sqlite3.IntegrityError``, an unreadable file ``OSError``; nothing is written then."""

@final
class SubscriberFile:
    """A subscriber file read in chunks of checked rows."""

    @staticmethod
    def open(path: str) -> SubscriberFile:
        """Opens a file and checks its header."""
    @staticmethod
    def from_bytes(data: bytes) -> SubscriberFile:
        """Reads a file's text held in memory."""
    def read(self, n: int) -> list[tuple[int, str, str, int, int, str, int, str, int | None, int]]:
        """Up to ``n`` more rows, (line, account_id, msisdn, plan, status, currency,
        balance_minor, country, sim_swapped_at_s or None, created_at_s); an empty list
        at the end. A bad line raises ``SubscriberFileError`` once the rows before it
        have been returned."""
