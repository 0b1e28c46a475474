"""Small leaks (issue #20, item 9): what error messages echo, what a key conflict
names, what a reconciliation CSV cell can do in a spreadsheet, who can read the data."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import bill, settings_for
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.errors import ECHO_MAX
from quickpay_engine.store import SqliteStore


@pytest.mark.parametrize("rpc", ["GetPayment", "Refund"])
async def test_a_long_or_huge_unknown_id_gets_a_short_message(stub, rpc: str) -> None:
    """An unknown id within the field's bound is NOT_FOUND, echoed cut to ECHO_MAX; a
    16 KB one is over the bound (INVALID_ARGUMENT) and echoed not at all. Either way
    the message stays short (a long one would end as a metadata-size error)."""

    async def call(payment_id: str) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if rpc == "GetPayment":
                await stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))
            else:
                await stub.Refund(pb.RefundRequest(idempotency_key="r", payment_id=payment_id))
        return err.value

    long = await call("pay_" + "x" * 200)
    assert long.code() == grpc.StatusCode.NOT_FOUND
    assert len(long.details()) < ECHO_MAX + 100, len(long.details())
    assert "pay_xxx" in long.details()
    huge = await call("pay_" + "x" * 16_000)
    assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(huge.details()) < 100 and "xxx" not in huge.details(), huge.details()


async def test_a_pay_key_conflict_names_nothing_of_the_other_payment(stub) -> None:
    first = await stub.Pay(bill("leak-key"))
    assert first.status == pb.SETTLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Pay(bill("leak-key", amount=pb.Money(amount_minor=3_001, currency="EUR")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first.payment_id not in err.value.details(), err.value.details()


def test_reconcile_csv_quotes_cells_a_spreadsheet_would_run(data_dir: Path) -> None:
    """A gateway report's references come back in discrepancy rows; in --format csv a
    cell beginning =, +, -, @, tab or carriage return is prefixed with ' (OWASP's
    advice), so a spreadsheet shows it as text instead of running it."""
    from test_reconcile import settle_day, to_csv

    store = SqliteStore(settings_for(data_dir).sqlite_path)
    rows = settle_day(store, 4)
    store.close()
    hostile = ['=HYPERLINK("http://x")', "+1+2", "-3+4", "@SUM(A1)"]
    for n, value in enumerate(hostile):
        rows.append({**rows[0], "gateway_reference": value, "merchant_reference": f"pay_p{n}"})
    report = data_dir / "hostile.csv"
    report.write_text(to_csv(rows))
    done = subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "reconcile", "--data-dir", str(data_dir),
         "--gateway", "acq-a", str(report), "--format", "csv"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    cells = [row["gateway_reference"] for row in csv.DictReader(io.StringIO(done.stdout))]
    assert sorted(cells) == sorted("'" + v for v in hostile)
    # Amounts stay numbers: a number is not a formula.
    amounts = [row["gateway_amount_minor"] for row in csv.DictReader(io.StringIO(done.stdout))]
    assert all(a.lstrip("-").isdigit() for a in amounts if a)


def test_the_spreadsheet_quoting_of_one_cell() -> None:
    from quickpay_engine.commands.reconcile import spreadsheet_safe

    for bad in ("=1", "+1", "-1", "@a", "\t=1", "\r=1"):
        assert spreadsheet_safe(bad) == "'" + bad
    for fine in ("gw-1", "", "a=b", "'=1"):
        assert spreadsheet_safe(fine) == fine
    assert spreadsheet_safe(-5) == -5 and spreadsheet_safe(None) is None
