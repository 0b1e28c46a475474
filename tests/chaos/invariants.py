"""The invariants every chaos scenario checks once its faults are over, with the engine
stopped (SIGTERM, drained) and the gateways and the broker still up.

Each check returns the problems it found, as sentences; a scenario passes when there are
none. Every verdict is a count (of payments, events, discrepancies), never a time:

1. every payment a caller heard SETTLED is settled in billing and captured at a gateway;
2. no idempotency key settled twice (in the answers, in billing, at the gateways);
3. `quickpay verify` and `quickpay audit verify` are clean;
4. every gateway's settlement report reconciles with zero discrepancies;
5. no prepared transaction is left on the database server;
6. the events in NATS are the outbox's, none missing, none doubled, none unpublished.

The gateways are read only through their HTTP API (their settlement report), the
engine only through its commands and its database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from chaos.procs import Engine, PgCluster, quickpay
from quickpay_engine.domain import PaymentStatus
from quickpay_engine.events.jetstream import STREAM

SETTLED_STATES = {int(PaymentStatus.SETTLED), int(PaymentStatus.REFUNDED),
                  int(PaymentStatus.PARTIALLY_REFUNDED)}  # fmt: skip
# At most this many examples of one broken invariant are listed.
EXAMPLES_MAX = 5


@dataclass
class World:
    """What a scenario ran: the engine's settings, the gateways, the broker, the answers."""

    engine: Engine
    gateways: dict[str, str]  # name -> base URL
    answers: list[dict[str, str]]
    nats_url: str | None = None
    pg: PgCluster | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


def _examples(items: list[str]) -> str:
    more = f" (+{len(items) - EXAMPLES_MAX} more)" if len(items) > EXAMPLES_MAX else ""
    return ", ".join(items[:EXAMPLES_MAX]) + more


# --- reading the store ----------------------------------------------------------------


def _query(engine: Engine, sql: str) -> list[tuple]:
    """Rows from the billing database (SQLite file or PostgreSQL), read-only."""
    if engine.database_urls:
        with psycopg.connect(engine.database_urls[0]) as conn:
            return conn.execute(sql).fetchall()
    db = sqlite3.connect(f"file:{engine.data_dir / 'quickpay.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def billing_payments(engine: Engine) -> dict[str, tuple[str, int]]:
    """payment id -> (idempotency key, status) of every payment billing holds."""
    rows = _query(engine, "SELECT payment_id, idempotency_key, status FROM payments")
    return {p: (k, s) for p, k, s in rows}


def unfinished(engine: Engine) -> int:
    """Payments journalled and not yet finished (the saga's journal)."""
    return _query(engine, "SELECT count(*) FROM settlement_attempts")[0][0]


def unpublished(engine: Engine) -> int:
    """Outbox events the relay has not yet published."""
    return _query(engine, "SELECT count(*) FROM outbox WHERE published_at_us IS NULL")[0][0]


# --- reading the gateways -------------------------------------------------------------


def business_days(world: World) -> list[str]:
    """Every UTC day the scenario touched (a run may cross midnight)."""
    first, last = world.started.date(), datetime.now(UTC).date()
    days = []
    while first <= last:
        days.append(first.isoformat())
        first += timedelta(days=1)
    return days


def gateway_report(url: str, day: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/reports/settlement?business_day={day}", timeout=60) as r:
        return r.read().decode()


# --- the checks -----------------------------------------------------------------------


def check_settled_everywhere(world: World, reports: dict[tuple[str, str], str]) -> list[str]:
    """Invariants 1 and 2: what callers heard SETTLED is settled in billing and captured
    once at a gateway; no key settled under two payment ids; every capture credited."""
    problems: list[str] = []
    billed = billing_payments(world.engine)
    captures: Counter[str] = Counter()
    for text in reports.values():
        for row in csv.DictReader(io.StringIO(text)):
            if row["type"] == "CAPTURE" and row["status"] == "SETTLED":
                captures[row["merchant_reference"]] += 1
    acked: dict[str, set[str]] = defaultdict(set)
    for a in world.answers:
        if a["status"] == "SETTLED":
            acked[a["idempotency_key"]].add(a["payment_id"])
    twice = [k for k, ids in acked.items() if len(ids) > 1]
    if twice:
        problems.append(
            f"{len(twice)} keys answered SETTLED under two payment ids: {_examples(twice)}"
        )
    ids = {p for ps in acked.values() for p in ps}
    not_billed = sorted(p for p in ids if billed.get(p, ("", 0))[1] not in SETTLED_STATES)
    if not_billed:
        problems.append(
            f"{len(not_billed)} payments answered SETTLED are not settled in billing: {_examples(not_billed)}"
        )
    not_captured = sorted(p for p in ids if captures[p] == 0)
    if not_captured:
        problems.append(
            f"{len(not_captured)} payments answered SETTLED hold no capture at any gateway: {_examples(not_captured)}"
        )
    doubled = sorted(p for p, n in captures.items() if n > 1)
    if doubled:
        problems.append(f"{len(doubled)} payments captured twice: {_examples(doubled)}")
    half = sorted(p for p in captures if billed.get(p, ("", 0))[1] not in SETTLED_STATES)
    if half:
        problems.append(
            f"{len(half)} captures not credited in billing (half settled): {_examples(half)}"
        )
    settled_keys = Counter(k for k, s in billed.values() if s in SETTLED_STATES)
    keys_twice = sorted(k for k, n in settled_keys.items() if n > 1)
    if keys_twice:
        problems.append(f"{len(keys_twice)} keys settled twice in billing: {_examples(keys_twice)}")
    return problems


def check_verify(world: World) -> list[str]:
    """Invariant 3: `quickpay verify` and `quickpay audit verify` exit 0."""
    problems = []
    flags = world.engine.store_flags()
    env = world.engine.command_env()
    for command in (["verify"], ["audit", "verify"]):
        done = quickpay(*command, *flags, env=env)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).strip().replace("\n", " | ")
            problems.append(f"quickpay {' '.join(command)} exited {done.returncode}: {out[:600]}")
    return problems


def check_reconcile(world: World, reports: dict[tuple[str, str], str], workdir: Path) -> list[str]:
    """Invariant 4: each gateway's report of each day reconciles with no discrepancy."""
    problems = []
    for (name, day), text in sorted(reports.items()):
        if text.count("\n") <= 1:
            continue  # no row that day: nothing to reconcile
        path = workdir / f"report-{name}-{day}.csv"
        path.write_text(text)
        done = quickpay("reconcile", str(path), "--gateway", name, "--business-day", day,
                        "--format", "json", *world.engine.store_flags(),
                        env=world.engine.command_env())  # fmt: skip
        try:
            found = json.loads(done.stdout)["discrepancies"]
        except (ValueError, KeyError):
            problems.append(
                f"quickpay reconcile {name} {day} exited {done.returncode}: {done.stderr[-600:]}"
            )
            continue
        if found or done.returncode != 0:
            kinds = Counter(d["category"] for d in found)
            problems.append(f"{name} {day}: {len(found)} discrepancies {dict(kinds)}")
    return problems


def check_prepared(world: World) -> list[str]:
    """Invariant 5: nothing is left prepared on the database server."""
    if world.pg is None:
        return []
    left = world.pg.prepared()
    return [f"{len(left)} prepared transactions left: {left[:EXAMPLES_MAX]}"] if left else []


def check_events(world: World) -> list[str]:
    """Invariant 6: NATS holds each outbox event once, and only those."""
    if world.nats_url is None:
        return []
    problems = []
    waiting = unpublished(world.engine)
    if waiting:
        problems.append(f"{waiting} outbox events never published")
    outbox = {e for (e,) in _query(world.engine, "SELECT event_id FROM outbox")}
    in_nats = Counter(asyncio.run(_message_ids(world.nats_url)))
    missing = sorted(outbox - set(in_nats))
    if missing:
        problems.append(f"{len(missing)} outbox events missing from NATS: {_examples(missing)}")
    doubled = sorted(e for e, n in in_nats.items() if n > 1)
    if doubled:
        problems.append(f"{len(doubled)} events doubled in NATS: {_examples(doubled)}")
    extra = sorted(set(in_nats) - outbox)
    if extra:
        problems.append(f"{len(extra)} events in NATS that the outbox lacks: {_examples(extra)}")
    return problems


async def _message_ids(url: str) -> list[str]:
    """The message id of every message in the settlement stream, by sequence."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        try:
            total = (await js.stream_info(STREAM)).state.messages
        except nats.js.errors.NotFoundError:
            return []
        sub = await js.pull_subscribe(
            "quickpay.settlement.>", stream=STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )  # fmt: skip
        ids: list[str] = []
        # Count-bounded: the stream's size was read first; each fetch waits at most 2 s.
        empty = 0
        while len(ids) < total and empty < 30:
            try:
                msgs = await sub.fetch(500, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                empty += 1
                continue
            ids += [m.headers["Nats-Msg-Id"] for m in msgs if m.headers]
        return ids
    finally:
        await nc.close()


def fetch_reports(world: World) -> dict[tuple[str, str], str]:
    return {
        (name, day): gateway_report(url, day)
        for name, url in world.gateways.items()
        for day in business_days(world)
    }


def check_all(world: World, workdir: Path) -> list[str]:
    """Every invariant, with the engine stopped; the problems found (none: all hold)."""
    assert world.engine.process is None, "check with the engine stopped"
    reports = fetch_reports(world)
    return (
        check_settled_everywhere(world, reports)
        + check_verify(world)
        + check_reconcile(world, reports, workdir)
        + check_prepared(world)
        + check_events(world)
    )


CHECKS = 6  # the invariants above, for the summary line


def answer_counts(answers: list[dict[str, str]]) -> Counter[str]:
    """Answers by what they said: a status, a decline reason or a gRPC code."""
    counts: Counter[str] = Counter()
    for a in answers:
        if a["error"]:
            counts[a["error"]] += 1
        elif a["status"] in ("DECLINED", "FAILED") and a["reason"]:
            counts[f"{a['status']} {a['reason']}"] += 1
        else:
            counts[a["status"]] += 1
    return counts
