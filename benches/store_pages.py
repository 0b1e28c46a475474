"""WAL pages the SQLite store writes per settled payment, by payment id layout.

    .venv/bin/python benches/store_pages.py [--history 200000] [--batches 20] [--keys random]

For each id layout (uniformly random, as before issue 15, and time-ordered, as
``settlement/payment_ids.py`` makes them), in one process and the same build: a fresh
store with 20,000 subscribers, ``--history`` payments settled first (journal and commit
in batches of 500, the pipeline's two store calls), then ``--batches`` batches of 500
measured. Before each of the two calls the WAL is checkpointed and truncated, so the
WAL file's size after the call is the frames that one transaction wrote (SQLite writes
a page dirtied by a transaction once, as one frame of 4 KiB and a 24-byte header). The
figures are counts, not times: they do not depend on the machine's load.

``--keys sequential`` gives the batches the load generator's idempotency keys
(``RUN-N``, nearly in order); ``--keys random`` gives uuid4 keys, as callers that make
their keys at random do (their two unique indexes then take a page per payment whatever
the payment id). ``--drop-index NAME,...`` drops those indexes first: what an index
costs, for a decision about it (the store itself never runs without them).

``--store postgres`` does the same on PostgreSQL (a fresh database per layout, made by
``--pg-url``'s role): a CHECKPOINT, then the measured batches, then the WAL between the
two positions read back with pg_walinspect (as ``--pg-admin``, a superuser) and only
the records of this database's relations counted: bytes, records and full-page images
(a page's first change after a checkpoint logs the whole 8 KiB page), by relation.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _support import FINGERPRINT_KEY, subscribers

from quickpay_engine.api.convert import intent_of
from quickpay_engine.bench.scenario import Mix, RequestSource
from quickpay_engine.settlement.payment_ids import PaymentIdSource
from quickpay_engine.store import Decision, SqliteStore

AUDIT_KEY = b"a" * 32
BATCH = 500
WAL_HEADER = 32
FRAME = 24 + 4096


def random_ids(n: int) -> list[str]:
    """The layout before issue 15: 32 random hex digits."""
    digits = os.urandom(16 * n).hex()
    return ["pay_" + digits[32 * k : 32 * k + 32] for k in range(n)]


LAYOUTS: dict[str, Callable[[], Callable[[int], list[str]]]] = {
    "random": lambda: random_ids,
    "time-ordered": PaymentIdSource,
}


def frame_pages(wal: Path) -> list[int]:
    """The page number of every frame in the WAL (each frame's header starts with it)."""
    data = wal.read_bytes() if wal.exists() else b""
    return [int.from_bytes(data[at : at + 4], "big") for at in range(WAL_HEADER, len(data), FRAME)]


def run(layout: str, history: int, batches: int, keys: str, work: Path, drop: list[str]) -> dict:
    path = work / f"{layout}.sqlite3"
    wal = Path(f"{path}-wal")
    store = SqliteStore(path, AUDIT_KEY)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for name in drop:
            db.execute(f"DROP INDEX {name}")
    rows = subscribers(20_000)
    store.import_subscribers(rows)
    source = RequestSource(rows, seed=3, mix=Mix(invalid=0, declined=0), run_id=layout)
    ids = LAYOUTS[layout]()
    side = sqlite3.connect(path, isolation_level=None)

    def batch() -> list[Decision]:
        intents = [intent_of(r, FINGERPRINT_KEY) for r in source.take(BATCH)]
        if keys == "random":
            intents = [dataclasses.replace(i, idempotency_key=str(uuid.uuid4())) for i in intents]
        return [Decision(p, i) for p, i in zip(ids(BATCH), intents, strict=True)]

    def settle(decisions: list[Decision], counted: list[list[int]] | None) -> None:
        for call in (
            lambda: store.journal_attempts([(d.payment_id, d.intent) for d in decisions]),
            lambda: store.commit_batch(decisions),
        ):
            if counted is not None:
                side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            call()
            if counted is not None:
                counted.append(frame_pages(wal))

    started = time.monotonic()
    for _ in range(history // BATCH):
        settle(batch(), None)
    filled_s = time.monotonic() - started
    journal: list[int] = []
    commit: list[int] = []
    written: list[int] = []
    for _ in range(batches):
        counted: list[list[int]] = []
        settle(batch(), counted)
        journal.append(len(counted[0]))
        commit.append(len(counted[1]))
        written += counted[0] + counted[1]
    # Which table or index each written page belongs to now (dbstat, one scan at the end).
    owner = dict(side.execute("SELECT pageno, name FROM dbstat"))
    by_owner = collections.Counter(owner.get(page, "(freed or new)") for page in written)
    side.close()
    store.close()
    pages = (os.path.getsize(path)) // 4096
    n = batches * BATCH
    return {
        "journal": sum(journal) / n,
        "commit": sum(commit) / n,
        "bytes": (sum(journal) + sum(commit)) * FRAME / n,
        "db_pages": pages,
        "fill_s": filled_s,
        "by_owner": {name: count / n for name, count in by_owner.most_common()},
    }


BLOCK = re.compile(r"rel \d+/(\d+)/(\d+)")


def run_postgres(
    layout: str, history: int, batches: int, keys: str, pg_url: str, pg_admin: str
) -> dict:
    import psycopg

    from quickpay_engine.store.pg_migrations import migrate
    from quickpay_engine.store.postgres import PostgresStore

    name = f"qp_pages_{uuid.uuid4().hex[:10]}"
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=name)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        migrate(url)
        store = PostgresStore(url, AUDIT_KEY)
        rows = subscribers(20_000)
        store.import_subscribers(rows)
        source = RequestSource(rows, seed=3, mix=Mix(invalid=0, declined=0), run_id=layout)
        ids = LAYOUTS[layout]()

        def settle() -> None:
            intents = [intent_of(r, FINGERPRINT_KEY) for r in source.take(BATCH)]
            if keys == "random":
                intents = [
                    dataclasses.replace(i, idempotency_key=str(uuid.uuid4())) for i in intents
                ]
            decisions = [Decision(p, i) for p, i in zip(ids(BATCH), intents, strict=True)]
            store.journal_attempts([(d.payment_id, d.intent) for d in decisions])
            store.commit_batch(decisions)

        started = time.monotonic()
        for _ in range(history // BATCH):
            settle()
        filled_s = time.monotonic() - started
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(pg_admin, dbname=name), autocommit=True
        ) as su:
            su.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            (db_oid,) = su.execute(
                "SELECT oid FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            su.execute("CHECKPOINT")
            (start,) = su.execute("SELECT pg_current_wal_lsn()").fetchone()
            for _ in range(batches):
                settle()
            (end,) = su.execute("SELECT pg_current_wal_lsn()").fetchone()
            names = dict(su.execute("SELECT relfilenode::text, relname FROM pg_class"))
            total = fpi = records = images = 0
            by_owner: collections.Counter[str] = collections.Counter()
            for block_ref, length, fpi_length in su.execute(
                "SELECT block_ref, record_length, fpi_length"
                " FROM pg_get_wal_records_info(%s, %s) WHERE block_ref IS NOT NULL",
                [start, end],
            ):
                found = BLOCK.search(block_ref)
                if found is None or found.group(1) != str(db_oid):
                    continue
                total += length
                fpi += fpi_length
                records += 1
                images += block_ref.count("FPW")
                by_owner[names.get(found.group(2), found.group(2))] += length
        store.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    n = batches * BATCH
    return {
        "bytes": total / n,
        "fpi_bytes": fpi / n,
        "records": records / n,
        "images": images / n,
        "fill_s": filled_s,
        "by_owner": {k: v / n for k, v in by_owner.most_common(12)},
    }


def main_postgres(args: argparse.Namespace) -> None:
    print(
        f"PostgreSQL, history {args.history:,} payments, {args.batches} batches of {BATCH},"
        f" keys {args.keys}, a CHECKPOINT before the measured batches"
    )
    print("| ids | WAL bytes per payment | of which full-page images | records | page images |")
    print("|---|---|---|---|---|")
    for layout in args.layouts.split(","):
        f = run_postgres(layout, args.history, args.batches, args.keys, args.pg_url, args.pg_admin)
        print(
            f"| {layout} | {f['bytes']:,.0f} | {f['fpi_bytes']:,.0f} | {f['records']:.1f} |"
            f" {f['images']:.2f} | (history written in {f['fill_s']:.0f} s)",
            flush=True,
        )
        owners = ", ".join(f"{name} {per:,.0f}" for name, per in f["by_owner"].items())
        print(f"    WAL bytes per payment by relation: {owners}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--keys", choices=("sequential", "random"), default="sequential")
    parser.add_argument("--layouts", default="random,time-ordered")
    parser.add_argument("--drop-index", default="", help="comma-separated index names")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://quickpay@127.0.0.1:5432/quickpay_test")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.store == "postgres":
        main_postgres(args)
        return
    drop = [name for name in args.drop_index.split(",") if name]
    print(
        f"history {args.history:,} payments, {args.batches} batches of {BATCH},"
        f" keys {args.keys}, indexes dropped: {', '.join(drop) or 'none'}"
    )
    print("| ids | WAL frames per payment: journal | commit | both | WAL bytes per payment |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="store-pages-") as tmp:
        for layout in args.layouts.split(","):
            f = run(layout, args.history, args.batches, args.keys, Path(tmp), drop)
            print(
                f"| {layout} | {f['journal']:.2f} | {f['commit']:.2f} |"
                f" {f['journal'] + f['commit']:.2f} | {f['bytes']:,.0f} |"
                f" (file {f['db_pages']:,} pages, history written in {f['fill_s']:.0f} s)",
                flush=True,
            )
            owners = ", ".join(f"{name} {per:.2f}" for name, per in f["by_owner"].items())
            print(f"    pages per payment by table or index: {owners}", flush=True)


if __name__ == "__main__":
    main()
