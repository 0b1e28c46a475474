"""The production store: PostgreSQL, one database or three (billing, AR, provisioning).

The same interface and meaning as ``SqliteStore``, and the same rows (``rows.build``).
Calls are synchronous and come from one thread (``store.executor.StoreThread``), which
makes that thread the one writer: the payment sequence, the audit chain's head and the
outbox cursor are read and extended inside one transaction with no other writer.

Domains: billing holds subscribers, payment history, billing records, the audit trail,
the outbox, discrepancies and the review queue; the AR database holds ``ar_entries``;
provisioning holds the rules and ``provisioning_changes``. When all three URLs name one
database a batch is one local transaction. When they differ the store is a two-phase
commit participant: ``prepare_batch`` does the work in each database and prepares it,
and the coordinator (``settlement/twophase.py``) logs its decision and calls
``commit_prepared`` or ``rollback_prepared``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import errors, pq, sql

from quickpay_engine._engine import Engine, Reconciled
from quickpay_engine.domain import (
    BilledCapture,
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
from quickpay_engine.errors import ImportRowError, StoreError
from quickpay_engine.store.adjustments import (
    PENDING,
    AdjustmentRow,
    Statements,
    adjustment_of,
    applied_rows,
)
from quickpay_engine.store.audit import AuditRow, entries_rows, entry_rows
from quickpay_engine.store.audit_check import audit_problems
from quickpay_engine.store.checks import ACCOUNT_NETS, CHECKS
from quickpay_engine.store.pg_migrations import require_current
from quickpay_engine.store.provisioning import DEFAULT_RULES, ProvisioningRule
from quickpay_engine.store.records import PAYMENT_COLUMNS, payment_record
from quickpay_engine.store.rows import (
    Account,
    BatchRows,
    Decision,
    MissingAccount,
    RefundRequest,
    build,
    build_refund,
    failed_outcome,
    intent_from_json,
    intent_json,
)
from quickpay_engine.store.sqlite import (
    IDEMPOTENCY_CONFLICT,
    VERIFY_EXAMPLES_MAX,
    RefundRow,
    SettledState,
    bound_refund,
)
from quickpay_engine.store.subscriber_events import event_rows, write_lines
from quickpay_engine.subscriber_changes import (
    ChangePlan,
    ChangeResult,
    HeldLine,
    SubscriberChanges,
    audit_content,
    plan_changes,
)
from quickpay_engine.subscribers import LOAD_CHUNK_ROWS, open_file, read_chunks, upsert_rows

R = TypeVar("R")

# The three domains, in the order participants prepare and commit.
DOMAINS = ("billing", "ar", "provisioning")

# Every global transaction id this engine prepares starts with this, so recovery and the
# sweep touch only the engine's own prepared transactions, never another program's.
GID_PREFIX = "qp:"
# PostgreSQL's bound on a prepared transaction's identifier.
GID_BYTES_MAX = 200

# The server waits this long for a lock before failing the statement: a batch blocked
# behind an orphaned prepared transaction fails (and is retried) instead of hanging.
LOCK_TIMEOUT_MS = 5_000

# The statements on balance adjustments, with psycopg's parameter mark.
ADJUSTMENT_SQL = Statements.marked("%s")


@dataclass(frozen=True, slots=True)
class PostgresUrls:
    """Where each domain lives; equal URLs mean one database and local transactions."""

    billing: str
    ar: str
    provisioning: str

    @classmethod
    def single(cls, url: str) -> PostgresUrls:
        return cls(url, url, url)

    @property
    def split(self) -> bool:
        """True when the domains are in more than one database (two-phase commit)."""
        return len({self.billing, self.ar, self.provisioning}) > 1

    def of(self, domain: str) -> str:
        return str(getattr(self, domain))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A prepared transaction of ours found in one participant."""

    participant: str
    gid: str  # the batch's global id, without the participant suffix


class PostgresStore:
    """Billing, AR ledger and provisioning in PostgreSQL: one database or several."""

    def __init__(
        self, urls: PostgresUrls | str, audit_key: bytes | None = None, *, read_only: bool = False
    ) -> None:
        """``audit_key``: the audit chain's key (``store.audit.audit_key`` of the data
        dir); without it the store writes no audit row (and so no batch) and cannot
        verify the trail.

        ``read_only``: for a checker (`verify`, `audit verify`): every session is
        read-only (``default_transaction_read_only``), so any write fails, and the
        default provisioning rules are not written; a database behind on migrations is
        refused, as always, with the command that migrates it."""
        self.urls = PostgresUrls.single(urls) if isinstance(urls, str) else urls
        self.read_only = read_only
        self._audit_key = audit_key
        # The trail's last (seq, hash) as of this store's last commit that wrote to it,
        # for the ledger's anchor; None until then. Under two-phase commit, a prepared
        # batch's head waits in ``_prepared_heads`` until the billing database (which
        # holds the trail) has committed it.
        self.audit_head: tuple[int, str] | None = None
        self._written_head: tuple[int, str] | None = None
        self._prepared_heads: dict[str, tuple[int, str]] = {}
        # One connection per distinct database; a participant is named by the first
        # domain it holds.
        self._conns: dict[str, psycopg.Connection] = {}
        by_url: dict[str, str] = {}
        try:
            for domain in DOMAINS:
                url = self.urls.of(domain)
                if url not in by_url:
                    self._conns[domain] = _connect(url, read_only)
                    by_url[url] = domain
                    require_current(self._conns[domain], f"the {domain} database ({_safe(url)})")
        except BaseException:
            self.close()
            raise
        # Which participant holds each domain.
        self._holder = {domain: by_url[self.urls.of(domain)] for domain in DOMAINS}
        # Called as fence(url, conn) in every participant's transaction before a batch or
        # a refund is written; raises to write nothing (the server's ownership proof,
        # store/pg_owner.py). None: no check (tools, tests of the store alone).
        self.fence: Callable[[str, psycopg.Connection], None] | None = None
        if read_only:
            self.rules = self._load_rules()
            return
        with self._transaction(self._prov):
            self._prov.cursor().executemany(
                "INSERT INTO provisioning_rules (rule_id, priority, plan, from_status,"
                " to_status, owed_max_minor, credit_min_minor)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rule_id) DO NOTHING",
                [
                    (r.rule_id, n, int(r.plan), int(r.from_status), int(r.to_status),
                     r.owed_max_minor, r.credit_min_minor)
                    for n, r in enumerate(DEFAULT_RULES)
                ],
            )  # fmt: skip
        self.rules = self._load_rules()

    @property
    def _billing(self) -> psycopg.Connection:
        return self._conns[self._holder["billing"]]

    @property
    def _ar(self) -> psycopg.Connection:
        return self._conns[self._holder["ar"]]

    @property
    def _prov(self) -> psycopg.Connection:
        return self._conns[self._holder["provisioning"]]

    def _reconnect_broken(self) -> None:
        """Replaces a connection the server dropped (a restart, a failover, a killed
        backend) before a batch starts; the batch it broke was rolled back with it.
        Called first thing by the public methods (the store thread runs one at a time),
        so the store recovers from a restart of its database by itself; never inside a
        transaction, where a new connection would commit what follows on its own."""
        for name, conn in self._conns.items():
            if conn.closed or conn.broken:
                conn.close()
                self._conns[name] = _connect(self.urls.of(name), self.read_only)

    def open_reader(self) -> PostgresStore:
        """Other connections to the same databases, for reads on another thread: each
        statement sees every transaction committed before it and never waits for the
        writer (MVCC)."""
        return PostgresStore(self.urls, self._audit_key, read_only=self.read_only)

    @property
    def audit_key(self) -> bytes:
        if self._audit_key is None:
            raise StoreError("no audit key: open the store with the data dir's (open_store)")
        return self._audit_key

    @property
    def participants(self) -> list[str]:
        """The names of the distinct databases a batch writes to."""
        return list(self._conns)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()

    # -- subscribers -----------------------------------------------------------------

    def import_subscribers(self, rows: Sequence[SubscriberRow]) -> int:
        """Inserts or replaces every row in one transaction: all of them or none.

        The billing system's balance wins; the opening balance is set so that the balance
        still equals the opening balance plus what settled here (see `verify`).
        """
        try:
            with self._transaction(self._billing):
                self._billing.cursor().executemany(
                    "INSERT INTO subscribers (account_id, msisdn, plan, status, currency,"
                    " balance_minor, opening_balance_minor, country, sim_swapped_at_s,"
                    " created_at_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (account_id) DO UPDATE SET msisdn = excluded.msisdn,"
                    " plan = excluded.plan, status = excluded.status,"
                    " currency = excluded.currency, balance_minor = excluded.balance_minor,"
                    # What settled and was adjusted since the opening balance stays on
                    # top of the new balance (the row's own difference, no history sum).
                    " opening_balance_minor = excluded.balance_minor - (subscribers.balance_minor"
                    "   - subscribers.opening_balance_minor),"
                    " country = excluded.country,"
                    " sim_swapped_at_s = excluded.sim_swapped_at_s,"
                    " created_at_s = excluded.created_at_s",
                    [
                        (r.account_id, r.msisdn, int(r.plan), int(r.status), r.currency,
                         r.balance_minor, r.balance_minor, r.country, r.sim_swapped_at_s,
                         r.created_at_s)
                        for r in rows
                    ],
                )  # fmt: skip
        except errors.IntegrityError as err:
            raise StoreError(f"the import conflicts with the database: {err}") from None
        return len(rows)

    def apply_subscriber_changes(
        self, changes: SubscriberChanges, source: str = "", now_us: int | None = None
    ) -> ChangeResult:
        """``SqliteStore.apply_subscriber_changes``: one transaction in the billing
        database, which holds the subscribers and the audit trail (so it is local even
        when the domains are split), proving ownership first as a batch does."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._reconnect_broken()
        conn = self._billing
        self._written_head = None
        with self._transaction(conn):
            if self.fence is not None:
                self.fence(self.urls.of("billing"), conn)
            held: dict[str, HeldLine] = {}
            # FOR UPDATE: the balances read here are the ones the engine is told.
            for account, currency, balance, version in conn.execute(
                "SELECT s.account_id, s.currency, s.balance_minor, coalesce(v.version, 0)"
                " FROM subscribers s LEFT JOIN subscriber_versions v USING (account_id)"
                " WHERE s.account_id = ANY(%s) ORDER BY s.account_id FOR UPDATE OF s",
                (sorted(set(changes.account_ids)),),
            ):
                held[account] = HeldLine(version, currency, balance)
            plan = plan_changes(changes, held)
            if plan.applied:
                self._write_changes(conn, changes, plan, source, now_us)
        if self._written_head is not None:
            self.audit_head = self._written_head
        return ChangeResult(
            len(plan.applied), plan.stale, frozenset(plan.created), list(plan.lines.values())
        )

    def _write_changes(
        self,
        conn: psycopg.Connection,
        changes: SubscriberChanges,
        plan: ChangePlan,
        source: str,
        now_us: int,
    ) -> None:
        write_lines(conn.cursor(), "%s", errors.UniqueViolation, changes, plan, now_us)
        rows = entries_rows(
            self._audit_tail(),
            self.audit_key,
            (audit_content(changes, i, i in plan.opened, source, now_us) for i in plan.applied),
        )
        # The audit rows and an event per change (the trail's head is then the batch's).
        self._write(BatchRows(audit=rows, outbox=event_rows(changes, plan, now_us)))

    def subscriber_versions(self, account_ids: Sequence[str]) -> dict[str, int]:
        """The version the last live change left on each of these accounts (absent: none)."""
        self._reconnect_broken()
        rows = self._billing.execute(
            "SELECT account_id, version FROM subscriber_versions WHERE account_id = ANY(%s)",
            (list(account_ids),),
        )
        return dict(rows.fetchall())

    def import_subscriber_file(self, path: Path, replace: bool = False) -> tuple[int, int]:
        """Imports a subscriber file in one transaction, streamed: the core reads and
        checks it in chunks, each COPYed into a staging table, then merged. Upsert by
        default; ``replace``: lines missing from the file are CLOSED (never deleted).
        Returns (rows written, lines closed). Raises ImportRowError naming the first bad
        line in file order (a duplicate before a malformed line is the one named)."""
        source = open_file(path)
        self._reconnect_broken()
        rows = 0
        try:
            with self._transaction(self._billing):
                cursor = self._billing.cursor()
                cursor.execute(
                    "CREATE TEMP TABLE import_rows (line bigint NOT NULL, account_id text NOT"
                    " NULL, msisdn text NOT NULL, plan smallint NOT NULL, status smallint NOT"
                    " NULL, currency text NOT NULL, balance_minor bigint NOT NULL, country"
                    " text NOT NULL, sim_swapped_at_s bigint, created_at_s bigint NOT NULL)"
                    " ON COMMIT DROP"
                )
                bad: ImportRowError | None = None
                try:
                    for chunk in read_chunks(source):
                        with cursor.copy(
                            "COPY import_rows (line, account_id, msisdn, plan, status,"
                            " currency, balance_minor, country, sim_swapped_at_s,"
                            " created_at_s) FROM STDIN"
                        ) as copy:
                            for row in chunk:
                                copy.write_row(row)
                        rows += len(chunk)
                except ImportRowError as err:
                    bad = err
                # The first line repeating an earlier one's account or msisdn, before
                # the malformed line if there is one.
                twice = cursor.execute(
                    "SELECT line, what, value FROM (SELECT line, 'account_id' AS what,"
                    " account_id AS value, row_number() OVER (PARTITION BY account_id ORDER"
                    " BY line) AS n FROM import_rows UNION ALL SELECT line, 'msisdn',"
                    " msisdn, row_number() OVER (PARTITION BY msisdn ORDER BY line) FROM"
                    " import_rows) AS seen WHERE n = 2 ORDER BY line LIMIT 1"
                ).fetchone()
                if twice is not None and (bad is None or twice[0] < bad.line):
                    raise ImportRowError(twice[0], f"{twice[1]} {twice[2]!r} appears twice")
                if bad is not None:
                    raise bad
                closed = 0
                if replace:
                    closed = cursor.execute(
                        "UPDATE subscribers SET status = 4 WHERE status != 4 AND NOT EXISTS"
                        " (SELECT 1 FROM import_rows i WHERE i.account_id ="
                        " subscribers.account_id)"
                    ).rowcount
                cursor.execute(
                    "INSERT INTO subscribers (account_id, msisdn, plan, status, currency,"
                    " balance_minor, opening_balance_minor, country, sim_swapped_at_s,"
                    " created_at_s) SELECT account_id, msisdn, plan, status, currency,"
                    " balance_minor, balance_minor, country, sim_swapped_at_s, created_at_s"
                    " FROM import_rows ON CONFLICT (account_id) DO UPDATE SET msisdn ="
                    " excluded.msisdn, plan = excluded.plan, status = excluded.status,"
                    " currency = excluded.currency, balance_minor = excluded.balance_minor,"
                    # What settled and was adjusted since the opening balance stays on
                    # top of the new balance (the row's own difference, no history sum).
                    " opening_balance_minor = excluded.balance_minor - (subscribers.balance_minor"
                    "   - subscribers.opening_balance_minor),"
                    " country = excluded.country, sim_swapped_at_s ="
                    " excluded.sim_swapped_at_s, created_at_s = excluded.created_at_s"
                )
        except errors.IntegrityError as err:
            raise StoreError(f"the import conflicts with the database: {err}") from None
        return rows, closed

    def load_subscribers_into(self, engine: Engine) -> int:
        """Loads every subscriber into the engine's table, through a server-side
        cursor in column chunks: memory for one chunk, never the whole table."""
        self._reconnect_broken()
        n = 0
        with (
            self._billing.transaction(),
            self._billing.cursor(name="quickpay_subscribers_load") as cursor,
        ):
            cursor.execute(f"SELECT {_SUBSCRIBER_COLUMNS} FROM subscribers")  # noqa: S608
            while chunk := cursor.fetchmany(LOAD_CHUNK_ROWS):
                upsert_rows(engine, chunk)
                n += len(chunk)
        return n

    def load_subscribers(self) -> list[SubscriberRow]:
        """Every subscriber, as rows (tests and tools; serving never builds these)."""
        self._reconnect_broken()
        cursor = self._billing.execute(f"SELECT {_SUBSCRIBER_COLUMNS} FROM subscribers")  # noqa: S608
        return [_subscriber(row) for row in cursor]

    def subscriber(self, account_id: str) -> SubscriberRow | None:
        """One subscriber by account id."""
        self._reconnect_broken()
        row = self._billing.execute(
            f"SELECT {_SUBSCRIBER_COLUMNS} FROM subscribers WHERE account_id = %s",  # noqa: S608
            (account_id,),
        ).fetchone()
        return None if row is None else _subscriber(row)

    # -- payments --------------------------------------------------------------------

    def find_by_keys(self, keys: Iterable[str]) -> dict[str, PaymentRecord]:
        """Stored payments by idempotency key, for replays."""
        self._reconnect_broken()
        records = self._records("idempotency_key = ANY(%s)", [list(keys)])
        return {r.intent.idempotency_key: r for r in records}

    def get_payment(
        self, *, payment_id: str = "", idempotency_key: str = ""
    ) -> PaymentRecord | None:
        """One payment by id or by idempotency key."""
        self._reconnect_broken()
        if payment_id:
            records = self._records("payment_id = %s", [payment_id])
        else:
            records = self._records("idempotency_key = %s", [idempotency_key])
        return records[0] if records else None

    def commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Makes a batch of decisions durable in one local transaction.

        Only for a single database: with several, a batch commits through the two-phase
        coordinator (``prepare_batch`` and ``commit_prepared``), which logs its decision
        first. Failure handling is ``SqliteStore.commit_batch``'s: the whole batch at
        once, else one payment per savepoint so one bad payment sinks no other.
        """
        if not decisions:
            return [], []
        return self._local(lambda: self._do_batch(decisions, now_us))

    def finish_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """Records a refund the gateway made, in one transaction: billing, AR, history,
        provisioning, audit and outbox. Doing it again changes nothing. Returns the
        payment's status, its refunded total, and the account's state after. Several
        databases: through the two-phase coordinator (``prepare_refund``)."""
        return self._local(lambda: self._do_refund(refund_id, gateway_reference, now_us))

    def record_access(self, content: Mapping[str, object]) -> None:
        """Appends one row to the audit trail in a transaction of its own: who asked for
        a refund or a reconciliation run (``store.audit.ACCESS_*``). The trail lives in
        the billing database alone, so this needs no two-phase commit even when the
        domains are split. ``audit_head`` is the trail's head after it."""
        self._reconnect_broken()
        conn = self._billing
        self._written_head = None
        conn.execute("BEGIN")
        try:
            rows = entry_rows(self._audit_tail(), self.audit_key, content)
            _copy_rows(conn.cursor(), "audit_log", rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self.audit_head = (rows[-1][0], rows[-1][3])

    def _local(self, work: Callable[[], R]) -> R:
        if self.urls.split:
            raise StoreError(
                "the billing, AR and provisioning databases differ: this write commits"
                " through the two-phase coordinator (settlement/twophase.py)"
            )
        self._reconnect_broken()
        conn = self._billing
        self._written_head = None
        conn.execute("BEGIN")
        try:
            result = work()
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        # After COMMIT only: the ledger must never anchor a head that was rolled back.
        if self._written_head is not None:
            self.audit_head = self._written_head
        return result

    # -- two-phase commit participant -------------------------------------------------

    def prepare_batch(
        self, decisions: Sequence[Decision], gid: str, now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Does a batch's work in every database and prepares it under ``gid``.

        On return every participant holds a prepared transaction that survives a crash
        of either side; nothing is visible until ``commit_prepared``. On any failure
        nothing stays prepared: what was prepared is rolled back (presumed abort) and the
        error is raised.
        """
        return self._prepare(gid, lambda: self._do_batch(decisions, now_us))

    def prepare_refund(
        self, refund_id: str, gateway_reference: str, gid: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """``finish_refund``'s work in every database, prepared under ``gid``."""
        return self._prepare(gid, lambda: self._do_refund(refund_id, gateway_reference, now_us))

    def _prepare(self, gid: str, work: Callable[[], R]) -> R:
        _check_gid(gid)
        self._reconnect_broken()
        prepared: list[str] = []
        self._written_head = None
        try:
            for conn in self._conns.values():
                conn.execute("BEGIN")
            result = work()
            for name, conn in self._conns.items():
                conn.execute(
                    sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(_local_gid(gid, name)))
                )
                prepared.append(name)
        except BaseException:
            for name, conn in self._conns.items():
                if name in prepared:
                    # Unreachable now: the transaction stays prepared with no decision
                    # logged, and the coordinator's sweep rolls it back (presumed abort).
                    with contextlib.suppress(psycopg.OperationalError):
                        self._finish_prepared(name, gid, "ROLLBACK PREPARED")
                else:
                    _rollback(conn)
            raise
        if self._written_head is not None:
            self._prepared_heads[gid] = self._written_head
        return result

    def commit_prepared(self, gid: str, participants: Sequence[str] | None = None) -> None:
        """COMMIT PREPARED in each participant (all by default); one already committed
        (a redo after a crash) is skipped. Once the billing database has committed, the
        trail's head the batch wrote becomes ``audit_head`` (for the ledger's anchor)."""
        self._reconnect_broken()
        for name in participants if participants is not None else self._conns:
            self._finish_prepared(name, gid, "COMMIT PREPARED")
            head = self._prepared_heads.pop(gid, None) if name == self._holder["billing"] else None
            if head is not None and (self.audit_head is None or head[0] > self.audit_head[0]):
                self.audit_head = head

    def rollback_prepared(self, gid: str, participants: Sequence[str] | None = None) -> None:
        """ROLLBACK PREPARED in each participant (all by default); one already gone is
        skipped."""
        self._reconnect_broken()
        for name in participants if participants is not None else self._conns:
            self._finish_prepared(name, gid, "ROLLBACK PREPARED")
            if name == self._holder["billing"]:
                self._prepared_heads.pop(gid, None)

    def prepared(self) -> list[Prepared]:
        """Every prepared transaction of ours (``GID_PREFIX``) in every participant."""
        self._reconnect_broken()
        found: list[Prepared] = []
        for name, conn in self._conns.items():
            suffix = ":" + name
            for (local,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
                " AND starts_with(gid, %s) ORDER BY prepared",
                (GID_PREFIX,),
            ):
                if local.endswith(suffix):
                    found.append(Prepared(name, local.removesuffix(suffix)))
        return found

    def max_prepared_transactions(self) -> dict[str, int]:
        """Each participant server's ``max_prepared_transactions`` (0: two-phase commit
        is off there)."""
        out = {}
        for name, conn in self._conns.items():
            row = conn.execute("SHOW max_prepared_transactions").fetchone()
            out[name] = int(row[0]) if row else 0
        return out

    def _finish_prepared(self, name: str, gid: str, verb: str) -> None:
        statement = sql.SQL(verb + " {}").format(sql.Literal(_local_gid(gid, name)))
        # A prepared transaction that no longer exists was finished before (a redo of
        # recovery or a crash after the statement but before the log noted it).
        with contextlib.suppress(errors.UndefinedObject):
            self._conns[name].execute(statement)

    # -- the batch's work, shared by both commit paths -----------------------------------

    def _do_batch(
        self, decisions: Sequence[Decision], now_us: int | None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Writes the batch inside the open transactions: at once, else per payment."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._prove_owner()
        self._savepoint("SAVEPOINT batch")
        try:
            rows = self._build(decisions, now_us)
            self._write(rows)
        except (errors.IntegrityError, MissingAccount):
            self._savepoint("ROLLBACK TO SAVEPOINT batch")
        else:
            self._savepoint("RELEASE SAVEPOINT batch")
            return rows.outcomes, _states(rows)
        self._savepoint("RELEASE SAVEPOINT batch")
        outcomes: list[Outcome] = []
        touched: dict[str, SettledState] = {}
        for decision in decisions:
            self._savepoint("SAVEPOINT payment")
            try:
                rows = self._build([decision], now_us)
                self._write(rows)
            except errors.IntegrityError as err:
                self._savepoint("ROLLBACK TO SAVEPOINT payment")
                outcomes.append(self._replay_or_fail(decision, "STORE_REJECTED", str(err)))
            except MissingAccount as err:
                self._savepoint("ROLLBACK TO SAVEPOINT payment")
                outcomes.append(self._replay_or_fail(decision, "ACCOUNT_GONE", str(err)))
            else:
                outcomes.extend(rows.outcomes)
                touched.update((s.account_id, s) for s in _states(rows))
            self._savepoint("RELEASE SAVEPOINT payment")
        return outcomes, list(touched.values())

    def _prove_owner(self) -> None:
        if self.fence is not None:
            for name, conn in self._conns.items():
                self.fence(self.urls.of(name), conn)

    def _savepoint(self, statement: str) -> None:
        for conn in self._conns.values():
            conn.execute(statement)

    def _build(self, decisions: Sequence[Decision], now_us: int) -> BatchRows:
        wanted = sorted({d.intent.account_id for d in decisions if not d.decline_reason})
        accounts: dict[str, Account] = {}
        # FOR UPDATE: the balances read here are the ones the batch overwrites.
        for account_id, msisdn, plan, status, balance in self._billing.execute(
            "SELECT account_id, msisdn, plan, status, balance_minor FROM subscribers"
            " WHERE account_id = ANY(%s) ORDER BY account_id FOR UPDATE",
            (wanted,),
        ):
            accounts[account_id] = Account(
                account_id, msisdn, Plan(plan), LineStatus(status), balance
            )
        row = self._billing.execute("SELECT coalesce(max(seq), 0) FROM payments").fetchone()
        last_seq = row[0] if row else 0
        return build(
            decisions, accounts, self.rules, self._audit_tail(), last_seq + 1, now_us,
            self.audit_key,
        )  # fmt: skip

    def _audit_tail(self) -> AuditRow | None:
        row = self._billing.execute(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return AuditRow(*row) if row else None

    def _write(self, rows: BatchRows) -> None:
        # COPY, not INSERT: a batch's rows stream in one COPY per table, which measured
        # 2.4 times faster than executemany in pipeline mode and 1.35 times faster than
        # asyncpg's executemany (benches/RESULTS.md). A duplicate key still fails the COPY
        # with the same IntegrityError, so the per-payment fallback is unchanged.
        billing = self._billing.cursor()
        for table, batch in (
            ("payments", rows.payments),
            ("review_queue", rows.reviews),
            ("billing_records", rows.billing),
            ("audit_log", rows.audit),
            ("outbox", rows.outbox),
        ):
            _copy_rows(billing, table, batch)
        _copy_rows(self._ar.cursor(), "ar_entries", rows.ar)
        _copy_rows(self._prov.cursor(), "provisioning_changes", rows.provisioning)
        touched = list(rows.touched.values())
        if touched:
            billing.execute(
                "UPDATE subscribers s SET balance_minor = u.balance_minor, status = u.status"
                " FROM unnest(%s::text[], %s::bigint[], %s::smallint[])"
                "   AS u (account_id, balance_minor, status)"
                " WHERE s.account_id = u.account_id",
                (
                    [a.account_id for a in touched],
                    [a.balance_minor for a in touched],
                    [int(a.status) for a in touched],
                ),
            )
        if rows.payments:
            # The payment has ended here: its journal entry goes in the same transaction.
            billing.execute(
                "DELETE FROM settlement_attempts WHERE payment_id = ANY(%s)",
                ([row[1] for row in rows.payments],),
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
        self._reconnect_broken()
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        if not attempts:
            return []
        conn = self._billing
        keys = {intent.idempotency_key for _, intent in attempts}
        # A key twice in this call would fail the COPY for certain (and leave an ERROR
        # line in the server's log): the statement below takes the first of the two.
        idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
        if len(keys) == len(attempts) and idle:
            # Most calls conflict with nothing: one COPY takes them all, as one statement
            # in autocommit (all rows or none). It costs a fifth of the statement below,
            # whose three text[] parameters psycopg escapes in Python (benches/RESULTS.md,
            # "PayBatch on PostgreSQL"); the journal waits on the store thread, in stage
            # 1, so its cost bounds PayBatch. A key or id already journalled (or twice
            # in this call) fails the COPY and inserts nothing: then the statement below
            # says which ones are taken.
            rows = [
                (payment_id, intent.idempotency_key, intent_json(intent), now_us)
                for payment_id, intent in attempts
            ]
            try:
                _copy_rows(conn.cursor(), "settlement_attempts", rows)
            except errors.UniqueViolation:
                pass
            else:
                return [True] * len(attempts)
        # One statement for the whole batch (a round trip per payment cost more than the
        # rest of the saga's store work); rows are taken in order, so of two attempts with
        # one key in the same call the first is taken, as with one INSERT per attempt.
        taken = {
            payment_id
            for (payment_id,) in self._billing.execute(
                "INSERT INTO settlement_attempts (payment_id, idempotency_key, intent,"
                " created_at_us) SELECT p, k, i, %s FROM unnest(%s::text[], %s::text[],"
                " %s::text[]) WITH ORDINALITY AS a (p, k, i, n) ORDER BY n"
                " ON CONFLICT DO NOTHING RETURNING payment_id",
                (
                    now_us,
                    [payment_id for payment_id, _ in attempts],
                    [intent.idempotency_key for _, intent in attempts],
                    [intent_json(intent) for _, intent in attempts],
                ),
            )
        }
        return [payment_id in taken for payment_id, _ in attempts]

    def settled_or_declined_ids(self) -> list[tuple[str, int]]:
        """(payment_id, status) of every payment that went to a gateway (it has a
        gateway name), for checks against the ledger."""
        return self._billing.execute(
            "SELECT payment_id, status FROM payments WHERE gateway != '' ORDER BY seq"
        ).fetchall()

    def gateway_payments(self, gateway: str) -> dict[str, tuple[int, str, int]]:
        """payment_id -> (status, gateway_reference, refunded_minor) of every payment
        that went to ``gateway``, for checks against its books."""
        rows = self._billing.execute(
            "SELECT payment_id, status, gateway_reference, refunded_minor FROM payments"
            " WHERE gateway = %s",
            (gateway,),
        )
        return {p: (s, r, f) for p, s, r, f in rows}

    def attempts(self) -> dict[str, PaymentIntent]:
        """Every journalled payment not yet finished, by payment id."""
        self._reconnect_broken()
        cursor = self._billing.execute("SELECT payment_id, intent FROM settlement_attempts")
        return {payment_id: intent_from_json(text) for payment_id, text in cursor}

    def forget_attempts(self, payment_ids: Sequence[str]) -> None:
        """Removes journal entries of payments that ended without a history row (rolled
        back before any money moved: the caller never had an answer and may retry)."""
        self._reconnect_broken()
        self._billing.execute(
            "DELETE FROM settlement_attempts WHERE payment_id = ANY(%s)", (list(payment_ids),)
        )

    # -- refunds ---------------------------------------------------------------------------

    def refund_by_key(self, idempotency_key: str) -> RefundRow | None:
        """The refund recorded under this key, if any."""
        self._reconnect_broken()
        rows = self._refunds("idempotency_key = %s", (idempotency_key,))
        return rows[0] if rows else None

    def pending_refunds(self) -> list[RefundRow]:
        """Refunds sent (or about to be sent) to a gateway with no answer recorded."""
        self._reconnect_broken()
        return self._refunds("status = 'PENDING'", ())

    def begin_refund(self, row: RefundRow) -> RefundRow:
        """Records a refund as PENDING before the gateway is called; returns the row
        stored under its key (this one, or an earlier one for a replay). A key that holds
        a refund of another payment or amount raises ``IdempotencyConflict``."""
        self._reconnect_broken()
        self._billing.execute(
            "INSERT INTO refunds (refund_id, idempotency_key, payment_id, amount_minor,"
            " currency, reason, status, created_at_us)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'PENDING', %s) ON CONFLICT DO NOTHING",
            (row.refund_id, row.idempotency_key, row.payment_id, row.amount_minor,
             row.currency, row.reason, row.created_at_us),
        )  # fmt: skip
        stored = self.refund_by_key(row.idempotency_key)
        assert stored is not None
        return bound_refund(stored, row)

    def decline_refund(self, refund_id: str, reason: str, detail: str, now_us: int) -> None:
        """Records the gateway's refusal of a PENDING refund."""
        self._reconnect_broken()
        self._billing.execute(
            "UPDATE refunds SET status = 'DECLINED', decline_reason = %s, decline_detail = %s,"
            " finished_at_us = %s WHERE refund_id = %s AND status = 'PENDING'",
            (reason, detail, now_us, refund_id),
        )

    def _do_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """Writes one refund inside the open transactions (see ``finish_refund``)."""
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._prove_owner()
        (refund,) = self._refunds("refund_id = %s", (refund_id,))
        payment = self._records("payment_id = %s", [refund.payment_id])[0]
        if refund.status == "DONE":
            return payment.outcome.status, payment.refunded_minor, None
        i = payment.intent
        row = self._billing.execute(
            "SELECT msisdn, plan, status, balance_minor FROM subscribers"
            " WHERE account_id = %s FOR UPDATE",
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
        self._billing.execute(
            "UPDATE payments SET status = %s, refunded_minor = %s WHERE payment_id = %s",
            (int(after), refunded, refund.payment_id),
        )
        self._billing.execute(
            "UPDATE refunds SET status = 'DONE', gateway_reference = %s, finished_at_us = %s"
            " WHERE refund_id = %s",
            (gateway_reference, now_us, refund_id),
        )
        return after, refunded, _states(rows)[0]

    # -- balance adjustments (store/adjustments.py) ------------------------------------

    def adjustment_by_key(self, idempotency_key: str) -> AdjustmentRow | None:
        """The adjustment recorded under this key, if any."""
        self._reconnect_broken()
        rows = self._adjustments("idempotency_key = %s", (idempotency_key,))
        return rows[0] if rows else None

    def pending_adjustments(self) -> list[AdjustmentRow]:
        """Adjustments journalled and not yet applied (recovery finishes them)."""
        self._reconnect_broken()
        return self._adjustments("status = 'PENDING'", ())

    def begin_adjustment(self, row: AdjustmentRow) -> AdjustmentRow:
        """Records an adjustment, PENDING before its ledger transfer (or DECLINED, which
        ends it); returns the row stored under its key: this one, or an earlier one the
        caller compares with its payload."""
        self._reconnect_broken()
        self._billing.execute(ADJUSTMENT_SQL.insert, row.values())
        stored = self.adjustment_by_key(row.idempotency_key)
        assert stored is not None
        return stored

    def finish_adjustment(
        self, adjustment_id: str, now_us: int | None = None
    ) -> SettledState | None:
        """Applies a PENDING adjustment in one transaction: its AR legs, its audit row and
        the balance's move by its delta (never a rewrite of the row). Doing it again
        changes nothing (None). Several databases: through the two-phase coordinator
        (``prepare_adjustment``)."""
        return self._local(lambda: self._do_adjustment(adjustment_id, now_us))

    def prepare_adjustment(
        self, adjustment_id: str, gid: str, now_us: int | None = None
    ) -> SettledState | None:
        """``finish_adjustment``'s work in every database, prepared under ``gid``."""
        return self._prepare(gid, lambda: self._do_adjustment(adjustment_id, now_us))

    def _do_adjustment(self, adjustment_id: str, now_us: int | None) -> SettledState | None:
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._prove_owner()
        (a,) = self._adjustments("adjustment_id = %s FOR UPDATE", (adjustment_id,))
        if a.status != PENDING:
            return None
        line = self._billing.execute(ADJUSTMENT_SQL.line + " FOR UPDATE", (a.account_id,))
        rows, applied = applied_rows(
            a, line.fetchone(), self.rules, self._audit_tail(), now_us, self.audit_key
        )
        self._write(rows)
        self._billing.execute(ADJUSTMENT_SQL.applied, applied)
        return _states(rows)[0]

    def audit_adjustments(self, adjustment_ids: Sequence[str]) -> dict[str, AdjustmentRow]:
        """adjustment_id -> the adjustment, for the audit trail's cross-check."""
        rows = self._adjustments("adjustment_id = ANY(%s)", (list(adjustment_ids),))
        return {a.adjustment_id: a for a in rows}

    def applied_adjustment_count(self) -> int:
        """Adjustments applied (each has one audit row)."""
        row = self._billing.execute(
            "SELECT count(*) FROM balance_adjustments WHERE status = 'APPLIED'"
        ).fetchone()
        return int(row[0]) if row else 0

    def _adjustments(self, where: str, params: Sequence[object]) -> list[AdjustmentRow]:
        # `where` is one of this module's literals; values always go in `params`. FOR
        # UPDATE comes last, so no ORDER BY here (one row is asked for by id or key).
        cursor = self._billing.execute(ADJUSTMENT_SQL.select + where, params)
        return sorted(
            (adjustment_of(row) for row in cursor), key=lambda a: (a.created_at_us, a.adjustment_id)
        )

    def _refunds(self, where: str, params: Sequence[object]) -> list[RefundRow]:
        # `where` is one of this module's literals; values always go in `params`.
        cursor = self._billing.execute(
            "SELECT refund_id, idempotency_key, payment_id, amount_minor, currency, reason,"  # noqa: S608
            " status, gateway_reference, decline_reason, decline_detail, created_at_us"
            f" FROM refunds WHERE {where} ORDER BY created_at_us, refund_id",
            params,
        )
        return [RefundRow(*row) for row in cursor]

    def _replay_or_fail(self, decision: Decision, reason: str, error: str) -> Outcome:
        # Inside the batch's transaction: straight to the query, never through a public
        # method, which may replace a broken connection (see _reconnect_broken).
        key = decision.intent.idempotency_key
        stored = next(iter(self._records("idempotency_key = %s", [key])), None)
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
        cursor = self._billing.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE {where}",  # noqa: S608
            params,
        )
        return [payment_record(row) for row in cursor]

    # -- events -------------------------------------------------------------------------

    def outbox_after(
        self, cursor: int, kinds: Sequence[str] = (), account_id: str = "", limit: int = 256
    ) -> list[OutboxEvent]:
        """Events after ``cursor`` in cursor order, at most ``limit``, optionally filtered."""
        self._reconnect_broken()
        where, params = ["cursor > %s"], [cursor]
        if kinds:
            where.append("kind = ANY(%s)")
            params.append(list(kinds))  # type: ignore[arg-type]
        if account_id:
            where.append("account_id = %s")
            params.append(account_id)  # type: ignore[arg-type]
        rows = self._billing.execute(
            "SELECT cursor, event_id, kind, payment_id, account_id, payload, created_at_us"  # noqa: S608
            f" FROM outbox WHERE {' AND '.join(where)} ORDER BY cursor LIMIT %s",
            [*params, limit],
        )
        return [_event(row) for row in rows]

    def outbox_head(self) -> int:
        """The newest event's cursor (0 for none): one index lookup, so that watchers
        learn whether there is anything new without each reading a page."""
        self._reconnect_broken()
        row = self._billing.execute("SELECT coalesce(max(cursor), 0) FROM outbox").fetchone()
        return int(row[0]) if row else 0

    def outbox_unpublished(self, limit: int) -> list[OutboxEvent]:
        """The oldest events not yet acknowledged by the broker, in cursor order."""
        self._reconnect_broken()
        rows = self._billing.execute(
            "SELECT cursor, event_id, kind, payment_id, account_id, payload, created_at_us"
            " FROM outbox WHERE published_at_us IS NULL ORDER BY cursor LIMIT %s",
            (limit,),
        )
        return [_event(row) for row in rows]

    def mark_published(self, cursors: Sequence[int], now_us: int | None = None) -> None:
        """Records the broker's acknowledgement of these events."""
        self._reconnect_broken()
        now_us = now_us if now_us is not None else time.time_ns() // 1_000
        self._billing.execute(
            "UPDATE outbox SET published_at_us = %s WHERE cursor = ANY(%s)",
            (now_us, list(cursors)),
        )

    # -- reconciliation ------------------------------------------------------------------

    def billed_captures(self, gateway: str, from_us: int, to_us: int) -> list[BilledCapture]:
        """Payments settled through ``gateway`` with settled_at in [from_us, to_us)."""
        # A reconciliation's first call: on its own connection (settlement/service.py),
        # which nothing else would replace after a database restart.
        self._reconnect_broken()
        rows = self._billing.execute(
            "SELECT payment_id, gateway_reference, amount_minor, currency, settled_at_us,"
            " status IN (4, 5) FROM payments WHERE gateway = %s AND status IN (1, 4, 5)"
            " AND settled_at_us >= %s AND settled_at_us < %s",
            (gateway, from_us, to_us),
        )
        return [BilledCapture(p, r, a, c, t, bool(refunded)) for p, r, a, c, t, refunded in rows]

    def record_discrepancies(
        self, gateway: str, business_day: str, found: Sequence[Discrepancy], now_us: int
    ) -> dict[str, tuple[str, str]]:
        """Keeps each discrepancy once (a re-run only touches last_seen); returns the
        (status, note) of every one, as investigators left them."""
        with self._transaction(self._billing):
            self._billing.cursor().executemany(
                "INSERT INTO discrepancies (discrepancy_id, gateway, business_day, category,"
                " payment_id, gateway_reference, gateway_amount_minor, billing_amount_minor,"
                " currency, detail, first_seen_at_us, last_seen_at_us)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (discrepancy_id) DO UPDATE"
                " SET last_seen_at_us = excluded.last_seen_at_us",
                [
                    (d.discrepancy_id, gateway, business_day, d.category, d.payment_id,
                     d.gateway_reference, d.gateway_amount_minor, d.billing_amount_minor,
                     d.currency, d.detail, now_us, now_us)
                    for d in found
                ],
            )  # fmt: skip
        rows = self._billing.execute(
            "SELECT discrepancy_id, status, note FROM discrepancies WHERE discrepancy_id = ANY(%s)",
            ([d.discrepancy_id for d in found],),
        )
        return {discrepancy_id: (status, note) for discrepancy_id, status, note in rows}

    def record_reconciled(
        self,
        found: Reconciled,
        gateway: str,
        business_day: str,
        start: int,
        stop: int,
        now_us: int,
    ) -> None:
        """``record_discrepancies`` of a reconciliation's discrepancies ``start..stop``
        (Python objects, a chunk at a time: PostgreSQL is not the embedded default the
        isolation bench measures), their states kept in ``found``."""
        chunk = [Discrepancy(*d) for d in found.discrepancies(start, stop)]
        states = self.record_discrepancies(gateway, business_day, chunk, now_us)
        found.set_states(start, [states[d.discrepancy_id] for d in chunk])

    def set_discrepancy(self, discrepancy_id: str, status: str, note: str) -> bool:
        """Records an investigation's progress; False when there is no such discrepancy."""
        cursor = self._billing.execute(
            "UPDATE discrepancies SET status = %s, note = %s WHERE discrepancy_id = %s",
            (status, note, discrepancy_id),
        )
        return cursor.rowcount == 1

    def open_discrepancies(self) -> int:
        """Discrepancies not yet RESOLVED (the metrics' gauge)."""
        (n,) = self._billing.execute(
            "SELECT count(*) FROM discrepancies WHERE status <> 'RESOLVED'"
        ).fetchone()
        return int(n)

    # -- invariants -----------------------------------------------------------------------

    def account_nets(self) -> list[tuple[str, str, int]]:
        """(account_id, currency, billing's net movement) of every subscriber: payments
        in less refunds out, what the engine's ledger must hold for the account."""
        return [(a, c, int(n)) for a, c, n in self._billing.execute(ACCOUNT_NETS).fetchall()]

    def verify(self, audit_anchor: tuple[int, str] | None = None) -> list[str]:
        """Checks the databases' invariants; returns one line per violation (at most
        ``VERIFY_EXAMPLES_MAX`` examples per check), empty when everything holds.

        With a separate AR database its entries are copied into a temporary table of the
        billing session (a temporary table hides the permanent one of the same name), so
        the cross-domain checks are the same SQL as on one database.
        """
        problems: list[str] = []
        conn = self._billing
        copy = self._ar is not conn
        # The temporary copy is written in a read-write transaction even in a read-only
        # session (a checker's): it is the one table written, the session's own, and
        # the rollback below drops it.
        conn.execute("BEGIN READ WRITE" if copy else "BEGIN")
        try:
            if copy:
                _copy_ar_entries(self._ar, conn)
            for what, check in CHECKS:
                found = conn.execute(f"{check} LIMIT {VERIFY_EXAMPLES_MAX}").fetchall()  # type: ignore[arg-type]
                problems.extend(f"{what}: {', '.join(map(str, row))}" for row in found)
        finally:
            _rollback(conn)  # drops the temporary copy
        problems.extend(audit_problems(self, self.audit_key, audit_anchor))
        problems.extend(
            f"prepared transaction left unresolved in {p.participant}: {p.gid}"
            for p in self.prepared()
        )
        return problems

    # -- provisioning and audit ---------------------------------------------------------

    def _load_rules(self) -> list[ProvisioningRule]:
        cursor = self._prov.execute(
            "SELECT rule_id, plan, from_status, to_status, owed_max_minor, credit_min_minor"
            " FROM provisioning_rules ORDER BY priority, rule_id"
        )
        return [
            ProvisioningRule(r, Plan(p), LineStatus(f), LineStatus(t), o, c)
            for r, p, f, t, o, c in cursor
        ]

    def audit_rows(self) -> Iterator[AuditRow]:
        """The audit trail in sequence order, for `quickpay audit verify`."""
        cursor = self._billing.execute(
            "SELECT seq, prev_hash, content, row_hash FROM audit_log ORDER BY seq"
        )
        return (AuditRow(*row) for row in cursor)

    # What the audit rows are checked against (store/audit_check.py).

    def audit_payments(self, payment_ids: Sequence[str]) -> dict[str, tuple[str, int, str, int]]:
        """payment_id -> (account_id, amount_minor, currency, status) of these payments."""
        rows = self._billing.execute(
            "SELECT payment_id, account_id, amount_minor, currency, status FROM payments"
            " WHERE payment_id = ANY(%s)",
            (list(payment_ids),),
        )
        return {p: (a, amount, c, status) for p, a, amount, c, status in rows}

    def audit_refunds(self, refund_ids: Sequence[str]) -> dict[str, tuple[str, int, str, str]]:
        """refund_id -> (payment_id, amount_minor, currency, status) of these refunds."""
        rows = self._billing.execute(
            "SELECT refund_id, payment_id, amount_minor, currency, status FROM refunds"
            " WHERE refund_id = ANY(%s)",
            (list(refund_ids),),
        )
        return {r: (p, amount, c, status) for r, p, amount, c, status in rows}

    def audit_ar_legs(
        self, document_ids: Sequence[str]
    ) -> dict[str, list[tuple[int, str, int, int, str]]]:
        """document_id -> its AR legs (leg, ar_account, debit, credit, currency), by leg."""
        found: dict[str, list[tuple[int, str, int, int, str]]] = {}
        for d, leg, account, debit, credit, c in self._ar.execute(
            "SELECT document_id, leg, ar_account, debit_minor, credit_minor, currency"
            " FROM ar_entries WHERE document_id = ANY(%s) ORDER BY document_id, leg",
            (list(document_ids),),
        ):
            found.setdefault(d, []).append((leg, account, debit, credit, c))
        return found

    def payment_count(self) -> int:
        """Payments in history."""
        row = self._billing.execute("SELECT count(*) FROM payments").fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def _transaction(self, conn: psycopg.Connection) -> Iterator[None]:
        conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("COMMIT")


# The columns of each table a batch writes, in the order of `rows.BatchRows`' tuples.
WRITE_COLUMNS = {
    "payments": "seq, payment_id, idempotency_key, fingerprint, account_id, msisdn,"
    " amount_minor, currency, purpose, method_kind, method_display, channel, device_id, ip,"
    " status, decline_reason, decline_detail, confirmation_id, settled_at_us,"
    " balance_after_minor, service_state_after, gateway, gateway_reference, fraud_score,"
    " fraud_decision, fraud_reasons, created_at_us, sender",
    "review_queue": "payment_id, account_id, score, reasons, created_at_us",
    "billing_records": "record_id, payment_id, account_id, kind, amount_minor, currency,"
    " balance_delta_minor, balance_after_minor, created_at_us",
    "ar_entries": "document_id, payment_id, leg, ar_account, debit_minor, credit_minor,"
    " currency, created_at_us",
    "provisioning_changes": "document_id, payment_id, account_id, msisdn, state_before,"
    " state_after, rule_id, changed_at_us",
    "audit_log": "seq, prev_hash, content, row_hash",
    "settlement_attempts": "payment_id, idempotency_key, intent, created_at_us",
    "outbox": "event_id, kind, payment_id, account_id, payload, created_at_us",
}


def _copy_rows(cursor: psycopg.Cursor, table: str, rows: Sequence[tuple[object, ...]]) -> None:
    if not rows:
        return
    # `table` is one of WRITE_COLUMNS' keys, never input.
    with cursor.copy(f"COPY {table} ({WRITE_COLUMNS[table]}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


_SUBSCRIBER_COLUMNS = (
    "account_id, msisdn, plan, status, currency, balance_minor, country, sim_swapped_at_s,"
    " created_at_s"
)


def _subscriber(row: tuple) -> SubscriberRow:  # type: ignore[type-arg]
    a, m, p, s, c, b, co, sw, cr = row
    return SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)


def _event(row: tuple) -> OutboxEvent:  # type: ignore[type-arg]
    c, e, k, p, a, payload, at = row
    return OutboxEvent(c, e, k, p, a, json.loads(payload), at)


def _states(rows: BatchRows) -> list[SettledState]:
    return [SettledState(a.account_id, a.balance_minor, a.status) for a in rows.touched.values()]


def _connect(url: str, read_only: bool = False) -> psycopg.Connection:
    # autocommit: transactions are explicit (BEGIN ... COMMIT or PREPARE TRANSACTION).
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    if read_only:
        conn.execute("SET default_transaction_read_only = on")
    return conn


def _rollback(conn: psycopg.Connection) -> None:
    """Ends an open transaction; a broken connection has nothing left to roll back."""
    with contextlib.suppress(psycopg.OperationalError):
        conn.execute("ROLLBACK")


def _local_gid(gid: str, participant: str) -> str:
    # Prepared transaction ids are unique per server, and several participants may share
    # one server: each gets the batch's id with its own name after it.
    return f"{gid}:{participant}"


def _check_gid(gid: str) -> None:
    longest = max(len(_local_gid(gid, name).encode()) for name in DOMAINS)
    if not gid.startswith(GID_PREFIX) or longest >= GID_BYTES_MAX:
        raise ValueError(f"global transaction id {gid!r}: needs {GID_PREFIX!r}, < 200 bytes")


def _copy_ar_entries(source: psycopg.Connection, target: psycopg.Connection) -> None:
    target.execute(
        "CREATE TEMPORARY TABLE ar_entries (document_id TEXT NOT NULL, payment_id TEXT NOT NULL,"
        " leg SMALLINT NOT NULL, ar_account TEXT NOT NULL, debit_minor BIGINT NOT NULL,"
        " credit_minor BIGINT NOT NULL, currency TEXT NOT NULL) ON COMMIT DROP"
    )
    columns = "document_id, payment_id, leg, ar_account, debit_minor, credit_minor, currency"
    with (
        source.cursor().copy(f"COPY (SELECT {columns} FROM ar_entries) TO STDOUT") as out,  # noqa: S608
        target.cursor().copy(f"COPY ar_entries ({columns}) FROM STDIN") as into,
    ):
        for chunk in out:
            into.write(chunk)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))
