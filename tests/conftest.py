"""Shared fixtures: a real server on port 0 over a real store, and its clients.

The store is the embedded SQLite file unless a module asks for both backends with
``BOTH_BACKENDS`` (``pytestmark = BOTH_BACKENDS``): then each of its tests runs once on
SQLite and once on a fresh PostgreSQL database of its own (tests/pg_support.py).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from gateway_procs import SimulatorSet
from pg_support import (
    create_database,
    drop_database,
    prepared_transactions,
    require,
    reset_database,
)
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.config import settings_from
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.server import RunningServer, create_server
from quickpay_engine.storage import open_store

CREATED = 1_700_000_000


# A handful of subscribers every test can rely on, one per situation.
def _row(account, msisdn, plan, status, currency, balance, country) -> SubscriberRow:
    return SubscriberRow(account, msisdn, plan, status, currency, balance, country, None, CREATED)


P, Q = Plan.PREPAID, Plan.POSTPAID
SUBSCRIBERS = [
    # A postpaid line barred for non-payment: owes 80.00 EUR.
    _row("acc-post-barred", "+306900000001", Q, LineStatus.BARRED, "EUR", 8_000, "GR"),
    # A postpaid line in good standing, owing 25.00 EUR.
    _row("acc-post", "+306900000002", Q, LineStatus.ACTIVE, "EUR", 2_500, "GR"),
    # A prepaid line barred at zero credit.
    _row("acc-pre-barred", "+254700000003", P, LineStatus.BARRED, "KES", 0, "KE"),
    # A prepaid line with 150.00 KES of credit.
    _row("acc-pre", "+254700000004", P, LineStatus.ACTIVE, "KES", 15_000, "KE"),
    # A closed account: takes no payments.
    _row("acc-closed", "+306900000005", P, LineStatus.CLOSED, "EUR", 0, "GR"),
]


# Names the --gateways file of the session's simulators (see the `simulators` fixture).
# An environment variable, not a module global: test modules import this file as
# `tests.conftest`, a second copy of the module pytest loaded as `conftest`.
GATEWAYS_VAR = "QUICKPAY_TEST_SESSION_GATEWAYS"

# The suites' servers admit by count only: admission by time refuses what the measured
# speed of this machine says would wait too long, and a test's verdict must not depend
# on that speed. Servers started as processes read the variable; settings_for (below)
# says the same to servers in process. tests/test_admission.py and
# tests/test_overload.py turn it on where that is what they test.
os.environ["QUICKPAY_QUEUE_WAIT_MAX_MS"] = "0"


def settings_for(
    data_dir: Path,
    listen: str = "127.0.0.1:0",
    fraud_mode: str = "observe",
    gateways: Path | None = None,
    database_url: str | None = None,
    database_urls: list[str] | None = None,
    queue_wait_max_ms: float = 0,
):
    """Settings as the CLI would build them for this data dir, talking to the session's
    gateway simulators unless ``gateways`` names another file, on the SQLite file in the
    data dir unless ``database_url`` (one PostgreSQL database) or ``database_urls``
    (billing, AR and provisioning) say otherwise. Fraud scoring observes by default here:
    these suites pay the same few accounts many times a second, which the shipped model
    rightly finds suspicious; tests/test_fraud_settlement.py enforces. Admission by time
    is off unless ``queue_wait_max_ms`` says otherwise (see QUICKPAY_QUEUE_WAIT_MAX_MS
    above)."""
    args = argparse.Namespace(
        queue_wait_max_ms=str(queue_wait_max_ms),
        listen=listen,
        data_dir=str(data_dir),
        database_url=database_urls[0] if database_urls else database_url,
        gateways=str(gateways or os.environ[GATEWAYS_VAR]),
        fraud_mode=fraud_mode,
    )
    if database_urls:
        args.billing_url, args.ar_url, args.provisioning_url = database_urls
    return settings_from(args)


@pytest.fixture(scope="session", autouse=True)
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorSet]:
    """Three quiet gateway simulators (two card acquirers, one wallet provider), real
    processes on loopback, shared by the session's servers."""
    sims = SimulatorSet(tmp_path_factory.mktemp("gateways")).start()
    os.environ[GATEWAYS_VAR] = str(sims.gateways_file)
    try:
        yield sims
    finally:
        sims.stop()


def seed_store(
    data_dir: Path,
    rows: list[SubscriberRow] = SUBSCRIBERS,
    database_urls: list[str] | None = None,
) -> None:
    store = open_store(settings_for(data_dir, database_urls=database_urls))
    try:
        store.import_subscribers(rows)
    finally:
        store.close()


# "postgres-2pc": billing, AR and provisioning in three databases, committed together by
# two-phase commit.
BACKENDS = ("sqlite", "postgres", "postgres-2pc")
# Marks a module (pytestmark = BOTH_BACKENDS) to run every test on each store.
BOTH_BACKENDS = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store under test: "sqlite" unless the module parametrizes it."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="module")
def module_databases() -> Iterator[list[str]]:
    """Three PostgreSQL databases of the test module's own, dropped after the module."""
    require()
    urls = [create_database() for _ in range(3)]
    try:
        yield urls
    finally:
        for url in urls:
            drop_database(url)


@pytest.fixture
def database_urls(backend: str, request: pytest.FixtureRequest) -> Iterator[list[str] | None]:
    """None for the SQLite file in the data dir; else the (billing, AR, provisioning)
    URLs, emptied for this test: one database, or three for "postgres-2pc". After the
    test no prepared transaction may be left in any of them."""
    if backend == "sqlite":
        yield None
        return
    made = request.getfixturevalue("module_databases")
    used = made[:1] if backend == "postgres" else made
    for url in used:
        reset_database(url)
    yield [used[0], used[-1], used[1 % len(used)]]
    left = prepared_transactions(used)
    assert not left, f"prepared transactions left behind: {left}"


@pytest.fixture
def database_url(database_urls: list[str] | None) -> str | None:
    """The billing database's URL (the one --database-url names), None for SQLite."""
    return None if database_urls is None else database_urls[0]


def database_dump(url: str) -> bytes:
    """Every table of a PostgreSQL database as COPY text, to search for what must never
    be stored."""
    out = bytearray()
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                for chunk in copy:
                    out += chunk
    return bytes(out)


@pytest.fixture
def data_dir(tmp_path: Path, database_urls: list[str] | None) -> Path:
    seed_store(tmp_path, database_urls=database_urls)
    return tmp_path


@pytest.fixture
async def server(data_dir: Path, database_urls: list[str] | None) -> AsyncIterator[RunningServer]:
    running = await create_server(settings_for(data_dir, database_urls=database_urls))
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.SettlementStub:
    return pb_grpc.SettlementStub(channel)


def card(pan: str = "4242424242424242") -> pb.PaymentMethod:
    return pb.PaymentMethod(card=pb.Card(pan=pan, expiry_month=12, expiry_year=2031))


def bill(key: str, **overrides: object) -> pb.PayRequest:
    """A good bill payment of 30.00 EUR for the barred postpaid line."""
    fields: dict[str, object] = {
        "idempotency_key": key,
        "account_id": "acc-post-barred",
        "msisdn": "+306900000001",
        "amount": pb.Money(amount_minor=3_000, currency="EUR"),
        "purpose": pb.BILL_PAYMENT,
        "method": card(),
        "channel": "app",
        "device_id": "dev-1",
        "ip": "192.0.2.10",
    }
    fields.update(overrides)
    return pb.PayRequest(**fields)


def topup(key: str, **overrides: object) -> pb.PayRequest:
    """A good top-up of 50.00 KES for the barred prepaid line."""
    fields: dict[str, object] = {
        "idempotency_key": key,
        "account_id": "acc-pre-barred",
        "msisdn": "+254700000003",
        "amount": pb.Money(amount_minor=5_000, currency="KES"),
        "purpose": pb.PREPAID_TOPUP,
        "method": pb.PaymentMethod(wallet=pb.Wallet(provider="mpesa", wallet_id="254700000003")),
    }
    fields.update(overrides)
    return pb.PayRequest(**fields)
