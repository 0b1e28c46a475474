"""`--log-format json`: lines that parse, name their payment, and never a card number."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import bill, settings_for, topup
from quickpay_engine.logs import (
    CALLER,
    PAN_REDACTED,
    CardNumberFilter,
    json_formatter,
    payment_fields,
    without_card_numbers,
)

PAN = "4242424242424242"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged while the test runs, as the JSON format writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(CardNumberFilter())
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_payment(json_lines) -> None:
    token = CALLER.set("CN=gateway-node-7")
    try:
        logging.getLogger("quickpay_engine.x").warning(
            "payment %s stuck", "pay_1", extra=payment_fields("pay_1", "key-1")
        )
    finally:
        CALLER.reset(token)
    (line,) = parsed(json_lines)
    assert line["level"] == "WARNING" and line["logger"] == "quickpay_engine.x"
    assert line["message"] == "payment pay_1 stuck"
    assert line["payment_id"] == "pay_1" and line["idempotency_key"] == "key-1"
    assert line["caller"] == "CN=gateway-node-7"
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_no_card_number_reaches_a_line_even_in_a_traceback(json_lines) -> None:
    log = logging.getLogger("quickpay_engine.y")
    log.info("card %s and grouped 4242 4242 4242 4242", PAN)
    try:
        raise ValueError(f"bad card {PAN}")
    except ValueError:
        log.exception("failed")
    text = json_lines.getvalue()
    assert PAN not in text and "4242 4242 4242 4242" not in text
    assert text.count(PAN_REDACTED) >= 3
    assert all(isinstance(line, dict) for line in parsed(json_lines))


def test_only_luhn_valid_runs_are_card_numbers() -> None:
    # A near miss: same shape, wrong check digit; and a Unix time in microseconds.
    assert without_card_numbers("4242424242424241") == "4242424242424241"
    assert without_card_numbers("at 1733450000000000") == "at 1733450000000000"
    assert without_card_numbers(f"x{PAN}y") == f"x{PAN_REDACTED}y"


async def test_a_recovered_payment_is_found_by_its_id(data_dir: Path, json_lines) -> None:
    """A batch interrupted after stage 1: at the next start recovery logs what it did,
    and those lines carry the payment's id."""
    from quickpay_engine.api.convert import intent_of
    from quickpay_engine.server import create_server, fingerprint_key

    running = await create_server(settings_for(data_dir))
    key = fingerprint_key(data_dir)
    pipeline = running.service._pipeline
    batch = await pipeline._prepare([intent_of(topup("log-unsent"), key)])
    (unsent,) = (batch.decisions[k] for k in batch.reserved)
    pipeline.in_flight.clear()  # the process dies here
    await running.service.router.close()
    await running.stop_gateways()
    running.service.book.close()
    running.store.close()
    await running.server.stop(0)
    again = await create_server(settings_for(data_dir))
    await again.stop(grace_s=1)

    lines = parsed(json_lines)
    mine = [line for line in lines if line.get("payment_id") == unsent.payment_id]
    assert mine, lines
    assert any("recovery" in line["message"] for line in mine)
    assert all(line["payment_id"] == unsent.payment_id for line in mine)


async def test_serve_logs_json_lines_on_stderr(data_dir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "--log-format", "json", "serve",
        "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--fraud-mode", "observe",
        "--gateways", os.environ["QUICKPAY_TEST_SESSION_GATEWAYS"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.startswith(b"listening on"), line
    process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    lines = [json.loads(raw) for raw in err.decode().splitlines()]
    assert any("serving quickpay.v1.Settlement" in line["message"] for line in lines)
    assert {line["level"] for line in lines} <= {"INFO", "WARNING"}


def test_an_unknown_log_format_is_refused_by_name(capsys) -> None:
    from quickpay_engine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--log-format", "xml", "seed", "--help"])
    assert exit_.value.code == 2
    assert "--log-format" in capsys.readouterr().err


_ = bill
