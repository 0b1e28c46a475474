"""TLS and mTLS on the gRPC port, with real certificates made for each test: a client
without a certificate the client CA signed is refused at the handshake, and new
certificates are taken up, when their files change or on SIGHUP, without dropping the
connections already open."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import Authority, Issued
from conftest import settings_for, topup
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.errors import ConfigError
from quickpay_engine.security.settings import SecuritySettings, check_exposure
from quickpay_engine.security.tls import CertificateReloader, TlsFiles
from quickpay_engine.server import RunningServer, create_server

TIMEOUT_S = 20


def replace(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary name and renames it over ``path``, as a
    certificate manager rotating files does."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def ca() -> Authority:
    return Authority()


@pytest.fixture
def tls_files(tmp_path: Path, ca: Authority) -> TlsFiles:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    cert, key = ca.server().write(tls_dir, "server")
    client_ca = tls_dir / "clients-ca.pem"
    client_ca.write_bytes(ca.pem)
    return TlsFiles(cert, key, client_ca)


@pytest.fixture
async def tls_server(data_dir: Path, tls_files: TlsFiles) -> AsyncIterator[RunningServer]:
    running = await create_server(settings_for(data_dir), security=SecuritySettings(tls=tls_files))
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


def credentials(roots: bytes, client: Issued | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(roots)
    return grpc.ssl_channel_credentials(roots, client.key_pem, client.cert_pem)


async def health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
    )
    return reply.status


async def test_a_client_with_a_certificate_of_the_client_ca_pays(
    tls_server: RunningServer, ca: Authority
) -> None:
    client = ca.issue("gw-1", uris=("spiffe://carrier.test/gateway/1",))
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{tls_server.port}", credentials(ca.pem, client)
    ) as channel:
        reply = await pb_grpc.SettlementStub(channel).Pay(topup("tls-1"), timeout=TIMEOUT_S)
    assert reply.status == pb.SETTLED


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "plaintext"])
async def test_a_client_without_a_valid_certificate_is_refused_at_the_handshake(
    tls_server: RunningServer, ca: Authority, who: str
) -> None:
    target = f"127.0.0.1:{tls_server.port}"
    if who == "plaintext":
        channel = grpc.aio.insecure_channel(target)
    else:
        client = None if who == "no certificate" else Authority("stranger").issue("gw-x")
        channel = grpc.aio.secure_channel(target, credentials(ca.pem, client))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.SettlementStub(channel).Pay(topup(f"tls-{who}"), timeout=TIMEOUT_S)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    # Nothing reached the service: the payment is unknown.
    assert tls_server.store.get_payment(idempotency_key=f"tls-{who}") is None


@pytest.mark.parametrize("trigger", ["file change", "SIGHUP"])
async def test_new_certificates_serve_new_connections_and_open_ones_stay(
    tls_server: RunningServer, tls_files: TlsFiles, ca: Authority, trigger: str
) -> None:
    target = f"127.0.0.1:{tls_server.port}"
    client = ca.issue("gw-1", dns=("gw-1.carrier.test",))
    async with grpc.aio.secure_channel(target, credentials(ca.pem, client)) as before:
        assert await health(before) == health_pb2.HealthCheckResponse.SERVING
        # Rotation: a server certificate of a new CA, and that CA for clients too.
        new_ca = Authority("rotated CA")
        issued = new_ca.server()
        replace(tls_files.cert, issued.cert_pem)
        replace(tls_files.key, issued.key_pem)
        assert tls_files.client_ca is not None
        replace(tls_files.client_ca, new_ca.pem)
        assert tls_server.tls is not None
        if trigger == "SIGHUP":
            tls_server.reload()  # what serve's SIGHUP handler calls
        new_client = new_ca.issue("gw-1", dns=("gw-1.carrier.test",))
        async with grpc.aio.secure_channel(target, credentials(new_ca.pem, new_client)) as after:
            assert await health(after) == health_pb2.HealthCheckResponse.SERVING
        # A new connection that trusts only the old CA no longer gets through...
        async with grpc.aio.secure_channel(target, credentials(ca.pem, client)) as stale:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health(stale)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # ...while the connection opened before the rotation still serves calls.
        reply = await pb_grpc.SettlementStub(before).Pay(topup("tls-kept"), timeout=TIMEOUT_S)
        assert reply.status == pb.SETTLED
    assert tls_server.tls.reloads == 1


def test_a_broken_rotation_keeps_the_certificates_in_use(
    tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = CertificateReloader(tls_files)
    replace(tls_files.key, Authority().server().key_pem)  # a key of another certificate
    with caplog.at_level(logging.ERROR):
        assert reloader.fetch() is None
        assert reloader.fetch() is None  # reported once, not at every connection
    (logged,) = [r.message for r in caplog.records if "TLS reload" in r.message]
    assert "--tls-key" in logged
    assert reloader.reloads == 0


def test_files_that_are_not_a_certificate_and_its_key_are_refused_at_start(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    other_key.write_bytes(Authority().server().key_pem)
    with pytest.raises(ConfigError, match=r"--tls-cert .* --tls-key"):
        CertificateReloader(TlsFiles(tls_files.cert, other_key))
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(ConfigError, match="--tls-client-ca"):
        CertificateReloader(TlsFiles(tls_files.cert, tls_files.key, not_pem))


def test_beyond_loopback_the_server_needs_tls_and_an_access_file_or_insecure(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    auth = tmp_path / "access.toml"
    assert check_exposure("127.0.0.1:50051", SecuritySettings()) == []
    assert check_exposure("localhost:50051", SecuritySettings()) == []
    assert check_exposure("[::1]:50051", SecuritySettings()) == []
    for listen in ("0.0.0.0:50051", "[::]:50051", "192.0.2.1:50051", "engine.internal:1"):
        with pytest.raises(ConfigError, match=r"not a loopback address.*--insecure"):
            check_exposure(listen, SecuritySettings())
        with pytest.raises(ConfigError, match="no access file"):
            check_exposure(listen, SecuritySettings(tls=tls_files))
        assert check_exposure(listen, SecuritySettings(tls=tls_files, auth_file=auth)) == []
        (warning,) = check_exposure(listen, SecuritySettings(insecure=True))
        assert warning.startswith("INSECURE") and "with no TLS" in warning


async def test_insecure_warns_at_start(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        running = await create_server(
            settings_for(data_dir, listen="0.0.0.0:0"), security=SecuritySettings(insecure=True)
        )
        await running.stop(grace_s=0)
    assert any(r.message.startswith("INSECURE: listening on 0.0.0.0:0") for r in caplog.records)


def test_serve_refuses_a_public_address_without_tls(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "0.0.0.0:0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert "0.0.0.0:0 is not a loopback address" in done.stderr
    assert "--insecure" in done.stderr
    assert not (tmp_path / "quickpay.sqlite3").exists()  # refused before anything opened
