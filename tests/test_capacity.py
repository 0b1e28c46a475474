"""The ledger's capacity as settings, kept with the data dir, and its warning at 80 %."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from conftest import settings_for
from quickpay_engine import ledger_limits
from quickpay_engine.cli import main
from quickpay_engine.config import settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.ledger_limits import LEGACY, LedgerLimits, for_reading
from quickpay_engine.metrics import CapacityWarning
from quickpay_engine.server import create_server


def bounds(running) -> dict[str, int]:
    return {table: bound for table, _, bound in running.service.book.ledger.usage()}


async def test_serve_keeps_its_limits_and_later_commands_open_with_them(
    data_dir: Path, capsys
) -> None:
    settings = dataclasses.replace(
        settings_for(data_dir), ledger_payments_max=8_192, ledger_retention_s=3_600
    )
    running = await create_server(settings)
    try:
        assert bounds(running)["payments"] == 8_192
        assert bounds(running)["transfers"] == 8_192 * 9 // 4
    finally:
        await running.stop(grace_s=1)
    kept = json.loads((data_dir / "ledger" / "limits.json").read_text())
    assert kept == {"payments_max": 8_192, "transfers_max": 18_432, "retention_s": 3_600}
    assert for_reading(data_dir / "ledger") == LedgerLimits(8_192, 18_432, 3_600)

    # A restart without the flags keeps them; a flag changes one and keeps the rest.
    running = await create_server(settings_for(data_dir))
    try:
        assert bounds(running)["payments"] == 8_192
    finally:
        await running.stop(grace_s=1)
    again = dataclasses.replace(settings_for(data_dir), ledger_payments_max=16_384)
    running = await create_server(again)
    try:
        assert bounds(running)["payments"] == 16_384
        assert bounds(running)["transfers"] == 16_384 * 9 // 4
    finally:
        await running.stop(grace_s=1)
    assert for_reading(data_dir / "ledger").retention_s == 3_600

    assert main(["wal", "verify", "--data-dir", str(data_dir)]) == 0
    assert "log intact" in capsys.readouterr().out


def test_a_ledger_from_before_opens_with_the_bounds_it_was_written_with(tmp_path: Path) -> None:
    from quickpay_engine._engine import Ledger

    ledger_dir = tmp_path / "ledger"
    Ledger.open(ledger_dir).close()  # a log, and no limits.json
    assert for_reading(ledger_dir) == LEGACY
    assert for_reading(tmp_path / "new") == LedgerLimits()


def test_the_defaults_fit_the_stated_memory_budget() -> None:
    limits = LedgerLimits()
    peak = limits.payments_max * ledger_limits.PAYMENT_BYTES_PEAK
    assert peak <= ledger_limits.LEDGER_BUDGET_BYTES < ledger_limits.MEMORY_BUDGET_BYTES
    assert limits.payments_max == 1_750_000 and limits.retention_s == 86_400
    assert round(limits.payments_per_s) == 20


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--ledger-payments-max", "many", "expected a whole number"),
        ("--ledger-payments-max", "0", "expected a number above 0"),
        ("--ledger-retention-s", "-5", "expected a number above 0"),
    ],
)
def test_a_bad_capacity_flag_is_refused_by_name(flag: str, value: str, said: str) -> None:
    from quickpay_engine.cli import build_parser

    args = build_parser().parse_args(["serve", flag, value])
    with pytest.raises(ConfigError, match=f"{flag} '{value}': {said}"):
        settings_from(args)


def test_limits_out_of_bounds_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="--ledger-payments-max 100: expected 4096"):
        LedgerLimits(payments_max=100)
    with pytest.raises(ConfigError, match="--ledger-transfers-max 5000: expected at least twice"):
        LedgerLimits(payments_max=4_096, transfers_max=5_000)
    with pytest.raises(ConfigError, match="--ledger-retention-s 10: expected 60"):
        LedgerLimits(retention_s=10)


def test_the_capacity_warning_comes_once_at_80_percent_and_again_after_a_fall() -> None:
    said: list[tuple[str, int, int]] = []
    warning = CapacityWarning(lambda *a: said.append(a))
    warning.check([("payments", 79, 100), ("transfers", 10, 100)])
    assert said == []
    warning.check([("payments", 80, 100)])
    warning.check([("payments", 95, 100)])
    assert said == [("payments", 80, 100)]
    warning.check([("payments", 40, 100)])
    warning.check([("payments", 81, 100)])
    assert said == [("payments", 80, 100), ("payments", 81, 100)]


async def test_a_full_enough_ledger_logs_its_warning(data_dir: Path, caplog, monkeypatch) -> None:
    from quickpay_engine import metrics

    monkeypatch.setattr(metrics, "CAPACITY_WARN_RATIO", 1e-9)  # the accounts table is over it
    caplog.set_level(logging.WARNING, logger="quickpay_engine.probes")
    running = await create_server(settings_for(data_dir))
    try:
        await running.service._pipeline.drain()
        # A subscriber's ledger account is opened by its first hold, not at start: one
        # opened here makes the accounts table hold something to warn of.
        from quickpay_engine.settlement.ledger_book import KIND_PREPAID

        running.service.book.open_accounts(["acc-capacity"], [KIND_PREPAID], ["KES"])
        import asyncio

        for _ in range(100):
            if "ledger table accounts holds" in caplog.text:
                break
            await asyncio.sleep(0.05)
    finally:
        await running.stop(grace_s=1)
    assert "ledger table accounts holds" in caplog.text
    assert "RESOURCE_EXHAUSTED" in caplog.text
