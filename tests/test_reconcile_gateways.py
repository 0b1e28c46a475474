"""Reconciliation end to end: payments settled through the saga at real gateway
processes, then each gateway's own settlement report (its CSV export) reconciled against
billing. A clean report after a run with declines, refunds and failover has no
discrepancy (invariant 6); a report the gateway was told to corrupt yields exactly the
discrepancies it injected, each in its category."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import grpc

from conftest import bill, settings_for, topup
from gateway_procs import SimulatorSet, day_clear_of_midnight
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc
from quickpay_engine.server import create_server

CATEGORY_OF = {
    "missing_in_billing": "MISSING_IN_BILLING",
    "missing_at_gateway": "MISSING_AT_GATEWAY",
    "amount_mismatch": "AMOUNT_MISMATCH",
    "currency_mismatch": "CURRENCY_MISMATCH",
    "status_mismatch": "STATUS_MISMATCH",
    "duplicate": "DUPLICATE_AT_GATEWAY",
    "outside_window": "OUTSIDE_WINDOW",
}


# The reconciliations' cutoff tolerance. A capture billed in the last tolerance of its
# day is the next day's run's to find, and a row dated the day before within the
# tolerance of midnight is still inside the window (both by design), so the test keeps
# its payments clear of the day's end: with the default 900 s it failed whenever it ran
# after 23:45 UTC.
TOLERANCE_S = 60
# What the test's payments and reports may take, at most, before the day's last
# tolerance begins.
RUN_S = 90


def _report(sims: SimulatorSet, name: str, day: str, inject: str = "") -> tuple[bytes, list]:
    url = f"{sims.urls[name]}/v1/reports/settlement?business_day={day}"
    if inject:
        url += f"&inject={inject}&inject_seed=7"
    with urllib.request.urlopen(url, timeout=10) as response:
        injected = json.loads(response.headers.get("X-Quickpay-Injected") or "[]")
        return response.read(), injected


async def test_gateway_reports_reconcile_clean_and_injected_ones_exactly(
    tmp_path: Path, data_dir: Path
) -> None:
    (tmp_path / "gw").mkdir()
    sims = SimulatorSet(tmp_path / "gw").start()
    running = await create_server(settings_for(data_dir, gateways=sims.gateways_file))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.SettlementStub(channel)
    try:
        day = await day_clear_of_midnight(TOLERANCE_S + RUN_S)
        cards = [
            bill(f"rc-{n}", amount=pb.Money(amount_minor=10 + n, currency="EUR")) for n in range(40)
        ]
        wallets = [
            topup(f"rcw-{n}", amount=pb.Money(amount_minor=100 + n, currency="KES"))
            for n in range(20)
        ]
        paid = await asyncio.gather(*(stub.Pay(r) for r in cards + wallets))
        assert all(p.status == pb.SETTLED for p in paid)
        # Some declines and a refund, so the clean report is not trivially clean.
        sims.set_faults("acq-a", {"seed": 2, "declines": {"DO_NOT_HONOUR": 1.0}})
        sims.set_faults("acq-b", {"seed": 2, "declines": {"DO_NOT_HONOUR": 1.0}})
        declined = await stub.Pay(bill("rc-declined"))
        assert declined.status == pb.DECLINED
        # The refund is of a wallet payment: the corrupted report below is acq-a's, whose
        # rows the injector picks at random, and a refunded capture reported as VOIDED
        # is a case of its own (the money is back either way).
        refund = await stub.Refund(
            pb.RefundRequest(idempotency_key="rc-rf", payment_id=paid[-1].payment_id)
        )
        assert refund.status == pb.REFUNDED

        for name in ("acq-a", "wallet-x"):
            csv_bytes, _ = _report(sims, name, day)
            clean = await stub.Reconcile(
                pb.ReconcileRequest(
                    gateway=name, report_csv=csv_bytes, business_day=day,
                    cutoff_tolerance_s=TOLERANCE_S,
                )
            )  # fmt: skip
            assert clean.matched > 0
            assert list(clean.discrepancies) == [], (name, clean.discrepancies)

        inject = ",".join(f"{kind}:1" for kind in CATEGORY_OF)
        csv_bytes, injected = _report(sims, "acq-a", day, inject)
        assert len(injected) == len(CATEGORY_OF)
        report = await stub.Reconcile(
            pb.ReconcileRequest(
                gateway="acq-a", report_csv=csv_bytes, business_day=day,
                cutoff_tolerance_s=TOLERANCE_S,
            )
        )  # fmt: skip
        found = {(d.category, d.payment_id) for d in report.discrepancies}
        expected = {(CATEGORY_OF[i["kind"]], i["merchant_reference"]) for i in injected}
        assert found == expected
    finally:
        await channel.close()
        await running.stop(grace_s=1)
        sims.stop()
