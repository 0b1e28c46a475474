"""Subscriber changes applied to a running server (issue #24, item 3): UpsertSubscribers
activates, bars, swaps SIMs, ports and re-plans lines without a restart; versions make
replays and out-of-order deliveries change nothing; each batch commits whole, and after
a SIGKILL every change is there in full or not at all; an import beside a running
server goes through it (--listen) or is refused."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conftest import CREATED, GATEWAYS_VAR, seed_store, settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.server import RunningServer
from quickpay_engine.subscribers import generate, to_csv_text
from test_serve_process import start_server

TIMEOUT_S = 30


def change(
    account_id: str,
    version: int,
    kind: int = pb.ACTIVATION,
    msisdn: str = "+254711000001",
    plan: str = "PREPAID",
    status: str = "ACTIVE",
    currency: str = "KES",
    country: str = "KE",
    swapped_s: int | None = None,
    created_s: int = CREATED,
    opening_minor: int = 0,
) -> pb.SubscriberChange:
    message = pb.SubscriberChange(
        account_id=account_id, version=version, kind=kind, msisdn=msisdn, plan=plan,
        status=status, currency=currency, country=country,
        created_at=Timestamp(seconds=created_s), opening_balance_minor=opening_minor,
    )  # fmt: skip
    if swapped_s is not None:
        message.sim_swapped_at.seconds = swapped_s
    return message


def row_change(
    row: SubscriberRow, version: int, kind: int, **fields: object
) -> pb.SubscriberChange:
    """A change of a seeded line: its fields as they are, but ``fields``."""
    base: dict[str, object] = {
        "msisdn": row.msisdn, "plan": row.plan.name, "status": row.status.name,
        "currency": row.currency, "country": row.country, "swapped_s": row.sim_swapped_at_s,
        "created_s": row.created_at_s,
    }  # fmt: skip
    base.update(fields)
    return change(row.account_id, version, kind, **base)  # type: ignore[arg-type]


async def upsert(
    stub: pb_grpc.SettlementStub, changes: Iterable[pb.SubscriberChange]
) -> pb.UpsertSummary:
    return await stub.UpsertSubscribers(iter(list(changes)), timeout=TIMEOUT_S)


def pre(key: str, **overrides: object) -> pb.PayRequest:
    """A top-up of 50.00 KES for the active prepaid line acc-pre."""
    fields: dict[str, object] = {"account_id": "acc-pre", "msisdn": "+254700000004"}
    fields.update(overrides)
    return topup(key, **fields)


def snapshot(server: RunningServer) -> tuple[object, ...]:
    """Every row a subscriber change writes: lines, versions, the audit trail."""
    db = server.store._db
    return (
        db.execute("SELECT * FROM subscribers ORDER BY account_id").fetchall(),
        db.execute("SELECT * FROM subscriber_versions ORDER BY account_id").fetchall(),
        db.execute("SELECT count(*) FROM audit_log").fetchone(),
    )


# -- without a restart ----------------------------------------------------------------


async def test_a_line_activated_live_settles_its_first_payment_without_a_restart(
    data_dir: Path,
) -> None:
    """A real serve process: before the change the new line is ACCOUNT_NOT_FOUND; the
    payment sent as soon as UpsertSubscribers has answered settles (no retry, no wait:
    the answer means the engine, the ledger and fraud scoring have the line)."""
    process, port = await start_server(data_dir, "--gateways", os.environ[GATEWAYS_VAR])
    new = {"account_id": "acc-live-1", "msisdn": "+254711000001"}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            before = await stub.Pay(topup("live-before", **new), timeout=TIMEOUT_S)
            assert (before.status, before.decline_reason) == (pb.DECLINED, "ACCOUNT_NOT_FOUND")
            started = time.perf_counter()
            summary = await upsert(stub, [change("acc-live-1", 1, opening_minor=1_000)])
            paid = await stub.Pay(topup("live-after", **new), timeout=TIMEOUT_S)
            took_s = time.perf_counter() - started
        assert (summary.received, summary.applied, summary.created, summary.stale) == (1, 1, 1, 0)
        assert paid.status == pb.SETTLED, paid
        assert paid.confirmation.balance_after.amount_minor == 1_000 + 5_000
        print(f"activation to settled payment: {took_s * 1000:.0f} ms")  # measured, not asserted
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
    done = cli("verify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("audit", "verify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_line_barred_live_is_restored_by_its_next_payment(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    acc_pre = server.store.subscriber("acc-pre")
    assert acc_pre is not None and acc_pre.status is LineStatus.ACTIVE
    summary = await upsert(stub, [row_change(acc_pre, 5, pb.STATUS_CHANGE, status="BARRED")])
    assert summary.applied == 1
    barred = server.store.subscriber("acc-pre")
    assert barred is not None and barred.status is LineStatus.BARRED
    assert barred.balance_minor == acc_pre.balance_minor, "a change never moves a balance"

    paid = await stub.Pay(pre("barred-live-1"), timeout=TIMEOUT_S)
    assert paid.status == pb.SETTLED
    assert paid.confirmation.service_state_after == "ACTIVE"
    restored = server.store._db.execute(
        "SELECT state_before, state_after, rule_id FROM provisioning_changes WHERE payment_id = ?",
        (paid.payment_id,),
    ).fetchone()
    assert restored == (LineStatus.BARRED, LineStatus.ACTIVE, "prepaid-barred-has-credit")
    after = server.store.subscriber("acc-pre")
    assert after is not None and after.status is LineStatus.ACTIVE
    assert server.store.verify() == []


async def test_a_sim_swap_sent_live_raises_the_next_large_topups_fraud_score(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    """Large top-ups from phones the account never paid from: the one after a SIM swap
    sent live carries SIM_SWAP_RECENT and a higher score (the server observes: it says
    DECLINE and settles)."""
    large = pb.Money(amount_minor=25_000, currency="KES")
    first = await stub.Pay(pre("swap-0", amount=large, device_id="dev-a"), timeout=TIMEOUT_S)
    assert "SIM_SWAP_RECENT" not in first.fraud.reasons

    acc_pre = server.store.subscriber("acc-pre")
    assert acc_pre is not None
    swapped_s = int(time.time()) - 60
    summary = await upsert(stub, [row_change(acc_pre, 1, pb.SIM_SWAP, swapped_s=swapped_s)])
    assert summary.applied == 1
    stored = server.store.subscriber("acc-pre")
    assert stored is not None and stored.sim_swapped_at_s == swapped_s

    second = await stub.Pay(pre("swap-1", amount=large, device_id="dev-b"), timeout=TIMEOUT_S)
    assert "SIM_SWAP_RECENT" in second.fraud.reasons, second.fraud
    assert second.fraud.decision == "DECLINE"
    assert second.fraud.score > first.fraud.score, (first.fraud, second.fraud)


async def test_a_replayed_batch_and_an_older_version_change_nothing(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    acc_post = server.store.subscriber("acc-post")
    assert acc_post is not None
    batch = [
        change("acc-new-1", 10, msisdn="+254711000010", opening_minor=700),
        row_change(acc_post, 10, pb.STATUS_CHANGE, status="SUSPENDED"),
        change("acc-new-2", 3, msisdn="+254711000011"),
    ]
    first = await upsert(stub, batch)
    assert (first.applied, first.created, first.stale) == (3, 2, 0)
    before = snapshot(server)

    again = await upsert(stub, batch)
    assert (again.received, again.applied, again.created, again.stale) == (3, 0, 0, 3)
    older = await upsert(stub, [
        row_change(acc_post, 9, pb.STATUS_CHANGE, status="CLOSED"),
        change("acc-new-1", 10, pb.PLAN_CHANGE, msisdn="+254711000010", plan="POSTPAID"),
    ])  # fmt: skip
    assert (older.applied, older.stale) == (0, 2)
    assert snapshot(server) == before

    # The engine held on too: the line is still suspended, the new one still prepaid.
    line = server.store.subscriber("acc-new-1")
    assert line is not None and (line.plan, line.balance_minor) == (Plan.PREPAID, 700)
    paid = await stub.Pay(
        topup("new-1-pay", account_id="acc-new-1", msisdn="+254711000010"), timeout=TIMEOUT_S
    )
    assert paid.status == pb.SETTLED and paid.confirmation.balance_after.amount_minor == 5_700


async def test_changes_out_of_order_in_one_stream_end_at_the_newest(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    acc_pre = server.store.subscriber("acc-pre")
    assert acc_pre is not None
    summary = await upsert(stub, [
        row_change(acc_pre, 7, pb.STATUS_CHANGE, status="SUSPENDED"),
        row_change(acc_pre, 6, pb.STATUS_CHANGE, status="BARRED"),
        row_change(acc_pre, 7, pb.STATUS_CHANGE, status="CLOSED"),
    ])  # fmt: skip
    assert (summary.applied, summary.stale) == (1, 2)
    line = server.store.subscriber("acc-pre")
    assert line is not None and line.status is LineStatus.SUSPENDED
    assert server.store.subscriber_versions(["acc-pre"]) == {"acc-pre": 7}


async def test_a_port_moves_numbers_between_lines_in_one_batch(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    """acc-pre takes acc-pre-barred's number, which takes a new one: one batch, and the
    old number then names nothing of acc-pre."""
    pre_line = server.store.subscriber("acc-pre")
    barred = server.store.subscriber("acc-pre-barred")
    assert pre_line is not None and barred is not None
    summary = await upsert(stub, [
        row_change(pre_line, 2, pb.MSISDN_CHANGE, msisdn=barred.msisdn),
        row_change(barred, 2, pb.MSISDN_CHANGE, msisdn="+254711000077"),
    ])  # fmt: skip
    assert summary.applied == 2
    paid = await stub.Pay(pre("port-1", msisdn=barred.msisdn), timeout=TIMEOUT_S)
    assert paid.status == pb.SETTLED
    old = await stub.Pay(pre("port-2", msisdn=pre_line.msisdn), timeout=TIMEOUT_S)
    assert old.status == pb.DECLINED, old


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"msisdn": "0030690"}, "msisdn"),
        ({"kind": 0}, "kind"),
        ({"version": 0}, "version"),
        ({"version": 2**63}, "version"),
        ({"kind": pb.SIM_SWAP}, "sim_swapped_at"),
        ({"plan": "prepaid"}, "plan"),
        ({"status": "GONE"}, "status"),
        ({"currency": "XXX"}, "currency"),
        ({"country": "gr"}, "country"),
        ({"account_id": "a b"}, "account_id"),
        ({"created_s": -1}, "created_at"),
        # A line's currency never changes; acc-post is held in EUR.
        ({"account_id": "acc-post", "currency": "KES"}, "currency"),
        # The number of another line.
        ({"msisdn": "+306900000002"}, "msisdn"),
    ],
)
async def test_a_bad_change_is_invalid_argument_naming_it_and_nothing_from_it_on_applies(
    server: RunningServer, stub: pb_grpc.SettlementStub, bad: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {"account_id": "acc-bad", "version": 1, "msisdn": "+254711000020"}
    fields.update(bad)
    account = str(fields.pop("account_id"))
    version = int(fields.pop("version"))  # type: ignore[call-overload]
    good = change("acc-good", 1, msisdn="+254711000021")
    later = change("acc-later", 1, msisdn="+254711000022")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upsert(stub, [good, change(account, version, **fields), later])  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith(f"changes[1].{field}: "), details
    assert server.store.subscriber("acc-later") is None
    assert server.store.subscriber("acc-bad") is None
    post = server.store.subscriber("acc-post")
    assert post is not None and post.currency == "EUR"
    assert server.store.verify() == []


async def test_a_change_waits_for_the_payment_in_flight_on_its_account(
    server: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    """The payment is held at its gateway; a change of its line, sent meanwhile, waits
    until the payment has committed and then applies: the payment saw the line ACTIVE,
    the line ends BARRED, and the audit trail has the payment first."""
    pipeline = server.service._pipeline
    sales, hold = pipeline._sales, pipeline.hold_accounts
    at_gateway, waiting, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held_sales(sold):  # type: ignore[no-untyped-def]
        at_gateway.set()
        await gate.wait()
        return await sales(sold)

    async def seen_hold(accounts):  # type: ignore[no-untyped-def]
        waiting.set()
        await hold(accounts)

    pipeline._sales = held_sales  # type: ignore[method-assign]
    pipeline.hold_accounts = seen_hold  # type: ignore[method-assign]
    acc_pre = server.store.subscriber("acc-pre")
    assert acc_pre is not None
    payment = asyncio.ensure_future(stub.Pay(pre("in-flight-1"), timeout=TIMEOUT_S))
    await asyncio.wait_for(at_gateway.wait(), TIMEOUT_S)
    changing = asyncio.ensure_future(
        upsert(stub, [row_change(acc_pre, 1, pb.STATUS_CHANGE, status="BARRED")])
    )
    await asyncio.wait_for(waiting.wait(), TIMEOUT_S)
    await asyncio.sleep(0.1)  # given every chance to run ahead, it must not
    assert not changing.done()
    assert server.store.subscriber_versions(["acc-pre"]) == {}
    gate.set()
    paid, summary = await asyncio.gather(payment, changing)
    assert paid.status == pb.SETTLED and paid.confirmation.service_state_after == "ACTIVE"
    assert summary.applied == 1
    line = server.store.subscriber("acc-pre")
    assert line is not None and line.status is LineStatus.BARRED
    kinds = [
        json.loads(c)["kind"]
        for (c,) in server.store._db.execute("SELECT content FROM audit_log ORDER BY seq")
    ]
    assert kinds.index("payment.settled") < kinds.index("subscriber.changed")
    # And a payment after the change sees it: the barred line is restored by it.
    again = await stub.Pay(pre("in-flight-2"), timeout=TIMEOUT_S)
    assert again.confirmation.service_state_after == "ACTIVE"


async def test_a_plan_change_keeps_the_ledger_account_and_the_server_restarts(
    data_dir: Path,
) -> None:
    """A line moved from prepaid to postpaid keeps the ledger account it was opened with;
    the next start opens the accounts of every line again and must accept it."""
    from quickpay_engine.server import create_server

    settings = settings_for(data_dir)
    running = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            paid = await stub.Pay(pre("plan-1"), timeout=TIMEOUT_S)
            acc_pre = running.store.subscriber("acc-pre")
            assert acc_pre is not None
            summary = await upsert(stub, [row_change(acc_pre, 1, pb.PLAN_CHANGE, plan="POSTPAID")])
            assert summary.applied == 1
    finally:
        await running.stop(grace_s=1)
    running = await create_server(settings)
    try:
        line = running.store.subscriber("acc-pre")
        assert line is not None and line.plan is Plan.POSTPAID
        assert paid.status == pb.SETTLED
    finally:
        await running.stop(grace_s=1)
    done = cli("verify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


# -- crash ----------------------------------------------------------------------------

EXISTING = 600
NEW = 900
COLUMNS = "account_id, msisdn, plan, status, currency, country, sim_swapped_at_s, created_at_s"


def _lines(db_path: Path) -> dict[str, tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        return {r[0]: r for r in db.execute(f"SELECT {COLUMNS} FROM subscribers")}


def _versions(db_path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT account_id, version FROM subscriber_versions"))


def _as_line(c: pb.SubscriberChange) -> tuple[object, ...]:
    swapped = c.sim_swapped_at.seconds if c.HasField("sim_swapped_at") else None
    return (
        c.account_id, c.msisdn, Plan[c.plan].value, LineStatus[c.status].value, c.currency,
        c.country, swapped, c.created_at.seconds,
    )  # fmt: skip


async def test_sigkill_in_an_upsert_stream_leaves_each_change_whole_or_absent(
    tmp_path: Path,
) -> None:
    """Changes of every field of 600 lines (numbers, plans, statuses, SIM swaps) and 900
    activations stream into a real serve; once a batch has committed, the server is
    killed with the stream still open. After a restart each change is in the store
    entirely (line, version, audit row) or not at all, and verify is clean."""
    rows = list(generate(EXISTING, seed=24))
    seed_store(tmp_path, rows)
    db_path = tmp_path / "quickpay.sqlite3"
    before = _lines(db_path)
    now = int(time.time())
    changes = [
        row_change(
            r, 5, pb.PLAN_CHANGE if n % 2 else pb.MSISDN_CHANGE,
            msisdn=f"+4479{n:08d}",
            plan="POSTPAID" if r.plan is Plan.PREPAID else "PREPAID",
            status=("ACTIVE", "SUSPENDED", "BARRED")[n % 3], country="GB",
            swapped_s=now - n, created_s=r.created_at_s - 1,
        )
        for n, r in enumerate(rows)
    ]  # fmt: skip
    kinds = (pb.ACTIVATION, pb.SIM_SWAP, pb.STATUS_CHANGE)
    changes += [
        change(f"acc-crash-{n}", 1, kinds[n % 3], msisdn=f"+4478{n:08d}", swapped_s=now,
               currency=("KES", "EUR")[n % 2], opening_minor=n)
        for n in range(NEW)
    ]  # fmt: skip
    process, port = await start_server(tmp_path, "--gateways", os.environ[GATEWAYS_VAR])
    killed = asyncio.Event()

    async def stream() -> AsyncIterator[pb.SubscriberChange]:
        for c in changes[: len(changes) * 2 // 3]:
            yield c
        await killed.wait()  # the rest is never sent
        for c in changes[len(changes) * 2 // 3 :]:
            yield c

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.SettlementStub(channel).UpsertSubscribers(stream())
            waited = time.monotonic()
            while not _versions(db_path):
                assert time.monotonic() - waited < 60, "no batch committed"
                await asyncio.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            killed.set()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    # The restart opens every line's ledger account again (plans changed) and recovers.
    process, port = await start_server(tmp_path, "--gateways", os.environ[GATEWAYS_VAR])
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0

    lines, versions = _lines(db_path), _versions(db_path)
    applied = 0
    for c in changes:
        if c.account_id in versions:
            assert versions[c.account_id] == c.version
            assert lines[c.account_id] == _as_line(c), c.account_id
            applied += 1
        elif c.account_id in before:
            assert lines[c.account_id] == before[c.account_id], c.account_id
        else:
            assert c.account_id not in lines, c.account_id
    assert 0 < applied < len(changes), applied
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        audited = [
            json.loads(content)["account_id"]
            for (content,) in db.execute("SELECT content FROM audit_log")
            if '"subscriber.changed"' in content
        ]
    assert sorted(audited) == sorted(versions)
    for command in (["verify"], ["audit", "verify"]):
        done = cli(*command, "--data-dir", str(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr


# -- the import beside a running server -------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


async def test_an_import_beside_a_running_server_is_refused_or_sent_to_it(
    data_dir: Path, tmp_path: Path
) -> None:
    """Without --listen the import is refused, saying how to send the file instead, and
    writes nothing; with it the server applies the file live, and sending the same file
    again changes nothing."""
    csv = tmp_path / "more.csv"
    more = list(generate(20, seed=2401))
    csv.write_text(to_csv_text(more))
    process, port = await start_server(data_dir, "--gateways", os.environ[GATEWAYS_VAR])
    try:
        refused = await asyncio.to_thread(
            cli, "subscribers", "import", str(csv), "--data-dir", str(data_dir)
        )
        assert refused.returncode == 2
        assert "is in use by quickpay serve" in refused.stderr, refused.stderr
        assert "--listen HOST:PORT" in refused.stderr, refused.stderr
        assert _lines(data_dir / "quickpay.sqlite3").keys().isdisjoint(r.account_id for r in more)

        sent = await asyncio.to_thread(
            cli, "subscribers", "import", str(csv), "--listen", f"127.0.0.1:{port}"
        )
        assert sent.returncode == 0, sent.stderr
        assert "20 applied (20 new lines)" in sent.stdout, sent.stdout
        again = await asyncio.to_thread(
            cli, "subscribers", "import", str(csv), "--listen", f"127.0.0.1:{port}"
        )
        assert again.returncode == 0 and "0 applied" in again.stdout, again.stdout

        line = next(r for r in more if r.status is LineStatus.ACTIVE and r.plan is Plan.PREPAID)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            paid = await pb_grpc.SettlementStub(channel).Pay(
                topup("import-live-1", account_id=line.account_id, msisdn=line.msisdn,
                      amount=pb.Money(amount_minor=500, currency=line.currency)),
                timeout=TIMEOUT_S,
            )  # fmt: skip
        assert paid.status == pb.SETTLED, paid
        assert paid.confirmation.balance_after.amount_minor == line.balance_minor + 500
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0


async def test_an_import_sent_to_a_server_names_the_bad_row(tmp_path: Path, data_dir: Path) -> None:
    """A file whose line takes another line's number: the server refuses that change,
    naming it, and the import says which subscriber of the file it is."""
    csv = tmp_path / "clash.csv"
    first, second = generate(2, seed=2402)
    clash = dataclasses.replace(second, msisdn="+306900000002")  # acc-post's number
    csv.write_text(to_csv_text([first, clash]))
    process, port = await start_server(data_dir, "--gateways", os.environ[GATEWAYS_VAR])
    try:
        done = await asyncio.to_thread(
            cli, "subscribers", "import", str(csv), "--listen", f"127.0.0.1:{port}"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
    assert done.returncode == 1
    assert "INVALID_ARGUMENT: changes[1].msisdn: +306900000002 is another line's number" in (
        done.stderr
    ), done.stderr
    assert "the file's subscriber 2" in done.stderr
    assert "the ones before it were applied" in done.stderr


def test_a_store_of_the_previous_schema_gains_the_versions_table(tmp_path: Path) -> None:
    from quickpay_engine.store import SqliteStore
    from quickpay_engine.store import sqlite as sqlite_module
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    path = tmp_path / "quickpay.sqlite3"
    schema = (Path(sqlite_module.__file__).parent / "schema_sqlite.sql").read_text()
    start = schema.index("-- The carrier's version of each subscriber's record")
    end = schema.index("-- Payment history")
    with sqlite3.connect(path) as db:  # as the previous build made it
        db.executescript(schema[:start] + schema[end:] + "\nPRAGMA user_version = 3;")
        assert "subscriber_versions" not in {
            name for (name,) in db.execute("SELECT name FROM sqlite_master")
        }
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(subscriber_versions)")]
    assert columns == ["account_id", "version", "kind", "changed_at_us"]


def test_the_subscriber_events_flag_needs_nats_and_a_subject(tmp_path: Path) -> None:
    base = ["serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]
    for extra, said in (
        (["--subscriber-events", "carrier.subs"], "--subscriber-events needs --nats-url"),
        (["--subscriber-events", "a b", "--nats-url", "nats://127.0.0.1:4222"], "NATS subject"),
        (["--subscriber-events", "a.>.b", "--nats-url", "nats://127.0.0.1:4222"], "NATS subject"),
    ):
        done = cli(*base, *extra)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (tmp_path / "d").exists(), "refused before anything was made"
