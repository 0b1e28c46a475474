"""Invariant 7, proved by trying: payments with known card numbers of every scheme go
through a real `quickpay serve` process (its bundled gateway simulators included), and
then no file under the data dir (SQLite and its WAL, the ledger's log segments and
snapshots, the simulators' books) and not the server's log holds any of those numbers,
whole or with its digits split by spaces or dashes. And the keys in the data dir are
the owner's alone: created 0600, refused when group or others may read them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import grpc

from conftest import bill
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from test_serve_process import start_server

TIMEOUT_S = 30
# Luhn-valid numbers of every scheme the engine knows (engine/src/validate/card.rs).
PANS = {
    "visa": "4111111111111111",
    "visa-13": "4222222222222",
    "visa-19": "4000000000000000006",
    "mastercard": "5555555555554444",
    "mastercard-2": "2223003122003222",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "jcb": "3530111333300000",
    "unionpay": "6200000000000005",
    "maestro": "6759649826438453",
    "mir": "2200000000000004",
}


def pattern(pan: str) -> re.Pattern[bytes]:
    """The number's digits in order, with any spaces or dashes between them."""
    return re.compile(b"[ -]*".join(re.escape(d.encode()) for d in pan))


PATTERNS = {name: pattern(pan) for name, pan in PANS.items()}


def found_in(paths: list[Path]) -> list[str]:
    """Which PAN each file holds, as "file: scheme"."""
    found = []
    for path in paths:
        if not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path}: {name}" for name, p in PATTERNS.items() if p.search(data)]
    return found


def every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def card(pan: str, month: int = 12) -> pb.PaymentMethod:
    return pb.PaymentMethod(card=pb.Card(pan=pan, expiry_month=month, expiry_year=2031))


def test_the_patterns_find_a_number_however_it_is_split(tmp_path: Path) -> None:
    written = tmp_path / "probe"
    for form in (
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "41 11-11 111111 1111",
    ):
        written.write_bytes(b"x" + form.encode() + b"y")
        assert found_in([written]) == [f"{written}: visa"], form
    written.write_bytes(b"411111111111111")  # one digit short
    assert found_in([written]) == []


async def _pay_with_every_pan(port: int) -> None:
    n = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SettlementStub(channel)
        one_eur = pb.Money(amount_minor=100, currency="EUR")
        for name, pan in PANS.items():
            n += 1
            # Pay, a second time in a PayBatch and on a PayStream, and once expired: the
            # number goes through validation, scoring, the journal, the gateway and the
            # decline paths.
            paid = await stub.Pay(
                bill(f"pan-{name}", amount=one_eur, method=card(pan)), timeout=TIMEOUT_S
            )
            assert paid.status in (pb.SETTLED, pb.DECLINED), (name, paid)
            batch = pb.PayBatchRequest(
                payments=[
                    bill(f"pan-batch-{name}", amount=one_eur, method=card(pan)),
                    bill(f"pan-expired-{name}", amount=one_eur, method=card(pan, month=13)),
                ]
            )
            await stub.PayBatch(batch, timeout=TIMEOUT_S)
            async for _ in stub.PayStream(
                iter([bill(f"pan-stream-{name}", amount=one_eur, method=card(pan))])
            ):
                break
            if paid.status == pb.SETTLED:
                await stub.Refund(
                    pb.RefundRequest(idempotency_key=f"rf-{name}", payment_id=paid.payment_id),
                    timeout=TIMEOUT_S,
                )
            # A request that fails validation elsewhere (a bad MSISDN) still carries it.
            try:
                await stub.Pay(
                    bill(f"pan-bad-{name}", msisdn="not a number", method=card(pan)),
                    timeout=TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert pan not in (err.details() or "")
    assert n == len(PANS)


async def test_no_card_number_reaches_a_file_or_the_log(data_dir: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process, port = await start_server(data_dir, stderr=log.fileno())
        try:
            await _pay_with_every_pan(port)
            # While it runs: the SQLite WAL and the ledger's open segment as they are.
            running = found_in(every_file(data_dir))
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
    files = every_file(data_dir)
    names = {p.relative_to(data_dir).parts[0] for p in files}
    # The places the invariant names are all there to be searched.
    assert {"ledger", "quickpay.sqlite3", "gateways"} <= names, names
    assert any(p.parent.name == "gateways" or "gateways" in p.parts for p in files)
    assert log_path.stat().st_size > 0
    assert running == []
    assert found_in([*files, log_path]) == []


def test_the_keys_are_made_0600_and_refused_when_others_may_read_them(
    data_dir: Path, tmp_path: Path
) -> None:
    from quickpay_engine.errors import ConfigError
    from quickpay_engine.server import fingerprint_key

    fingerprint_key(data_dir)
    key = data_dir / "fingerprint.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for mode in (0o640, 0o604, 0o620):
        key.chmod(mode)
        try:
            fingerprint_key(data_dir)
        except ConfigError as err:
            assert f"mode {mode:04o}" in str(err) and "chmod 600" in str(err)
        else:
            raise AssertionError(f"a key of mode {mode:04o} was accepted")
    # `quickpay serve` refuses to start with it, naming the file.
    key.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert str(key) in done.stderr and "chmod 600" in done.stderr
