"""Who may call what: caller identities from client certificates or bearer tokens, the
roles of the access file, per-caller rate limits, and the audit rows of who asked for
refunds and reconciliations. Every refusal comes before any work: nothing is written."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from certs import Authority
from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.errors import ConfigError
from quickpay_engine.security.access import RateLimit, load_access_file, token_hash
from quickpay_engine.security.limits import TokenBucket
from quickpay_engine.security.settings import SecuritySettings
from quickpay_engine.security.tls import TlsFiles
from quickpay_engine.server import RunningServer, create_server

TIMEOUT_S = 20
TOKENS = {
    "gw-a": "token-of-gateway-a-0123456789abcdefghijklmnop",
    "gw-b": "token-of-gateway-b-0123456789abcdefghijklmnop",
    "ops": "token-of-the-operator-0123456789abcdefghijklm",
    "care": "token-of-the-care-platform-0123456789abcdefgh",
    "prov": "token-of-the-provisioning-system-0123456789ab",
}
# A limit that refills one call per 1,000 s: no test runs long enough to see a refill,
# so the verdict does not depend on the machine's speed.
SLOW_REFILL = "{ per_s = 0.001, burst = 3 }"
ACCESS = f"""
[callers.gw-a]
roles = ["gateway"]
token_sha256 = ["{token_hash(TOKENS["gw-a"])}"]
cert_names = ["spiffe://carrier.test/gateway/a"]
limits = {{ Pay = {SLOW_REFILL} }}

[callers.gw-b]
roles = ["gateway"]
token_sha256 = ["{token_hash(TOKENS["gw-b"])}"]
cert_names = ["gw-b.carrier.test"]

[callers.ops]
roles = ["operator"]
token_sha256 = ["{token_hash(TOKENS["ops"])}"]

[callers.care]
roles = ["platform"]
token_sha256 = ["{token_hash(TOKENS["care"])}"]

[callers.prov]
roles = ["provisioning"]
token_sha256 = ["{token_hash(TOKENS["prov"])}"]
"""


def bearer(name: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


@pytest.fixture
def access_file(tmp_path: Path) -> Path:
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    return path


@pytest.fixture
async def guarded(data_dir: Path, access_file: Path) -> AsyncIterator[RunningServer]:
    running = await create_server(
        settings_for(data_dir), security=SecuritySettings(auth_file=access_file)
    )
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


@pytest.fixture
async def stub(guarded: RunningServer) -> AsyncIterator[pb_grpc.SettlementStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
        yield pb_grpc.SettlementStub(channel)


def every_rpc(stub: pb_grpc.SettlementStub, key: str) -> dict[str, object]:
    """One call of each Settlement RPC (unstarted), each of which would write or read.

    The client-streaming calls are opened without a message: the server refuses a call
    before it reads one, and grpc.aio reports a write that loses the race with that
    refusal as INTERNAL instead of the server's status (grpc/grpc#36066), which made
    these tests fail now and then on a loaded host."""
    refund = pb.RefundRequest(idempotency_key=key, payment_id="pay_x")
    return {
        "Pay": lambda md: stub.Pay(topup(key), metadata=md, timeout=TIMEOUT_S),
        "PayBatch": lambda md: stub.PayBatch(
            pb.PayBatchRequest(payments=[topup(key)]), metadata=md, timeout=TIMEOUT_S
        ),
        "PayStream": lambda md: _first(stub.PayStream(metadata=md, timeout=TIMEOUT_S)),
        "GetPayment": lambda md: stub.GetPayment(
            pb.GetPaymentRequest(idempotency_key=key), metadata=md, timeout=TIMEOUT_S
        ),
        "Refund": lambda md: stub.Refund(refund, metadata=md, timeout=TIMEOUT_S),
        "Reconcile": lambda md: stub.Reconcile(
            pb.ReconcileRequest(gateway="acq-a", report_csv=b"x"), metadata=md, timeout=TIMEOUT_S
        ),
        "WatchSettlements": lambda md: _first(
            stub.WatchSettlements(pb.WatchRequest(), metadata=md)
        ),
        "AdjustBalance": lambda md: stub.AdjustBalance(
            pb.AdjustBalanceRequest(
                idempotency_key=key, account_id="acc-pre", reason="usage", source_system="ocs",
                amount=pb.Money(amount_minor=-100, currency="KES"),
            ),
            metadata=md, timeout=TIMEOUT_S,
        ),
        "UpsertSubscribers": lambda md: stub.UpsertSubscribers(metadata=md, timeout=TIMEOUT_S),
    }  # fmt: skip


def activation(account_id: str) -> pb.SubscriberChange:
    """A new prepaid line (a change every role but provisioning is refused)."""
    return pb.SubscriberChange(
        account_id=account_id, version=1, kind=pb.ACTIVATION, msisdn="+254711000999",
        plan="PREPAID", status="ACTIVE", currency="KES", country="KE",
        created_at=Timestamp(seconds=1_700_000_000),
    )  # fmt: skip


async def _first(call) -> object:
    async for reply in call:
        return reply
    return None


def audit_contents(data_dir: Path) -> list[dict[str, object]]:
    with sqlite3.connect(data_dir / "quickpay.sqlite3") as db:
        rows = db.execute("SELECT content FROM audit_log ORDER BY seq").fetchall()
    return [json.loads(content) for (content,) in rows]


async def test_a_call_without_an_identity_is_unauthenticated_and_writes_nothing(
    guarded: RunningServer, stub: pb_grpc.SettlementStub, data_dir: Path
) -> None:
    before = audit_contents(data_dir)
    wrong = (("authorization", "Bearer not-a-token-of-the-file"),)
    for metadata in ((), wrong, (("authorization", "Basic Z3c6cHc="),)):
        for rpc, call in every_rpc(stub, "anon-1").items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(metadata)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, (rpc, metadata)
    assert guarded.store.get_payment(idempotency_key="anon-1") is None
    assert audit_contents(data_dir) == before


PAYING = ("Pay", "PayBatch", "PayStream")


@pytest.mark.parametrize(
    ("caller", "denied"),
    [
        ("gw-a", ("Refund", "Reconcile", "WatchSettlements", "AdjustBalance", "UpsertSubscribers")),
        ("ops", (*PAYING, "WatchSettlements", "AdjustBalance", "UpsertSubscribers")),
        (
            "care",
            (*PAYING, "GetPayment", "Refund", "Reconcile", "AdjustBalance", "UpsertSubscribers"),
        ),
        ("prov", (*PAYING, "GetPayment", "Refund", "Reconcile", "WatchSettlements")),
    ],
)
async def test_a_role_calls_only_its_rpcs(
    guarded: RunningServer,
    stub: pb_grpc.SettlementStub,
    data_dir: Path,
    caller: str,
    denied: tuple[str, ...],
) -> None:
    before = audit_contents(data_dir)
    calls = every_rpc(stub, f"role-{caller}")
    for rpc in denied:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await calls[rpc](bearer(caller))
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, rpc
        assert f"may not call {rpc}" in (refused.value.details() or "")
    assert guarded.store.get_payment(idempotency_key=f"role-{caller}") is None
    assert guarded.store.subscriber(f"acc-role-{caller}") is None
    assert audit_contents(data_dir) == before


async def test_the_provisioning_role_adjusts_balances(
    guarded: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    reply = await every_rpc(stub, "prov-adjust-1")["AdjustBalance"](bearer("prov"))
    assert reply.status == pb.APPLIED
    assert reply.balance_after == pb.Money(amount_minor=14_900, currency="KES")


async def test_the_provisioning_role_changes_subscribers_and_is_named_in_the_audit_rows(
    guarded: RunningServer, stub: pb_grpc.SettlementStub, data_dir: Path
) -> None:
    summary = await stub.UpsertSubscribers(
        iter([activation("acc-by-prov")]), metadata=bearer("prov"), timeout=TIMEOUT_S
    )
    assert (summary.applied, summary.created) == (1, 1)
    assert guarded.store.subscriber("acc-by-prov") is not None
    (row,) = [c for c in audit_contents(data_dir) if c["kind"] == "subscriber.changed"]
    assert (row["account_id"], row["source"], row["change"]) == (
        "acc-by-prov",
        "prov",
        "ACTIVATION",
    )


async def test_health_and_reflection_stay_open(guarded: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in answer.list_services_response.service}
            assert "quickpay.v1.Settlement" in names
            break


async def test_a_gateway_reads_back_only_the_payments_it_sent(
    guarded: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    paid = await stub.Pay(topup("sent-by-a"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
    assert paid.status == pb.SETTLED
    assert guarded.store.get_payment(idempotency_key="sent-by-a").intent.sender == "gw-a"
    by_id = pb.GetPaymentRequest(payment_id=paid.payment_id)
    by_key = pb.GetPaymentRequest(idempotency_key="sent-by-a")
    for request in (by_id, by_key):
        own = await stub.GetPayment(request, metadata=bearer("gw-a"), timeout=TIMEOUT_S)
        assert own.payment_id == paid.payment_id
        seen = await stub.GetPayment(request, metadata=bearer("ops"), timeout=TIMEOUT_S)
        assert seen.payment_id == paid.payment_id
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await stub.GetPayment(request, metadata=bearer("gw-b"), timeout=TIMEOUT_S)
        # Word for word what an unknown payment gets: not even its existence shows.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.GetPayment(
                pb.GetPaymentRequest(payment_id="pay_unknown")
                if request is by_id
                else pb.GetPaymentRequest(idempotency_key="never-sent"),
                metadata=bearer("gw-b"),
                timeout=TIMEOUT_S,
            )
        assert hidden.value.code() is unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert (hidden.value.details() or "").split()[:4] == (
            unknown.value.details() or ""
        ).split()[:4]
    # PayBatch and PayStream record their sender too.
    await stub.PayBatch(
        pb.PayBatchRequest(payments=[topup("batch-by-b")]),
        metadata=bearer("gw-b"),
        timeout=TIMEOUT_S,
    )
    assert guarded.store.get_payment(idempotency_key="batch-by-b").intent.sender == "gw-b"
    await _first(stub.PayStream(iter([topup("stream-by-b")]), metadata=bearer("gw-b")))
    assert guarded.store.get_payment(idempotency_key="stream-by-b").intent.sender == "gw-b"


async def test_a_key_replayed_by_another_gateway_is_a_conflict_that_names_nothing(
    guarded: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    paid = await stub.Pay(topup("replayed-key"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
    again = await stub.Pay(topup("replayed-key"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
    assert again.payment_id == paid.payment_id  # its own retry replays
    for call in (
        lambda: stub.Pay(topup("replayed-key"), metadata=bearer("gw-b"), timeout=TIMEOUT_S),
        lambda: stub.PayBatch(
            pb.PayBatchRequest(payments=[topup("replayed-key")]),
            metadata=bearer("gw-b"),
            timeout=TIMEOUT_S,
        ),
    ):
        try:
            answer = await call()
        except grpc.aio.AioRpcError as err:
            assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
            said = err.details() or ""
        else:  # PayBatch carries each payment's error as a FAILED result
            (result,) = answer.results
            assert result.status == pb.FAILED
            assert result.payment_id != paid.payment_id
            said = result.decline_reason + " " + result.decline_detail
        assert paid.payment_id not in said and "another payment" in said, said


async def test_refunds_and_reconciliations_name_their_caller_in_the_audit_trail(
    guarded: RunningServer, stub: pb_grpc.SettlementStub, data_dir: Path
) -> None:
    paid = await stub.Pay(topup("to-refund"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
    refund = pb.RefundRequest(idempotency_key="rf-1", payment_id=paid.payment_id)
    refunded = await stub.Refund(refund, metadata=bearer("ops"), timeout=TIMEOUT_S)
    assert refunded.status == pb.REFUNDED
    report = b"gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n"
    await stub.Reconcile(
        pb.ReconcileRequest(gateway="acq-a", report_csv=report, business_day="2026-11-24"),
        metadata=bearer("ops"),
        timeout=TIMEOUT_S,
    )
    await guarded.stop(grace_s=1)
    access = [c for c in audit_contents(data_dir) if str(c["kind"]).startswith("access.")]
    assert [(c["kind"], c["caller"]) for c in access] == [
        ("access.refund", "ops"),
        ("access.reconcile", "ops"),
    ]
    assert access[0]["payment_id"] == paid.payment_id and access[0]["refund_key"] == "rf-1"
    assert access[1]["gateway"] == "acq-a" and access[1]["report_bytes"] == len(report)
    # `quickpay audit verify` walks them with the rest of the chain...
    verify = [
        sys.executable,
        "-m",
        "quickpay_engine.cli",
        "audit",
        "verify",
        "--data-dir",
        str(data_dir),
    ]
    done = await asyncio.to_thread(_run, verify)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit trail intact" in done.stdout
    # ...and an access row changed afterwards (another caller named) breaks it.
    with sqlite3.connect(data_dir / "quickpay.sqlite3") as db:
        db.execute(
            'UPDATE audit_log SET content = replace(content, \'"caller":"ops"\', \'"caller":"gw-b"\')'
            " WHERE content LIKE '%access.refund%'"
        )
    done = await asyncio.to_thread(_run, verify)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_a_client_certificate_names_its_caller(
    data_dir: Path, access_file: Path, tmp_path: Path
) -> None:
    ca = Authority()
    cert, key = ca.server().write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    security = SecuritySettings(TlsFiles(cert, key, tmp_path / "ca.pem"), access_file)
    running = await create_server(settings_for(data_dir), security=security)
    try:
        target = f"127.0.0.1:{running.port}"
        clients = {
            "uri": ca.issue("a", uris=("spiffe://carrier.test/gateway/a",)),
            "dns": ca.issue("b", dns=("gw-b.carrier.test",)),
            "unknown": ca.issue("z", dns=("stranger.carrier.test",)),
        }
        results = {}
        for which, client in clients.items():
            creds = grpc.ssl_channel_credentials(ca.pem, client.key_pem, client.cert_pem)
            async with grpc.aio.secure_channel(target, creds) as channel:
                stub = pb_grpc.SettlementStub(channel)
                try:
                    results[which] = await stub.Pay(topup(f"cert-{which}"), timeout=TIMEOUT_S)
                except grpc.aio.AioRpcError as err:
                    results[which] = err.code()
        assert results["unknown"] is grpc.StatusCode.UNAUTHENTICATED
        assert results["uri"].status == results["dns"].status == pb.SETTLED
        assert running.store.get_payment(idempotency_key="cert-uri").intent.sender == "gw-a"
        assert running.store.get_payment(idempotency_key="cert-dns").intent.sender == "gw-b"
        assert running.store.get_payment(idempotency_key="cert-unknown") is None
    finally:
        await running.stop(grace_s=1)


async def test_a_caller_over_its_limit_waits_while_another_keeps_its_rate(
    guarded: RunningServer, stub: pb_grpc.SettlementStub
) -> None:
    # gw-a may make 3 Pay calls, then one per 1,000 s; gw-b has no limit.
    for n in range(3):
        await stub.Pay(topup(f"a-{n}"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
    for n in range(20):
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await stub.Pay(topup(f"a-over-{n}"), metadata=bearer("gw-a"), timeout=TIMEOUT_S)
        assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(limited.value.trailing_metadata() or ())
        assert 0 < int(trailing["retry-after-ms"]) <= 1_000_000
        assert int(trailing["retry-after"]) == -(-int(trailing["retry-after-ms"]) // 1000)
        assert guarded.store.get_payment(idempotency_key=f"a-over-{n}") is None
        # The other gateway, interleaved, is never refused.
        reply = await stub.Pay(topup(f"b-{n}"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
        assert reply.status == pb.SETTLED
    # The limit is per RPC: gw-a's GetPayment is not limited.
    await stub.GetPayment(
        pb.GetPaymentRequest(idempotency_key="a-0"), metadata=bearer("gw-a"), timeout=TIMEOUT_S
    )


def test_a_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(RateLimit(per_s=2.0, burst=3), lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # the next token in half a second
    now[0] += 0.5
    assert bucket.take() == 0.0
    now[0] += 3600  # a long idle refills to the burst, no more
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)


async def test_sighup_rotates_tokens(
    guarded: RunningServer, stub: pb_grpc.SettlementStub, access_file: Path
) -> None:
    rotated = "a-rotated-token-for-gateway-b-0123456789abcdef"
    _write(access_file, ACCESS.replace(token_hash(TOKENS["gw-b"]), token_hash(rotated)))
    await stub.Pay(topup("before-rotation"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
    guarded.reload()  # what serve's SIGHUP handler calls
    with pytest.raises(grpc.aio.AioRpcError) as old:
        await stub.Pay(topup("old-token"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
    assert old.value.code() is grpc.StatusCode.UNAUTHENTICATED
    new = (("authorization", f"Bearer {rotated}"),)
    assert (
        await stub.Pay(topup("new-token"), metadata=new, timeout=TIMEOUT_S)
    ).status == pb.SETTLED
    # A broken file on the next reload keeps the callers in use.
    _write(access_file, "[callers.x]\nroles = [")
    guarded.reload()
    assert (await stub.Pay(topup("kept"), metadata=new, timeout=TIMEOUT_S)).status == pb.SETTLED


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '[callers.a]\nroles = ["admin"]\ntoken_sha256 = ["' + "0" * 64 + '"]',
            "'admin' is not one of",
        ),
        ('[callers.a]\nroles = ["gateway"]\ntoken_sha256 = ["hunter2"]', "never the token itself"),
        ('[callers.a]\nroles = ["gateway"]', "cannot prove who it is"),
        ('[callers.a]\nrole = ["gateway"]', "unknown key 'role'"),
        (
            '[callers.a]\nroles = ["gateway"]\ncert_names = ["x"]\nlimits = { Pay = { per_s = 0, burst = 1 } }',
            "per_s",
        ),
        (
            '[callers.a]\nroles = ["gateway"]\ncert_names = ["x"]\nlimits = { Pray = { per_s = 1, burst = 1 } }',
            "'Pray' is not an RPC",
        ),
        (
            '[callers.a]\nroles = []\ncert_names = ["x"]\n[callers.b]\nroles = []\ncert_names = ["x"]',
            "also another caller's",
        ),
        ("[caller.a]", "unknown table 'caller'"),
    ],
)
def test_a_wrong_access_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=said.replace("(", r"\(")) as refused:
        load_access_file(path)
    assert str(path) in str(refused.value)


def test_a_store_of_the_previous_schema_gains_the_sender_column(tmp_path: Path) -> None:
    from quickpay_engine.store import SqliteStore
    from quickpay_engine.store import sqlite as sqlite_module
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    path = tmp_path / "quickpay.sqlite3"
    schema = (Path(sqlite_module.__file__).parent / "schema_sqlite.sql").read_text()
    before = schema.replace(
        "    created_at_us       INTEGER NOT NULL,\n"
        "    -- The caller that sent it, as the access file names it ('' without one).\n"
        "    sender              TEXT NOT NULL DEFAULT ''\n",
        "    created_at_us       INTEGER NOT NULL\n",
    )
    assert before != schema
    with sqlite3.connect(path) as db:  # as the previous build made it
        db.executescript(before + "\nPRAGMA user_version = 2;")
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(payments)")]
    assert columns[-1] == "sender"


async def test_quickpay_bench_calls_with_a_client_certificate_or_a_token(
    data_dir: Path, access_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import SUBSCRIBERS
    from quickpay_engine import cli
    from quickpay_engine.subscribers import write_csv

    with (data_dir / "subscribers.csv").open("w", newline="") as out:
        write_csv(SUBSCRIBERS, out)
    ca = Authority()
    cert, key = ca.server().write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    client_cert, client_key = ca.issue("gw-b", dns=("gw-b.carrier.test",)).write(tmp_path, "gw-b")
    security = SecuritySettings(TlsFiles(cert, key, tmp_path / "ca.pem"), access_file)
    running = await create_server(settings_for(data_dir), security=security)
    try:
        base = ["bench", "--data-dir", str(data_dir), "--target", f"127.0.0.1:{running.port}",
                "--no-progress", "--count", "20", "--concurrency", "2", "--tls-ca", str(tmp_path / "ca.pem"),
                "--tls-cert", str(client_cert), "--tls-key", str(client_key),
                # Only well-formed payments: every error left is the access check's.
                "--invalid-share", "0"]  # fmt: skip
        reports = {}
        for how, extra in (("certificate", ["--rpc", "unary"]), ("token", ["--rpc", "stream"])):
            if how == "token":
                # gw-a's token on gw-b's connection: the certificate names the caller
                # first, so this is still gw-b; a token alone is tested on loopback.
                monkeypatch.setenv("QUICKPAY_TOKEN", TOKENS["gw-a"])
            out = tmp_path / f"{how}.json"
            code = await asyncio.to_thread(cli.main, [*base, *extra, "--json", str(out)])
            assert code == 0, how
            reports[how] = json.loads(out.read_text())
        for report in reports.values():
            assert report["errors"] == {}
            assert report["statuses"].get("SETTLED", 0) > 0
        senders = {
            row[0] for row in running.store._db.execute("SELECT DISTINCT sender FROM payments")
        }
        assert senders == {"gw-b"}
    finally:
        await running.stop(grace_s=1)


async def test_quickpay_bench_sends_the_token_of_quickpay_token(
    guarded: RunningServer, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import SUBSCRIBERS
    from quickpay_engine import cli
    from quickpay_engine.subscribers import write_csv

    with (data_dir / "subscribers.csv").open("w", newline="") as out:
        write_csv(SUBSCRIBERS, out)
    base = ["bench", "--data-dir", str(data_dir), "--target", f"127.0.0.1:{guarded.port}",
            "--no-progress", "--count", "20", "--concurrency", "2", "--rpc", "batch",
            "--invalid-share", "0"]  # fmt: skip
    out = tmp_path / "anonymous.json"
    monkeypatch.delenv("QUICKPAY_TOKEN", raising=False)
    await asyncio.to_thread(cli.main, [*base, "--json", str(out)])
    assert json.loads(out.read_text())["errors"] == {"UNAUTHENTICATED": 20}
    monkeypatch.setenv("QUICKPAY_TOKEN", TOKENS["gw-b"])
    out = tmp_path / "gw-b.json"
    assert await asyncio.to_thread(cli.main, [*base, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == {} and report["statuses"]["SETTLED"] > 0


async def test_a_real_sighup_reloads_the_access_file(
    data_dir: Path, access_file: Path, tmp_path: Path
) -> None:
    import signal

    from test_serve_process import start_server

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process, port = await start_server(
            data_dir, "--auth-file", str(access_file), stderr=log.fileno()
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.SettlementStub(channel)
                reply = await stub.Pay(topup("hup-0"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
                # Admitted and answered; the bundled simulators decline a few per cent of
                # payments (their dice roll on the random payment id), so any outcome.
                assert reply.payment_id and reply.status in (pb.SETTLED, pb.DECLINED)
                rotated = "a-token-made-for-the-sighup-test-0123456789"
                _write(access_file, ACCESS.replace(token_hash(TOKENS["gw-b"]), token_hash(rotated)))
                process.send_signal(signal.SIGHUP)
                new = (("authorization", f"Bearer {rotated}"),)
                # The signal is handled on the server's loop; wait for it, however long.
                for attempt in range(600):
                    try:
                        await stub.Pay(topup(f"hup-{attempt + 1}"), metadata=new, timeout=TIMEOUT_S)
                        break
                    except grpc.aio.AioRpcError as err:
                        assert err.code() is grpc.StatusCode.UNAUTHENTICATED
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the new token was never accepted")
                with pytest.raises(grpc.aio.AioRpcError) as old:
                    await stub.Pay(topup("hup-old"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
                assert old.value.code() is grpc.StatusCode.UNAUTHENTICATED
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
    text = log_path.read_text()
    assert "access file" in text and "reloaded" in text
    assert "every caller may call every RPC" not in text


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "postgres-2pc"], indirect=True)
async def test_access_rows_on_every_store(
    data_dir: Path, access_file: Path, database_urls: list[str] | None
) -> None:
    running = await create_server(
        settings_for(data_dir, database_urls=database_urls),
        security=SecuritySettings(auth_file=access_file),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SettlementStub(channel)
            paid = await stub.Pay(topup("pg-pay"), metadata=bearer("gw-b"), timeout=TIMEOUT_S)
            refund = pb.RefundRequest(idempotency_key="pg-rf", payment_id=paid.payment_id)
            await stub.Refund(refund, metadata=bearer("ops"), timeout=TIMEOUT_S)
        rows = [json.loads(r.content) for r in running.store.audit_rows()]
        assert [(r["kind"], r["caller"]) for r in rows if r["kind"].startswith("access.")] == [
            ("access.refund", "ops")
        ]
        assert running.store.get_payment(idempotency_key="pg-pay").intent.sender == "gw-b"
        assert running.store.verify(running.store.audit_head) == []
    finally:
        await running.stop(grace_s=1)
