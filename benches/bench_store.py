"""A store batch commit (SqliteStore.commit_batch, WAL journal, synchronous=FULL)
against its floor, a raw write and fsync of a page on the same disk in the same run.
A commit costs at least one fsync; the ratio says what the SQL around it adds."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import pytest
from _support import FINGERPRINT_KEY, size, subscribers

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.settlement.payment_ids import new_payment_ids
from quickpay_engine.store import Decision, SqliteStore
from quickpay_engine.store.postgres import WRITE_COLUMNS

# The audit chain's key of the benchmarks' stores.
AUDIT_KEY = b"a" * 32

SUBSCRIBERS = size(5_000, 100)
BATCH = size(512, 16)
ROUNDS = size(30, 1)
PAGE = b"\xa5" * 4096


@pytest.fixture
def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "bench.sqlite3")
    rows = subscribers(SUBSCRIBERS)
    store.import_subscribers(rows)
    yield store, rows
    store.close()


@pytest.mark.parametrize("batch", [1, BATCH], ids=["single", "batch"])
def test_store_commit_batch(benchmark, store, batch) -> None:
    db, rows = store
    runs = itertools.count()
    source = RequestSource(rows, seed=batch, mix=Mix(invalid=0, declined=0), run_id="commit")

    def fresh() -> tuple[tuple[list[Decision]], dict]:
        # New keys every round: a key already stored would be a replay, not a commit.
        next(runs)
        decisions = [
            Decision(new_payment_ids(1)[0], intent_of(r, FINGERPRINT_KEY))
            for r in source.take(batch)
        ]
        return (decisions,), {}

    benchmark.extra_info["rows_per_call"] = batch
    benchmark.extra_info["baseline"] = "test_raw_fsync_same_disk"
    outcomes, _ = benchmark.pedantic(db.commit_batch, setup=fresh, rounds=ROUNDS)
    assert len(outcomes) == batch
    assert all(o.status.name == "SETTLED" for o in outcomes)


def test_raw_fsync_same_disk(benchmark, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)

    def write_and_sync() -> int:
        n = os.pwrite(fd, PAGE, 0)
        os.fsync(fd)
        return n

    try:
        benchmark.extra_info["rows_per_call"] = 1
        assert benchmark.pedantic(write_and_sync, rounds=ROUNDS * 2, warmup_rounds=1) == len(PAGE)
    finally:
        os.close(fd)


# -- PostgreSQL: the driver choice (issue 7) --------------------------------------------
#
# One batch's rows (512 payments: payments, billing records, AR legs, audit rows, outbox
# events, as `rows.build` makes them) inserted and committed in one transaction, through
# psycopg 3's executemany (pipeline mode: one round trip per statement batch) and through
# asyncpg's executemany (prepared statement, binary protocol). Same SQL, same rows, same
# server, same run. The psycopg figure is the baseline, since it is the driver the store
# uses; test_pg_store_commit_batch is the whole PostgresStore.commit_batch for scale.

PG_URL = os.environ.get(
    "QUICKPAY_BENCH_PG_URL", "postgresql://quickpay@127.0.0.1:5432/quickpay_test"
)
PG_COLUMNS = WRITE_COLUMNS
# (table, column count) for the tables one batch of settlements writes.
PG_TABLES = [
    (t, len(PG_COLUMNS[t].split(",")))
    for t in ("payments", "billing_records", "ar_entries", "audit_log", "outbox")
]


@pytest.fixture(scope="module")
def pg_database():
    """A fresh, migrated database for this module (skipped without a server)."""
    import uuid

    import psycopg

    from quickpay_engine.store.pg_migrations import migrate

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {err}")
    name = f"qp_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(PG_URL)
    url = f"postgresql://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    try:
        migrate(url)
        from quickpay_engine.store.postgres import PostgresStore

        with contextlib.closing(PostgresStore(url)) as store:
            store.import_subscribers(subscribers(SUBSCRIBERS))
        yield url
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class PgBatches:
    """Fresh rows for one batch per call: new payment ids, sequences after the last."""

    def __init__(self, count: int, first_seq: int, run_id: str) -> None:
        from quickpay_engine.store.provisioning import DEFAULT_RULES
        from quickpay_engine.store.rows import Account, build

        self._build, self._rules, self._account = build, DEFAULT_RULES, Account
        self._rows = subscribers(SUBSCRIBERS)
        self._source = RequestSource(
            self._rows, seed=3, mix=Mix(invalid=0, declined=0), run_id=run_id
        )
        self._count = count
        self._seq = first_seq

    def __call__(self):
        from quickpay_engine.store.audit import GENESIS, AuditRow, chain_hash

        # A keyed head, so that the rows continue it with no marker row.
        head = AuditRow(self._seq, GENESIS, "", chain_hash(AUDIT_KEY, GENESIS, self._seq, ""))
        decisions = [
            Decision(new_payment_ids(1)[0], intent_of(r, FINGERPRINT_KEY))
            for r in self._source.take(self._count)
        ]
        accounts = {
            r.account_id: self._account(r.account_id, r.msisdn, r.plan, r.status, r.balance_minor)
            for r in self._rows
        }
        rows = self._build(decisions, accounts, self._rules, head, self._seq + 1, 1, AUDIT_KEY)
        self._seq += self._count
        return {
            "payments": rows.payments,
            "billing_records": rows.billing,
            "ar_entries": rows.ar,
            "audit_log": rows.audit,
            "outbox": rows.outbox,
        }


def test_pg_rows_psycopg_pipeline(benchmark, pg_database) -> None:
    import psycopg

    batches = PgBatches(BATCH, first_seq=0, run_id="psycopg")
    statements = {
        t: f"INSERT INTO {t} ({PG_COLUMNS[t]}) VALUES ({', '.join(['%s'] * n)})"
        for t, n in PG_TABLES
    }
    with psycopg.connect(pg_database) as conn:

        def write(rows) -> int:
            with conn.transaction():
                cur = conn.cursor()
                for table, sql in statements.items():
                    cur.executemany(sql, rows[table])
            return len(rows["payments"])

        benchmark.extra_info["rows_per_call"] = BATCH
        n = benchmark.pedantic(write, setup=lambda: ((batches(),), {}), rounds=ROUNDS)
    assert n == BATCH


def test_pg_rows_psycopg_copy(benchmark, pg_database) -> None:
    import psycopg

    batches = PgBatches(BATCH, first_seq=2 * 10**9, run_id="copy")
    with psycopg.connect(pg_database) as conn:

        def write(rows) -> int:
            with conn.transaction():
                cur = conn.cursor()
                for table, _ in PG_TABLES:
                    with cur.copy(f"COPY {table} ({PG_COLUMNS[table]}) FROM STDIN") as copy:
                        for row in rows[table]:
                            copy.write_row(row)
            return len(rows["payments"])

        benchmark.extra_info["rows_per_call"] = BATCH
        benchmark.extra_info["baseline"] = "test_pg_rows_psycopg_pipeline"
        n = benchmark.pedantic(write, setup=lambda: ((batches(),), {}), rounds=ROUNDS)
    assert n == BATCH


def test_pg_rows_asyncpg(benchmark, pg_database) -> None:
    import asyncio

    import asyncpg

    batches = PgBatches(BATCH, first_seq=10**9, run_id="asyncpg")  # apart from the psycopg rows
    statements = {
        t: f"INSERT INTO {t} ({PG_COLUMNS[t]}) VALUES ({', '.join(f'${k}' for k in range(1, n + 1))})"
        for t, n in PG_TABLES
    }
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(pg_database))

    async def write_async(rows) -> int:
        async with conn.transaction():
            for table, sql in statements.items():
                await conn.executemany(sql, rows[table])
        return len(rows["payments"])

    try:
        benchmark.extra_info["rows_per_call"] = BATCH
        benchmark.extra_info["baseline"] = "test_pg_rows_psycopg_pipeline"
        n = benchmark.pedantic(
            lambda rows: loop.run_until_complete(write_async(rows)),
            setup=lambda: ((batches(),), {}),
            rounds=ROUNDS,
        )
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
    assert n == BATCH


def test_pg_store_commit_batch(benchmark, pg_database) -> None:
    from quickpay_engine.store.postgres import PostgresStore

    with contextlib.closing(PostgresStore(pg_database, AUDIT_KEY)) as db:
        rows = subscribers(SUBSCRIBERS)
        db.import_subscribers(rows)
        source = RequestSource(rows, seed=5, mix=Mix(invalid=0, declined=0), run_id="pgstore")

        def fresh():
            decisions = [
                Decision(new_payment_ids(1)[0], intent_of(r, FINGERPRINT_KEY))
                for r in source.take(BATCH)
            ]
            return (decisions,), {}

        benchmark.extra_info["rows_per_call"] = BATCH
        benchmark.extra_info["baseline"] = "test_pg_rows_psycopg_pipeline"
        outcomes, _ = benchmark.pedantic(db.commit_batch, setup=fresh, rounds=ROUNDS)
    assert all(o.status.name == "SETTLED" for o in outcomes)


def test_pg_store_journal_attempts(benchmark, pg_database) -> None:
    """The saga's journal of one batch (``journal_attempts``): stage 1 waits for it on the
    store thread, behind the commits of the batches before."""
    from quickpay_engine.store.postgres import PostgresStore

    with contextlib.closing(PostgresStore(pg_database, AUDIT_KEY)) as db:
        rows = subscribers(SUBSCRIBERS)
        source = RequestSource(rows, seed=6, mix=Mix(invalid=0, declined=0), run_id="pgjournal")

        def fresh():
            attempts = [
                (new_payment_ids(1)[0], intent_of(r, FINGERPRINT_KEY)) for r in source.take(BATCH)
            ]
            return (attempts,), {}

        benchmark.extra_info["rows_per_call"] = BATCH
        taken = benchmark.pedantic(db.journal_attempts, setup=fresh, rounds=ROUNDS)
    assert taken == [True] * BATCH
