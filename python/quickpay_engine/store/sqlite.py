"""The embedded store: one SQLite file (WAL journal, synchronous=FULL) for every domain.

Calls are synchronous and must come from one thread: the async front end runs them on
a single-thread executor (``store.executor.StoreThread``), which makes that thread the
one writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from quickpay_engine._engine import (
    Engine,
    OutcomeTypes,
    Reconciled,
    SqliteWriter,
    SubscriberFileError,
    import_subscribers_sqlite,
)
from quickpay_engine.completions import completions
from quickpay_engine.domain import (
    BilledCapture,
    Confirmation,
    Discrepancy,
    LineStatus,
    OutboxEvent,
    Outcome,
    PaymentIntent,
    PaymentRecord,
    PaymentStatus,
    Plan,
    SubscriberRow,
)
from quickpay_engine.errors import IdempotencyConflict, ImportRowError, StoreError
from quickpay_engine.store.adjustments import (
    PENDING,
    AdjustmentRow,
    Statements,
    adjustment_of,
    applied_rows,
)
from quickpay_engine.store.audit import AuditRow, audit_key, entries_rows, entry_rows
from quickpay_engine.store.audit_check import audit_problems
from quickpay_engine.store.checks import ACCOUNT_NETS, CHECKS
from quickpay_engine.store.provisioning import DEFAULT_RULES, ProvisioningRule
from quickpay_engine.store.records import PAYMENT_COLUMNS, payment_record
from quickpay_engine.store.rows import (
    LINE_STATUS,
    Account,
    BatchRows,
    CommitColumns,
    Decision,
    RefundRequest,
    build_refund,
    commit_columns,
    failed_outcome,
    intent_from_json,
    journal_columns,
    outcome_of,
)
from quickpay_engine.store.sqlite_library import read_only_uri, require_one_library
from quickpay_engine.store.subscriber_events import event_rows, write_lines
from quickpay_engine.subscriber_changes import (
    ChangePlan,
    ChangeResult,
    HeldLine,
    SubscriberChanges,
    audit_content,
    plan_changes,
)

# The statements on balance adjustments, with SQLite's parameter mark.
ADJUSTMENT_SQL = Statements.marked("?")

# How a payment of a batch ended in the core's writer (SqliteWriter.commit).
WRITTEN, REJECTED = 0, 1

# The decline reason of a payment whose key another writer took for another payload.
IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"

log = logging.getLogger(__name__)

# The domain's outcome classes, handed to the core once: the outcomes of a batch its
# writer commits are built there, as ``rows.outcome_of`` builds them.
OUTCOME_TYPES = OutcomeTypes(Outcome, Confirmation, list(PaymentStatus), list(LineStatus))


def _schema_part(first: str, last: str) -> str:
    """The statements of schema_sqlite.sql from ``first`` to the end of ``last``, for an
    upgrade that adds them to an older file (the schema file stays their one source)."""
    text = resources.files("quickpay_engine.store").joinpath("schema_sqlite.sql").read_text()
    start = text.index(first)
    return text[start : text.index(last, start) + len(last)]


ADJUSTMENTS_TABLE = _schema_part(
    "CREATE TABLE IF NOT EXISTS balance_adjustments",
    "ON balance_adjustments (account_id);",
)

SUBSCRIBER_VERSIONS_TABLE = _schema_part(
    "CREATE TABLE IF NOT EXISTS subscriber_versions", "changed_at_us INTEGER NOT NULL\n) STRICT;"
)

# The schema this build writes (PRAGMA user_version); see schema_sqlite.sql.
SCHEMA_VERSION = 7
# Each older version this build brings up to date in place, with the statements that do
# it (run in one transaction with the version's update).
UPGRADES = {
    # 3: payments record the caller that sent them (the access file's name).
    2: "ALTER TABLE payments ADD COLUMN sender TEXT NOT NULL DEFAULT '';",
    # 4: balance adjustments from other systems (AdjustBalance).
    3: ADJUSTMENTS_TABLE,
    # 5: the carrier's version of each subscriber changed live (UpsertSubscribers).
    4: SUBSCRIBER_VERSIONS_TABLE,
    # 6: no index of payments by account (read by no query; a random page per payment).
    5: "DROP INDEX IF EXISTS payments_by_account;",
    # 7: no index of billing by account (the upsert reads the subscriber's own row).
    6: "DROP INDEX IF EXISTS billing_by_account;",
}

# `verify` lists at most this many examples of each broken invariant.
VERIFY_EXAMPLES_MAX = 20

# Values in one `IN (...)` list at most: SQLite's default bound on host parameters is
# 32,766 per statement, and a longer list is split into several statements.
IN_LIST_MAX = 500

# SQLite waits this long for a lock held by another process before failing the call.
BUSY_TIMEOUT_MS = 5_000
# WAL pages past which a commit of this connection checkpoints. The core's writer has a
# thread of its own copy the WAL back well before (engine/src/store/checkpoint.rs, which
# says why); this is the bound, the same as the writer's own (INLINE_PAGES there).
WAL_AUTOCHECKPOINT_PAGES = 4_000


@dataclass(frozen=True, slots=True)
class RefundRow:
    """One refund as the store keeps it."""

    refund_id: str
    idempotency_key: str
    payment_id: str
    amount_minor: int
    currency: str
    reason: str
    status: str = "PENDING"  # PENDING, DONE or DECLINED
    gateway_reference: str = ""
    decline_reason: str = ""
    decline_detail: str = ""
    created_at_us: int = 0


# What a caller is told when a refund key is reused for another payment or amount: it
# names nothing of the refund (or the payment) the key belongs to.
REFUND_KEY_CONFLICT = (
    "idempotency_key was used for another refund (another payment or amount);"
    " a new refund needs a new key"
)


def bound_refund(stored: RefundRow, row: RefundRow) -> RefundRow:
    """``stored``, the refund a key already holds, when ``row`` asks for the same one (a
    retry); a key reused for another payment, amount or currency is a conflict, so no
    refund is ever made from another payment's row."""
    if (stored.payment_id, stored.amount_minor, stored.currency) != (
        row.payment_id, row.amount_minor, row.currency,
    ):  # fmt: skip
        raise IdempotencyConflict(REFUND_KEY_CONFLICT)
    return stored


class SettledState(NamedTuple):
    """An account's balance and line status after a batch, for the engine's table.
    A tuple, so that a batch's states, as these or as the core's own rows, are turned
    into the engine's columns by one ``zip(*states)`` (``state_columns``)."""

    account_id: str
    balance_minor: int
    status: LineStatus


# An account's state as the core's commit gives it: (account_id, balance_minor, status).
StateRow = tuple[str, int, int]
# A commit's outcomes, and the accounts' states after it: SettledState, or the core's
# rows as they came (the event loop's commit, which only hands them to the engine).
CommitDone = tuple[list[Outcome], Sequence[StateRow]]


def state_columns(
    states: Sequence[StateRow],
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """``states`` as the engine's ``set_states`` columns: account ids, balances, line
    statuses."""
    if not states:
        return [], np.zeros(0, np.int64), np.zeros(0, np.uint8)
    accounts, balances, statuses = zip(*states, strict=True)
    return (
        list(accounts),
        np.array(balances, dtype=np.int64),
        np.array(statuses, dtype=np.uint8),
    )


class SqliteStore:
    """Billing, payment history and provisioning state in one SQLite file."""

    def __init__(
        self, path: Path, audit_key_bytes: bytes | None = None, *, read_only: bool = False
    ) -> None:
        """``audit_key_bytes``: the key of the audit chain (``store.audit.audit_key`` of
        the data dir); by default the one beside the file, which is the data dir's in
        the default layout.

        ``read_only``: for a checker (`verify`, `audit verify`), which holds the data
        dir's lock: the file is opened without writing anything to it or its ``-wal``
        (``sqlite_library.read_only_uri``), never created, never upgraded: a file of
        another schema version is refused (``StoreError``) with the command that
        upgrades it. Every write then fails (``sqlite3.OperationalError``)."""
        # Before the file is touched: no second copy of SQLite in this process.
        require_one_library()
        self._path = path
        self.read_only = read_only
        self.audit_key = audit_key_bytes if audit_key_bytes is not None else audit_key(path.parent)
        # The trail's last (seq, hash) as of this store's last commit that wrote to it,
        # for the ledger's anchor (see store/audit.py); None until then.
        self.audit_head: tuple[int, str] | None = None
        self._head_lock = threading.Lock()
        self._written_head: tuple[int, str] | None = None
        if read_only:
            if not path.exists():
                raise StoreError(f"{path} does not exist")
            self._db = sqlite3.connect(
                read_only_uri(path), uri=True, isolation_level=None, check_same_thread=False
            )
            self._writer = SqliteWriter(path)  # never committed through: never opened
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._require_current(path)
            self.rules = self._load_rules()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implied.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # The core's connection, which writes the settlement batches (opened on the
        # first commit, so readers and offline commands never open it).
        self._writer = SqliteWriter(path)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"{path}: could not enable WAL journal (got {mode})")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        self._migrate(path)
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO provisioning_rules (rule_id, priority, plan, from_status,"
                " to_status, owed_max_minor, credit_min_minor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.rule_id,
                        n,
                        int(r.plan),
                        int(r.from_status),
                        int(r.to_status),
                        r.owed_max_minor,
                        r.credit_min_minor,
                    )
                    for n, r in enumerate(DEFAULT_RULES)
                ],
            )
        self.rules = self._load_rules()

    def _migrate(self, path: Path) -> None:
        """Creates the schema in a new file; refuses a file of another schema version."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        (tables,) = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        while version in UPGRADES:
            self._db.executescript(
                f"BEGIN;\n{UPGRADES[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
            )
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version != 0 or tables:
            self._db.close()
            raise StoreError(
                f"{path} holds schema version {version}; this build uses {SCHEMA_VERSION}."
                " Move the file aside (or point --data-dir elsewhere) to start afresh."
            )
        schema = resources.files("quickpay_engine.store").joinpath("schema_sqlite.sql")
        # One script, one transaction: a crash leaves no half-made schema behind.
        self._db.executescript(
            f"BEGIN;\n{schema.read_text()}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        )

    def _require_current(self, path: Path) -> None:
        """Refuses, writing nothing, a file whose schema is not this build's (a read-only
        open, which does not upgrade it)."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        self._db.close()
        if version in UPGRADES:
            raise StoreError(
                f"{path} holds schema version {version}; this build uses {SCHEMA_VERSION}"
                " and checks only a file it need not upgrade (a check writes nothing):"
                " run `quickpay recover` (or `quickpay serve`) with this build first,"
                " which upgrades the file in place, then check again"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} holds schema version {version}, newer than this build's"
                f" {SCHEMA_VERSION}: check it with the newer quickpay that wrote it"
            )
        raise StoreError(
            f"{path} holds schema version {version}; this build uses {SCHEMA_VERSION}"
            " and cannot upgrade it"
        )

    def close(self) -> None:
        self._writer.close()
        self._db.close()

    def checkpoints(self) -> tuple[int, int]:
        """(WAL checkpoints the core's checkpoint thread ran, of which failed), for
        /metrics; read without waiting for a commit."""
        return self._writer.checkpoints()

    def wal_bytes(self) -> int:
        """The size of the file's write-ahead log now (0 when there is none)."""
        try:
            return os.stat(f"{self._path}-wal").st_size
        except FileNotFoundError:
            return 0

    def open_reader(self) -> SqliteStore:
        """Another connection to the same file, for reads on another thread: in WAL mode
        a reader sees every committed transaction and never waits for the writer."""
        return SqliteStore(self._path, self.audit_key, read_only=self.read_only)

    # -- subscribers -----------------------------------------------------------------

    def import_subscribers(self, rows: Sequence[SubscriberRow]) -> int:
        """Inserts or replaces every row in one transaction: all of them or none.

        The billing system's balance wins; the opening balance is set so that the balance
        still equals the opening balance plus what settled here (see `verify`).
        """
        try:
            self._upsert_subscribers(rows)
        except sqlite3.IntegrityError as err:
            raise StoreError(f"the import conflicts with the database: {err}") from None
        return len(rows)

    def import_subscriber_file(self, path: Path, replace: bool = False) -> tuple[int, int]:
        """Imports a subscriber file, read as a stream by the core and written in one
        transaction: all of it or nothing. Upsert by default; ``replace``: the file is
        the whole base, and lines missing from it are CLOSED (never deleted). Returns
        (rows written, lines closed). Raises ImportRowError naming the first bad line
        (duplicates included), StoreError on a conflict with rows already there."""
        try:
            return import_subscribers_sqlite(str(self._path), str(path), replace)
        except SubscriberFileError as err:
            line, message = err.args
            raise ImportRowError(line, message) from None
        except sqlite3.IntegrityError as err:
            raise StoreError(f"the import conflicts with the database: {err}") from None

    def _upsert_subscribers(self, rows: Sequence[SubscriberRow]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO subscribers (account_id, msisdn, plan, status, currency,"
                " balance_minor, opening_balance_minor, country, sim_swapped_at_s,"
                " created_at_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)"
                " ON CONFLICT (account_id) DO UPDATE SET msisdn = excluded.msisdn,"
                " plan = excluded.plan, status = excluded.status, currency = excluded.currency,"
                " balance_minor = excluded.balance_minor,"
                # What settled and was adjusted since the opening balance stays on top of
                # the new balance (the row's own difference: no sum over its history).
                " opening_balance_minor = excluded.balance_minor"
                "   - (balance_minor - opening_balance_minor),"
                " country = excluded.country, sim_swapped_at_s = excluded.sim_swapped_at_s,"
                " created_at_s = excluded.created_at_s",
                (
                    (
                        r.account_id,
                        r.msisdn,
                        int(r.plan),
                        int(r.status),
                        r.currency,
                        r.balance_minor,
                        r.country,
                        r.sim_swapped_at_s,
                        r.created_at_s,
                    )
                    for r in rows
                ),
            )

    def apply_subscriber_changes(
        self, changes: SubscriberChanges, source: str = "", now_us: int | None = None
    ) -> ChangeResult:
        """Applies a batch of live changes in one transaction, all or none: each change
        newer than its account's version (``subscriber_changes.plan_changes``) updates
        the line (or opens it), its version, and adds an audit row; stale ones change
        nothing. A number another line keeps, or a change of currency, refuses the whole
        batch with ``InvalidArgument`` naming the change. ``audit_head`` is the trail's
        head after it."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._written_head = None
        with self._transaction():
            held: dict[str, HeldLine] = {}
            for chunk, marks in _in_lists(sorted(set(changes.account_ids))):
                for account, currency, balance, version in self._db.execute(
                    "SELECT s.account_id, s.currency, s.balance_minor, coalesce(v.version, 0)"  # noqa: S608
                    " FROM subscribers s LEFT JOIN subscriber_versions v USING (account_id)"
                    f" WHERE s.account_id IN ({marks})",
                    chunk,
                ):
                    held[account] = HeldLine(version, currency, balance)
            plan = plan_changes(changes, held)
            if plan.applied:
                self._write_changes(changes, plan, source, now_us)
        self._publish_head()
        return ChangeResult(
            len(plan.applied), plan.stale, frozenset(plan.created), list(plan.lines.values())
        )

    def _write_changes(
        self, changes: SubscriberChanges, plan: ChangePlan, source: str, now_us: int
    ) -> None:
        write_lines(self._db, "?", sqlite3.IntegrityError, changes, plan, now_us)
        rows = entries_rows(
            self._audit_tail(),
            self.audit_key,
            (audit_content(changes, i, i in plan.opened, source, now_us) for i in plan.applied),
        )
        # The audit rows and an event per change (the trail's head is then the batch's).
        self._write(BatchRows(audit=rows, outbox=event_rows(changes, plan, now_us)))

    def subscriber_versions(self, account_ids: Sequence[str]) -> dict[str, int]:
        """The version the last live change left on each of these accounts (absent: none)."""
        found: dict[str, int] = {}
        for chunk, marks in _in_lists(list(account_ids)):
            for account, version in self._db.execute(
                "SELECT account_id, version FROM subscriber_versions"  # noqa: S608
                f" WHERE account_id IN ({marks})",
                chunk,
            ):
                found[account] = version
        return found

    def load_subscribers_into(self, engine: Engine) -> int:
        """Loads every subscriber into the engine's table, read from the file by the
        core (no Python object per subscriber); returns how many."""
        return engine.load_subscribers_sqlite(str(self._path))

    def load_subscribers(self) -> list[SubscriberRow]:
        """Every subscriber, as rows (tests and tools; serving never builds these)."""
        cursor = self._db.execute(
            "SELECT account_id, msisdn, plan, status, currency, balance_minor, country,"
            " sim_swapped_at_s, created_at_s FROM subscribers"
        )
        return [
            SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)
            for a, m, p, s, c, b, co, sw, cr in cursor
        ]

    def subscriber(self, account_id: str) -> SubscriberRow | None:
        """One subscriber by account id."""
        row = self._db.execute(
            "SELECT account_id, msisdn, plan, status, currency, balance_minor, country,"
            " sim_swapped_at_s, created_at_s FROM subscribers WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        if row is None:
            return None
        a, m, p, s, c, b, co, sw, cr = row
        return SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)

    # -- payments --------------------------------------------------------------------

    def find_by_keys(self, keys: Iterable[str]) -> dict[str, PaymentRecord]:
        """Stored payments by idempotency key, for replays."""
        keys = list(keys)
        found: dict[str, PaymentRecord] = {}
        for chunk, marks in _in_lists(keys):
            for record in self._records(f"idempotency_key IN ({marks})", chunk):
                found[record.intent.idempotency_key] = record
        return found

    def get_payment(
        self, *, payment_id: str = "", idempotency_key: str = ""
    ) -> PaymentRecord | None:
        """One payment by id or by idempotency key."""
        if payment_id:
            records = self._records("payment_id = ?", [payment_id])
        else:
            records = self._records("idempotency_key = ?", [idempotency_key])
        return records[0] if records else None

    def commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Makes a batch of decisions durable in one transaction (see ``_commit_batch``);
        ``audit_head`` is the trail's head after it."""
        self._written_head = None
        done = self._commit_batch(decisions, now_us)
        self._publish_head()
        return done

    async def commit_on_core(
        self,
        decisions: Sequence[Decision],
        on_store_thread: Callable[[Callable[[], CommitDone]], Awaitable[CommitDone]],
        requests: dict[str, list[Any]] | None = None,
    ) -> CommitDone:
        """``commit_batch`` for the event loop: the core writes the batch on its writer
        thread (engine/src/python/store.rs) and the result comes back through the loop's
        completion queue, with no Python thread woken on the way. A payment the store
        refused is looked up (a replay or a conflict) through ``on_store_thread``, which
        runs a call where this store's own connection is used. ``requests``: the
        decisions' requests as the core cut them (``rows.commit_columns``)."""
        if not decisions:
            return [], []
        now_us = time.time_ns() // 1_000
        queue, future = completions()
        columns = commit_columns(decisions, requests)
        self._writer.commit_into(
            queue, future, columns, now_us, self.audit_key, OUTCOME_TYPES, columns.fraud
        )
        # The written payments' outcomes come built by the core; None where refused
        # (or where the core could not build one: outcome_of then raises for it).
        built, unbuilt, results, states, head = await future  # type: ignore[misc]
        if head is not None:
            self._advance_head(head)
        if not unbuilt:
            # The core's rows as they are: the pipeline only turns them into columns.
            return built, states
        try:
            return await on_store_thread(
                lambda: self._outcomes(decisions, results, states, now_us, built=built)
            )
        except Exception:
            # The batch is committed: it must not be reported as unwritten (its captures
            # would be given back). A refused payment whose stored twin could not be
            # read is FAILED with its reason; a retry with its key reads the twin.
            log.exception("could not read back the payments a commit refused")
            return self._outcomes(decisions, results, states, now_us, read_back=False, built=built)

    def _publish_head(self) -> None:
        # After COMMIT only: the ledger must never anchor a head that was rolled back.
        if self._written_head is not None:
            self._advance_head(self._written_head)

    def _advance_head(self, head: tuple[int, str]) -> None:
        # Commits end on two threads (the event loop, for the core's writer thread, and
        # the store thread, for recovery's): the head only moves forward.
        with self._head_lock:
            if self.audit_head is None or head[0] > self.audit_head[0]:
                self.audit_head = head

    def _commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Makes a batch of decisions durable in one transaction, written by the core
        (engine/src/store/sqlite.rs) on its own connection with the GIL released: the
        rows are built and inserted there, none in Python.

        Should the batch fail on a constraint (a key taken by another writer since the
        replay check) or an account gone, the core redoes it one payment per savepoint,
        so the one bad payment is reported here as FAILED, or as the stored outcome when
        its key is already settled, and does not sink the others.
        """
        if not decisions:
            return [], []
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        results, states, head = self._writer.commit(
            commit_columns(decisions), now_us, self.audit_key
        )
        if head is not None:
            self._written_head = head
        return self._outcomes(decisions, results, states, now_us)

    def _outcomes(
        self,
        decisions: Sequence[Decision],
        results: Sequence[tuple[int, int, int, int, int, str]],
        states: Sequence[tuple[str, int, int]],
        now_us: int,
        *,
        read_back: bool = True,
        built: Sequence[Outcome | None] | None = None,
    ) -> CommitDone:
        """The outcomes of a committed batch from the core's results. A refused payment
        is read back from the store (a replay, or a conflict), so call where the store's
        connection is used; without ``read_back`` it is FAILED with its reason.
        ``built``: the written payments' outcomes as the core built them."""
        outcomes: list[Outcome] = []
        for k, (d, (ended, status, seq, balance, state, error)) in enumerate(
            zip(decisions, results, strict=True)
        ):
            if ended == WRITTEN:
                done = built[k] if built is not None else None
                outcomes.append(done or outcome_of(d, status, seq, balance, state, now_us))
            else:
                reason = "STORE_REJECTED" if ended == REJECTED else "ACCOUNT_GONE"
                if read_back:
                    outcomes.append(self._replay_or_fail(d, reason, error))
                else:
                    outcomes.append(failed_outcome(d, reason, error))
        return outcomes, self._states(states)

    @staticmethod
    def _states(states: Sequence[tuple[str, int, int]]) -> list[SettledState]:
        return [SettledState(a, b, LINE_STATUS.get(s) or LineStatus(s)) for a, b, s in states]

    def _audit_tail(self) -> AuditRow | None:
        row = self._db.execute(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return AuditRow(*row) if row else None

    def _write(self, rows: BatchRows) -> None:
        db = self._db
        db.executemany(
            "INSERT INTO payments (seq, payment_id, idempotency_key, fingerprint, account_id,"
            " msisdn, amount_minor, currency, purpose, method_kind, method_display, channel,"
            " device_id, ip, status, decline_reason, decline_detail, confirmation_id,"
            " settled_at_us, balance_after_minor, service_state_after, gateway,"
            " gateway_reference, fraud_score, fraud_decision, fraud_reasons, created_at_us,"
            " sender)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?)",
            rows.payments,
        )
        db.executemany(
            "INSERT INTO review_queue (payment_id, account_id, score, reasons, created_at_us)"
            " VALUES (?, ?, ?, ?, ?)",
            rows.reviews,
        )
        db.executemany(
            "INSERT INTO billing_records (record_id, payment_id, account_id, kind, amount_minor,"
            " currency, balance_delta_minor, balance_after_minor, created_at_us)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows.billing,
        )
        db.executemany(
            "INSERT INTO ar_entries (document_id, payment_id, leg, ar_account, debit_minor,"
            " credit_minor, currency, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows.ar,
        )
        db.executemany(
            "INSERT INTO provisioning_changes (document_id, payment_id, account_id, msisdn,"
            " state_before, state_after, rule_id, changed_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows.provisioning,
        )
        db.executemany(
            "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES (?, ?, ?, ?)",
            rows.audit,
        )

        db.executemany(
            "INSERT INTO outbox (event_id, kind, payment_id, account_id, payload, created_at_us)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows.outbox,
        )
        db.executemany(
            "UPDATE subscribers SET balance_minor = ?, status = ? WHERE account_id = ?",
            [(a.balance_minor, int(a.status), a.account_id) for a in rows.touched.values()],
        )
        # The payment has ended here: its journal entry goes in the same transaction.
        db.executemany(
            "DELETE FROM settlement_attempts WHERE payment_id = ?",
            [(row[1],) for row in rows.payments],
        )
        if rows.audit:
            seq, _, _, row_hash = rows.audit[-1]
            self._written_head = (seq, row_hash)

    # -- the saga's journal --------------------------------------------------------------

    def journal_attempts(
        self, attempts: Sequence[tuple[str, PaymentIntent]], now_us: int | None = None
    ) -> list[bool]:
        """Records payments about to go to a gateway, in one transaction. False for a
        payment whose key is already journalled by an attempt not yet finished (a
        concurrent attempt in another process, or one recovery has still to finish)."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        # Written by the core (the request as `intent_json` encodes it), GIL released.
        return self._writer.journal(journal_columns(attempts), now_us)

    async def journal_columns_on_core(self, columns: CommitColumns) -> list[bool]:
        """``journal_attempts`` for the event loop, of payments given as columns
        (``rows.journal_columns``, ``rows.journal_columns_of``), written on the core's
        writer thread (see ``commit_on_core``)."""
        queue, future = completions()
        self._writer.journal_into(queue, future, columns, time.time_ns() // 1_000)
        return await future  # type: ignore[no-any-return]

    def settled_or_declined_ids(self) -> list[tuple[str, int]]:
        """(payment_id, status) of every payment that went to a gateway (it has a
        gateway name), for checks against the ledger."""
        return self._db.execute(
            "SELECT payment_id, status FROM payments WHERE gateway != '' ORDER BY seq"
        ).fetchall()

    def gateway_payments(self, gateway: str) -> dict[str, tuple[int, str, int]]:
        """payment_id -> (status, gateway_reference, refunded_minor) of every payment
        that went to ``gateway``, for checks against its books."""
        rows = self._db.execute(
            "SELECT payment_id, status, gateway_reference, refunded_minor FROM payments"
            " WHERE gateway = ?",
            (gateway,),
        )
        return {p: (s, r, f) for p, s, r, f in rows}

    def attempts(self) -> dict[str, PaymentIntent]:
        """Every journalled payment not yet finished, by payment id."""
        cursor = self._db.execute("SELECT payment_id, intent FROM settlement_attempts")
        return {payment_id: intent_from_json(text) for payment_id, text in cursor}

    def forget_attempts(self, payment_ids: Sequence[str]) -> None:
        """Removes journal entries of payments that ended without a history row (rolled
        back before any money moved: the caller never had an answer and may retry)."""
        with self._transaction():
            self._db.executemany(
                "DELETE FROM settlement_attempts WHERE payment_id = ?",
                [(p,) for p in payment_ids],
            )

    # -- refunds ---------------------------------------------------------------------------

    def refund_by_key(self, idempotency_key: str) -> RefundRow | None:
        """The refund recorded under this key, if any."""
        rows = self._refunds("idempotency_key = ?", (idempotency_key,))
        return rows[0] if rows else None

    def pending_refunds(self) -> list[RefundRow]:
        """Refunds sent (or about to be sent) to a gateway with no answer recorded."""
        return self._refunds("status = 'PENDING'", ())

    def begin_refund(self, row: RefundRow) -> RefundRow:
        """Records a refund as PENDING before the gateway is called; returns the row
        stored under its key (this one, or an earlier one for a replay). A key that holds
        a refund of another payment or amount raises ``IdempotencyConflict``."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO refunds (refund_id, idempotency_key, payment_id,"
                " amount_minor, currency, reason, status, created_at_us)"
                " VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?)",
                (row.refund_id, row.idempotency_key, row.payment_id, row.amount_minor,
                 row.currency, row.reason, row.created_at_us),
            )  # fmt: skip
        stored = self.refund_by_key(row.idempotency_key)
        assert stored is not None
        return bound_refund(stored, row)

    def decline_refund(self, refund_id: str, reason: str, detail: str, now_us: int) -> None:
        """Records the gateway's refusal of a PENDING refund."""
        with self._transaction():
            self._db.execute(
                "UPDATE refunds SET status = 'DECLINED', decline_reason = ?, decline_detail = ?,"
                " finished_at_us = ? WHERE refund_id = ? AND status = 'PENDING'",
                (reason, detail, now_us, refund_id),
            )

    def record_access(self, content: Mapping[str, object]) -> None:
        """Appends one row to the audit trail in a transaction of its own: who asked for
        a refund or a reconciliation run (``store.audit.ACCESS_*``). ``audit_head`` is
        the trail's head after it."""
        self._written_head = None
        with self._transaction():
            rows = entry_rows(self._audit_tail(), self.audit_key, content)
            self._db.executemany(
                "INSERT INTO audit_log (seq, prev_hash, content, row_hash) VALUES (?, ?, ?, ?)",
                rows,
            )
            self._written_head = (rows[-1][0], rows[-1][3])
        self._publish_head()

    def finish_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """Records a refund the gateway made (see ``_finish_refund``); ``audit_head`` is
        the trail's head after it."""
        self._written_head = None
        done = self._finish_refund(refund_id, gateway_reference, now_us)
        self._publish_head()
        return done

    def _finish_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """Records a refund the gateway made, in one transaction: billing, AR, history,
        provisioning, audit and outbox. Doing it again changes nothing. Returns the
        payment's status, its refunded total, and the account's state after."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        with self._transaction():
            (refund,) = self._refunds("refund_id = ?", (refund_id,))
            payment = self._records("payment_id = ?", [refund.payment_id])[0]
            if refund.status == "DONE":
                return payment.outcome.status, payment.refunded_minor, None
            i = payment.intent
            row = self._db.execute(
                "SELECT msisdn, plan, status, balance_minor FROM subscribers WHERE account_id = ?",
                (i.account_id,),
            ).fetchone()
            if row is None:
                raise StoreError(f"refund {refund_id}: account {i.account_id} is gone")
            msisdn, plan, status, balance = row
            account = Account(i.account_id, msisdn, Plan(plan), LineStatus(status), balance)
            gateway = payment.outcome.confirmation.gateway if payment.outcome.confirmation else ""
            request = RefundRequest(
                refund_id, refund.payment_id, i.account_id, i.purpose, refund.amount_minor,
                refund.currency, gateway, gateway_reference,
            )  # fmt: skip
            rows, after, refunded = build_refund(
                request, account, i.amount_minor, payment.refunded_minor, self.rules,
                self._audit_tail(), now_us, self.audit_key,
            )  # fmt: skip
            self._write(rows)
            self._db.execute(
                "UPDATE payments SET status = ?, refunded_minor = ? WHERE payment_id = ?",
                (int(after), refunded, refund.payment_id),
            )
            self._db.execute(
                "UPDATE refunds SET status = 'DONE', gateway_reference = ?, finished_at_us = ?"
                " WHERE refund_id = ?",
                (gateway_reference, now_us, refund_id),
            )
        return after, refunded, _states(rows)[0]

    # -- balance adjustments (store/adjustments.py) ------------------------------------

    def adjustment_by_key(self, idempotency_key: str) -> AdjustmentRow | None:
        """The adjustment recorded under this key, if any."""
        rows = self._adjustments("idempotency_key = ?", (idempotency_key,))
        return rows[0] if rows else None

    def pending_adjustments(self) -> list[AdjustmentRow]:
        """Adjustments journalled and not yet applied (recovery finishes them)."""
        return self._adjustments("status = 'PENDING'", ())

    def begin_adjustment(self, row: AdjustmentRow) -> AdjustmentRow:
        """Records an adjustment, PENDING before its ledger transfer (or DECLINED, which
        ends it); returns the row stored under its key: this one, or an earlier one the
        caller compares with its payload."""
        with self._transaction():
            self._db.execute(ADJUSTMENT_SQL.insert, row.values())
        stored = self.adjustment_by_key(row.idempotency_key)
        assert stored is not None
        return stored

    def finish_adjustment(
        self, adjustment_id: str, now_us: int | None = None
    ) -> SettledState | None:
        """Applies a PENDING adjustment in one transaction (``adjustments.applied_rows``): its
        AR legs, audit row and events, the balance's move by its delta (never a rewrite
        of the row) and the line restored where a credit pays it up. Doing it again
        changes nothing (None). ``audit_head`` is the trail's head after it."""
        self._written_head = None
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        with self._transaction():
            (a,) = self._adjustments("adjustment_id = ?", (adjustment_id,))
            if a.status != PENDING:
                return None
            line = self._db.execute(ADJUSTMENT_SQL.line, (a.account_id,)).fetchone()
            rows, applied = applied_rows(
                a, line, self.rules, self._audit_tail(), now_us, self.audit_key
            )
            self._write(rows)
            self._db.execute(ADJUSTMENT_SQL.applied, applied)
        self._publish_head()
        return _states(rows)[0]

    def audit_adjustments(self, adjustment_ids: Sequence[str]) -> dict[str, AdjustmentRow]:
        """adjustment_id -> the adjustment, for the audit trail's cross-check."""
        found: dict[str, AdjustmentRow] = {}
        for chunk, marks in _in_lists(adjustment_ids):
            for a in self._adjustments(f"adjustment_id IN ({marks})", chunk):
                found[a.adjustment_id] = a
        return found

    def applied_adjustment_count(self) -> int:
        """Adjustments applied (each has one audit row)."""
        (n,) = self._db.execute(
            "SELECT count(*) FROM balance_adjustments WHERE status = 'APPLIED'"
        ).fetchone()
        return int(n)

    def _adjustments(self, where: str, params: Sequence[object]) -> list[AdjustmentRow]:
        # `where` is one of this module's literals; values always go in `params`.
        cursor = self._db.execute(
            f"{ADJUSTMENT_SQL.select}{where} ORDER BY created_at_us, adjustment_id", params
        )
        return [adjustment_of(row) for row in cursor]

    def _refunds(self, where: str, params: Sequence[object]) -> list[RefundRow]:
        # `where` is one of this module's literals; values always go in `params`.
        cursor = self._db.execute(
            "SELECT refund_id, idempotency_key, payment_id, amount_minor, currency, reason,"  # noqa: S608
            " status, gateway_reference, decline_reason, decline_detail, created_at_us"
            f" FROM refunds WHERE {where} ORDER BY created_at_us, refund_id",
            params,
        )
        return [RefundRow(*row) for row in cursor]

    def _replay_or_fail(self, decision: Decision, reason: str, error: str) -> Outcome:
        stored = self.find_by_keys([decision.intent.idempotency_key]).get(
            decision.intent.idempotency_key
        )
        if stored is not None and stored.intent.fingerprint == decision.intent.fingerprint:
            return dataclasses.replace(stored.outcome, replayed=True)
        if stored is not None:
            # Another writer settled this key for another payload since the replay
            # check: the caller is refused, never told the other payment is theirs.
            reason = IDEMPOTENCY_CONFLICT
            error = "idempotency_key was used for another payment"
        return failed_outcome(decision, reason, error)

    def _records(self, where: str, params: Sequence[object]) -> list[PaymentRecord]:
        # `where` is one of this module's literals; values always go in `params`.
        cursor = self._db.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE {where}",  # noqa: S608
            params,
        )
        return [payment_record(row) for row in cursor]

    # -- events -------------------------------------------------------------------------

    def outbox_after(
        self, cursor: int, kinds: Sequence[str] = (), account_id: str = "", limit: int = 256
    ) -> list[OutboxEvent]:
        """Events after ``cursor`` in cursor order, at most ``limit``, optionally filtered."""
        where, params = ["cursor > ?"], [cursor]
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if account_id:
            where.append("account_id = ?")
            params.append(account_id)
        cursor_rows = self._db.execute(
            "SELECT cursor, event_id, kind, payment_id, account_id, payload, created_at_us"  # noqa: S608
            f" FROM outbox WHERE {' AND '.join(where)} ORDER BY cursor LIMIT ?",
            [*params, limit],
        )
        return [
            OutboxEvent(c, e, k, p, a, json.loads(payload), at)
            for c, e, k, p, a, payload, at in cursor_rows
        ]

    def outbox_head(self) -> int:
        """The newest event's cursor (0 for none): one index lookup, so that watchers
        learn whether there is anything new without each reading a page."""
        (head,) = self._db.execute("SELECT coalesce(max(cursor), 0) FROM outbox").fetchone()
        return int(head)

    def outbox_unpublished(self, limit: int) -> list[OutboxEvent]:
        """The oldest events not yet acknowledged by the broker, in cursor order."""
        rows = self._db.execute(
            "SELECT cursor, event_id, kind, payment_id, account_id, payload, created_at_us"
            " FROM outbox WHERE published_at_us IS NULL ORDER BY cursor LIMIT ?",
            (limit,),
        )
        return [
            OutboxEvent(c, e, k, p, a, json.loads(payload), at)
            for c, e, k, p, a, payload, at in rows
        ]

    def mark_published(self, cursors: Sequence[int], now_us: int | None = None) -> None:
        """Records the broker's acknowledgement of these events."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        with self._transaction():
            self._db.executemany(
                "UPDATE outbox SET published_at_us = ? WHERE cursor = ?",
                [(now_us, c) for c in cursors],
            )

    # -- reconciliation ------------------------------------------------------------------

    def billed_captures(self, gateway: str, from_us: int, to_us: int) -> list[BilledCapture]:
        """Payments settled through ``gateway`` with settled_at in [from_us, to_us)."""
        rows = self._db.execute(
            "SELECT payment_id, gateway_reference, amount_minor, currency, settled_at_us,"
            " status IN (4, 5) FROM payments WHERE gateway = ? AND status IN (1, 4, 5)"
            " AND settled_at_us >= ? AND settled_at_us < ?",
            (gateway, from_us, to_us),
        )
        return [BilledCapture(p, r, a, c, t, bool(refunded)) for p, r, a, c, t, refunded in rows]

    def record_discrepancies(
        self, gateway: str, business_day: str, found: Sequence[Discrepancy], now_us: int
    ) -> dict[str, tuple[str, str]]:
        """Keeps each discrepancy once (a re-run only touches last_seen); returns the
        (status, note) of every one, as investigators left them."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO discrepancies (discrepancy_id, gateway, business_day, category,"
                " payment_id, gateway_reference, gateway_amount_minor, billing_amount_minor,"
                " currency, detail, first_seen_at_us, last_seen_at_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (discrepancy_id) DO UPDATE"
                " SET last_seen_at_us = excluded.last_seen_at_us",
                [
                    (d.discrepancy_id, gateway, business_day, d.category, d.payment_id,
                     d.gateway_reference, d.gateway_amount_minor, d.billing_amount_minor,
                     d.currency, d.detail, now_us, now_us)
                    for d in found
                ],
            )  # fmt: skip
        states: dict[str, tuple[str, str]] = {}
        ids = [d.discrepancy_id for d in found]
        for chunk, marks in _in_lists(ids):
            for discrepancy_id, status, note in self._db.execute(
                "SELECT discrepancy_id, status, note FROM discrepancies"  # noqa: S608
                f" WHERE discrepancy_id IN ({marks})",
                chunk,
            ):
                states[discrepancy_id] = (status, note)
        return states

    def record_reconciled(
        self,
        found: Reconciled,
        gateway: str,
        business_day: str,
        start: int,
        stop: int,
        now_us: int,
    ) -> None:
        """``record_discrepancies`` of a reconciliation's discrepancies ``start..stop``,
        written by the core on this store's own core connection, without the GIL and
        without a Python object per row; their states are kept in ``found``."""
        self._writer.record_discrepancies(found, gateway, business_day, start, stop, now_us)

    def set_discrepancy(self, discrepancy_id: str, status: str, note: str) -> bool:
        """Records an investigation's progress; False when there is no such discrepancy."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE discrepancies SET status = ?, note = ? WHERE discrepancy_id = ?",
                (status, note, discrepancy_id),
            )
        return cursor.rowcount == 1

    def open_discrepancies(self) -> int:
        """Discrepancies not yet RESOLVED (the metrics' gauge)."""
        (n,) = self._db.execute(
            "SELECT count(*) FROM discrepancies WHERE status <> 'RESOLVED'"
        ).fetchone()
        return int(n)

    # -- invariants -----------------------------------------------------------------------

    def account_nets(self) -> list[tuple[str, str, int]]:
        """(account_id, currency, billing's net movement) of every subscriber: payments
        in less refunds out, what the engine's ledger must hold for the account."""
        return [(a, c, int(n)) for a, c, n in self._db.execute(ACCOUNT_NETS).fetchall()]

    def verify(self, audit_anchor: tuple[int, str] | None = None) -> list[str]:
        """Checks the database's own invariants; returns one line per violation (at most
        ``VERIFY_EXAMPLES_MAX`` examples per check), empty when everything holds."""
        problems: list[str] = []
        for what, sql in CHECKS:
            found = self._db.execute(sql + f" LIMIT {VERIFY_EXAMPLES_MAX}").fetchall()
            problems.extend(f"{what}: {', '.join(map(str, row))}" for row in found)
        problems.extend(audit_problems(self, self.audit_key, audit_anchor))
        return problems

    # -- provisioning and audit ---------------------------------------------------------

    def _load_rules(self) -> list[ProvisioningRule]:
        cursor = self._db.execute(
            "SELECT rule_id, plan, from_status, to_status, owed_max_minor, credit_min_minor"
            " FROM provisioning_rules ORDER BY priority, rule_id"
        )
        return [
            ProvisioningRule(r, Plan(p), LineStatus(f), LineStatus(t), o, c)
            for r, p, f, t, o, c in cursor
        ]

    def audit_rows(self) -> Iterator[AuditRow]:
        """The audit trail in sequence order, for `quickpay audit verify`."""
        cursor = self._db.execute(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq"
        )
        return (AuditRow(*row) for row in cursor)

    # What the audit rows are checked against (store/audit_check.py).

    def audit_payments(self, payment_ids: Sequence[str]) -> dict[str, tuple[str, int, str, int]]:
        """payment_id -> (account_id, amount_minor, currency, status) of these payments."""
        found: dict[str, tuple[str, int, str, int]] = {}
        for chunk, marks in _in_lists(payment_ids):
            for p, a, amount, c, status in self._db.execute(
                "SELECT payment_id, account_id, amount_minor, currency, status FROM payments"  # noqa: S608
                f" WHERE payment_id IN ({marks})",
                chunk,
            ):
                found[p] = (a, amount, c, status)
        return found

    def audit_refunds(self, refund_ids: Sequence[str]) -> dict[str, tuple[str, int, str, str]]:
        """refund_id -> (payment_id, amount_minor, currency, status) of these refunds."""
        found: dict[str, tuple[str, int, str, str]] = {}
        for chunk, marks in _in_lists(refund_ids):
            for r, p, amount, c, status in self._db.execute(
                "SELECT refund_id, payment_id, amount_minor, currency, status FROM refunds"  # noqa: S608
                f" WHERE refund_id IN ({marks})",
                chunk,
            ):
                found[r] = (p, amount, c, status)
        return found

    def audit_ar_legs(
        self, document_ids: Sequence[str]
    ) -> dict[str, list[tuple[int, str, int, int, str]]]:
        """document_id -> its AR legs (leg, ar_account, debit, credit, currency), by leg."""
        found: dict[str, list[tuple[int, str, int, int, str]]] = {}
        for chunk, marks in _in_lists(document_ids):
            for d, leg, account, debit, credit, c in self._db.execute(
                "SELECT document_id, leg, ar_account, debit_minor, credit_minor, currency"  # noqa: S608
                f" FROM ar_entries WHERE document_id IN ({marks}) ORDER BY document_id, leg",
                chunk,
            ):
                found.setdefault(d, []).append((leg, account, debit, credit, c))
        return found

    def payment_count(self) -> int:
        """Payments in history."""
        (n,) = self._db.execute("SELECT count(*) FROM payments").fetchone()
        return int(n)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._writer)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, in the writers' turn
    (``SqliteWriter.take_turn``): the core's writer thread and this connection never
    wait for each other in SQLite's busy handler."""

    def __init__(self, db: sqlite3.Connection, writer: SqliteWriter) -> None:
        self._db = db
        self._writer = writer

    def __enter__(self) -> None:
        self._writer.take_turn()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._writer.give_turn()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type:
                self._db.execute("ROLLBACK")
                return
            try:
                self._db.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (the disk full) leaves the transaction open.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._writer.give_turn()


def _in_lists(values: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    """The values in chunks of at most IN_LIST_MAX, each with its "?,?,..." placeholders."""
    for start in range(0, len(values), IN_LIST_MAX):
        chunk = values[start : start + IN_LIST_MAX]
        yield chunk, ",".join("?" * len(chunk))


def _states(rows: BatchRows) -> list[SettledState]:
    return [SettledState(a.account_id, a.balance_minor, a.status) for a in rows.touched.values()]
