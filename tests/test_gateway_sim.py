"""The gateway simulator as a real process on a real socket: the acquirer API, its
seeded faults, its books across restarts, its settlement report, and invariant 7."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway_procs import day_clear_of_midnight, recent_business_days
from quickpay_engine.domain import MethodKind
from quickpay_engine.errors import ConfigError
from quickpay_engine.gateways.client import (
    GatewayAmbiguous,
    GatewayClient,
    GatewayRefused,
    GatewayUnreachable,
)
from quickpay_engine.gateways.config import (
    BreakerSettings,
    GatewayConfig,
    GatewaysConfig,
    load_config,
    parse_config,
)
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.sim.report import DISCREPANCY_KINDS
from quickpay_engine.gateways.supervisor import (
    LOG_FILE,
    SimulatorProcess,
    open_gateways,
    sim_data_dir,
    start_simulator,
    stop_simulator,
)
from quickpay_engine.reconcile.report import read_rows

PAN = "4242424242424242"
T = 5.0  # seconds: a generous per-call timeout for calls that must not time out


def card(pan: str = PAN, month: int = 12, year: int = 2031) -> dict[str, object]:
    return {"kind": "card", "pan": pan, "expiry_month": month, "expiry_year": year}


def gateway_config(name: str, url: str, **overrides: object) -> GatewayConfig:
    """A test gateway with short timeouts, taking cards and wallets in EUR and KES."""
    fields: dict[str, object] = {
        "name": name,
        "url": url,
        "methods": frozenset({MethodKind.CARD, MethodKind.WALLET}),
        "currencies": frozenset({"EUR", "KES"}),
        "timeout_ms": 1_000,
        "lookup_timeout_ms": 500,
        "pool_max": 16,
        "breaker": BreakerSettings(failure_threshold=3, open_ms=1_000, half_open_max_calls=1),
    }
    fields.update(overrides)
    return GatewayConfig(**fields)  # type: ignore[arg-type]


async def set_faults(url: str, **model: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{url}/sim/faults", json=model) as response,
    ):
        assert response.status == 200, await response.text()


async def raw(method: str, url: str, body: object = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body) as response,
    ):
        return response.status, await response.json()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimulatorProcess]:
    child = await start_simulator("acq-a", FaultModel(seed=1), tmp_path)
    try:
        yield child
    finally:
        await stop_simulator(child)


@pytest.fixture
async def client(sim: SimulatorProcess) -> AsyncIterator[GatewayClient]:
    c = GatewayClient(gateway_config(sim.name, sim.url))
    await c.start()
    try:
        yield c
    finally:
        await c.close()


# The acquirer API


async def test_sale_is_captured_and_a_malformed_sale_is_refused(client: GatewayClient) -> None:
    paid = await client.sale("pay_1", 3_000, "EUR", card(), T)
    assert paid["state"] == "CAPTURED"
    assert paid["captured_minor"] == 3_000 and paid["currency"] == "EUR"
    assert paid["method"]["last4"] == "4242"
    assert paid["gateway_reference"].startswith("ACQA-")
    looked = await client.lookup("pay_1", T)
    assert looked is not None and looked["gateway_reference"] == paid["gateway_reference"]

    # Near misses: each is refused with INVALID_REQUEST and leaves no trace.
    for ref, amount, currency, method in [
        ("pay_2", 0, "EUR", card()),
        ("pay_3", -5, "EUR", card()),
        ("pay_4", 30.0, "EUR", card()),  # a float is never an amount
        ("pay_5", 3_000, "eur", card()),
        ("pay_6", 3_000, "EUR", card(pan="4242")),
        ("pay_7", 3_000, "EUR", {"kind": "cheque"}),
        ("", 3_000, "EUR", card()),
    ]:
        with pytest.raises(GatewayRefused) as refused:
            await client.sale(ref, amount, currency, method, T)  # type: ignore[arg-type]
        assert (refused.value.status, refused.value.code) == (400, "INVALID_REQUEST")
        if ref:
            assert await client.lookup(ref, T) is None


async def test_any_printable_reference_round_trips(client: GatewayClient) -> None:
    for ref in ["pay a/b?c#d%2F", "ü-ref", "x" * 64]:
        paid = await client.sale(ref, 100, "EUR", card(), T)
        assert paid["merchant_reference"] == ref
        looked = await client.lookup(ref, T)
        assert looked is not None and looked["gateway_reference"] == paid["gateway_reference"]
        refunded = await client.refund(ref, ref[:60] + "-rf", 10, "EUR", T)
        assert refunded["payment"]["refunded_minor"] == 10
    with pytest.raises(GatewayRefused) as refused:  # the near miss: one character too long
        await client.sale("x" * 65, 100, "EUR", card(), T)
    assert refused.value.code == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("pan", "month", "year", "reason"),
    [
        ("4000000000009995", 12, 2031, "INSUFFICIENT_FUNDS"),
        ("4000000000000002", 12, 2031, "DO_NOT_HONOUR"),
        ("4000000000000069", 12, 2031, "EXPIRED_CARD"),
        ("4100000000000019", 12, 2031, "SUSPECTED_FRAUD"),
        ("4242424242424241", 12, 2031, "INVALID_CARD_NUMBER"),  # fails the Luhn check
        (PAN, 1, 2020, "EXPIRED_CARD"),
        (PAN, 13, 2031, "INVALID_CARD_NUMBER"),
    ],
)
async def test_decline_by_reason(
    client: GatewayClient, pan: str, month: int, year: int, reason: str
) -> None:
    declined = await client.sale("pay_d", 3_000, "EUR", card(pan, month, year), T)
    assert (declined["state"], declined["decline_reason"]) == ("DECLINED", reason)
    assert declined["captured_minor"] == 0
    # The near miss: the same card details otherwise valid are captured.
    ok = await client.sale("pay_ok", 3_000, "EUR", card(), T)
    assert (ok["state"], ok["decline_reason"]) == ("CAPTURED", "")


async def test_seeded_decline_rates_are_reproducible(tmp_path: Path) -> None:
    model = {"seed": 7, "declines": {"INSUFFICIENT_FUNDS": 0.3, "DO_NOT_HONOUR": 0.1}}
    results = []
    # Two runs with the same seed, then one with another seed.
    for run, seed in enumerate([7, 7, 8]):
        child = await start_simulator(
            f"acq-{run}", FaultModel.from_dict({**model, "seed": seed}), tmp_path
        )
        c = GatewayClient(gateway_config(child.name, child.url))
        await c.start()
        try:
            replies = await asyncio.gather(
                *(c.sale(f"pay_{n}", 100, "EUR", card(), T) for n in range(200))
            )
        finally:
            await c.close()
            await stop_simulator(child)
        results.append([r["decline_reason"] for r in replies])
    assert results[0] == results[1], "the same seed and references must decline the same"
    counts = {reason: results[0].count(reason) for reason in set(results[0])}
    assert 35 <= counts["INSUFFICIENT_FUNDS"] <= 85, counts  # 60 expected
    assert 5 <= counts["DO_NOT_HONOUR"] <= 40, counts  # 20 expected
    assert set(counts) == {"", "INSUFFICIENT_FUNDS", "DO_NOT_HONOUR"}
    assert results[2] != results[0], "another seed must decline other sales"


async def test_repeated_sale_returns_the_original_and_never_captures_twice(
    client: GatewayClient, sim: SimulatorProcess
) -> None:
    first = await client.sale("pay_r", 3_000, "EUR", card(), T)
    again = await asyncio.gather(
        *(client.sale("pay_r", 3_000, "EUR", card(), T) for _ in range(10)),
        client.sale("pay_r", 9_999, "EUR", card(), T),  # another amount: still the original
    )
    assert not first["replayed"]
    assert all(a["replayed"] for a in again)
    assert {(a["gateway_reference"], a["captured_minor"], a["state"]) for a in again} == {
        (first["gateway_reference"], 3_000, "CAPTURED")
    }
    rows: list[dict[str, str]] = []
    for day in recent_business_days():  # booked before midnight: the day before's
        text, _ = await client.settlement_report(day, T)
        rows += csv.DictReader(io.StringIO(text))
    assert [(r["merchant_reference"], r["type"]) for r in rows] == [("pay_r", "CAPTURE")]


async def test_lost_response_is_captured_and_found_by_lookup(
    client: GatewayClient, sim: SimulatorProcess
) -> None:
    await set_faults(sim.url, lost_response_rate=1.0, hang_ms=3_000)
    with pytest.raises(GatewayAmbiguous):
        await client.sale("pay_lost", 3_000, "EUR", card(), 0.5)
    found = await client.lookup("pay_lost", T)
    assert found is not None and found["state"] == "CAPTURED"
    # The repeated sale is answered (a replay is never withheld) and captures nothing new.
    again = await client.sale("pay_lost", 3_000, "EUR", card(), T)
    assert again["replayed"] and again["gateway_reference"] == found["gateway_reference"]


async def test_server_error_processes_nothing(client: GatewayClient, sim: SimulatorProcess) -> None:
    await set_faults(sim.url, server_error_rate=1.0)
    with pytest.raises(GatewayAmbiguous):
        await client.sale("pay_5xx", 3_000, "EUR", card(), T)
    assert await client.lookup("pay_5xx", T) is None


async def test_void_and_refund(client: GatewayClient) -> None:
    held = await client.sale("pay_auth", 5_000, "EUR", card(), T, capture=False)
    assert (held["state"], held["captured_minor"]) == ("AUTHORIZED", 0)
    voided = await client.void("pay_auth", T)
    assert voided["state"] == "VOIDED"
    with pytest.raises(GatewayRefused) as refused:
        await client.capture("pay_auth", None, T)
    assert refused.value.code == "NOT_CAPTURABLE"

    held = await client.sale("pay_cap", 5_000, "EUR", card(), T, capture=False)
    with pytest.raises(GatewayRefused) as refused:
        await client.capture("pay_cap", 5_001, T)
    assert refused.value.code == "CAPTURE_EXCEEDS_AUTHORIZED"
    captured = await client.capture("pay_cap", 4_000, T)
    assert (captured["state"], captured["captured_minor"]) == ("CAPTURED", 4_000)

    # Refunds: never above what was captured (4_000), idempotent on the refund reference.
    with pytest.raises(GatewayRefused) as refused:
        await client.refund("pay_cap", "rf-0", 4_001, "EUR", T)
    assert (refused.value.status, refused.value.code) == (422, "REFUND_EXCEEDS_CAPTURED")
    with pytest.raises(GatewayRefused) as refused:
        await client.refund("pay_cap", "rf-0", 1_000, "KES", T)
    assert refused.value.code == "CURRENCY_MISMATCH"
    part = await client.refund("pay_cap", "rf-1", 1_500, "EUR", T)
    assert (part["payment"]["state"], part["payment"]["refunded_minor"]) == (
        "PARTIALLY_REFUNDED", 1_500,
    )  # fmt: skip
    replay = await client.refund("pay_cap", "rf-1", 1_500, "EUR", T)
    assert replay["replayed"] and replay["payment"]["refunded_minor"] == 1_500
    with pytest.raises(GatewayRefused) as refused:
        await client.refund("pay_cap", "rf-2", 2_501, "EUR", T)
    assert refused.value.code == "REFUND_EXCEEDS_CAPTURED"
    rest = await client.refund("pay_cap", "rf-2", 2_500, "EUR", T)
    assert (rest["payment"]["state"], rest["payment"]["refunded_minor"]) == ("REFUNDED", 4_000)
    with pytest.raises(GatewayRefused) as refused:
        await client.refund("pay_cap", "rf-3", 1, "EUR", T)
    assert refused.value.code == "NOT_REFUNDABLE"
    # A refunded capture cannot be voided any more.
    with pytest.raises(GatewayRefused) as refused:
        await client.void("pay_cap", T)
    assert refused.value.code == "NOT_VOIDABLE"


async def test_void_of_an_unknown_reference_stops_a_late_sale(client: GatewayClient) -> None:
    tomb = await client.void("pay_late", T)
    assert (tomb["state"], tomb["captured_minor"]) == ("VOIDED", 0)
    late = await client.sale("pay_late", 3_000, "EUR", card(), T)
    assert (late["state"], late["captured_minor"]) == ("VOIDED", 0)
    # The near miss: a reference never voided is captured.
    assert (await client.sale("pay_fresh", 3_000, "EUR", card(), T))["state"] == "CAPTURED"


async def test_books_survive_a_kill_and_restart(tmp_path: Path) -> None:
    child = await start_simulator("acq-a", FaultModel(), tmp_path)
    c = GatewayClient(gateway_config("acq-a", child.url))
    await c.start()
    try:
        paid = await c.sale("pay_k", 3_000, "EUR", card(), T)
        await c.refund("pay_k", "rf-k", 1_000, "EUR", T)
        declined = await c.sale("pay_kd", 3_000, "EUR", card("4000000000000002"), T)
    finally:
        await c.close()
    child.process.send_signal(signal.SIGKILL)
    assert await child.process.wait() == -signal.SIGKILL

    child = await start_simulator("acq-a", FaultModel(), tmp_path, port=child.port)
    c = GatewayClient(gateway_config("acq-a", child.url))
    await c.start()
    try:
        looked = await c.lookup("pay_k", T)
        assert looked is not None
        assert (looked["state"], looked["captured_minor"], looked["refunded_minor"]) == (
            "PARTIALLY_REFUNDED", 3_000, 1_000,
        )  # fmt: skip
        again = await c.sale("pay_k", 3_000, "EUR", card(), T)
        assert again["replayed"] and again["gateway_reference"] == paid["gateway_reference"]
        redeclined = await c.sale("pay_kd", 3_000, "EUR", card(), T)  # now a good card
        assert (redeclined["state"], redeclined["gateway_reference"]) == (
            "DECLINED", declined["gateway_reference"],
        )  # fmt: skip
        # New references keep counting after the old ones: none is reused.
        fresh = await c.sale("pay_new", 3_000, "EUR", card(), T)
        assert fresh["gateway_reference"] not in {
            paid["gateway_reference"], declined["gateway_reference"],
        }  # fmt: skip
        with pytest.raises(GatewayRefused):
            await c.refund("pay_k", "rf-k2", 2_001, "EUR", T)
    finally:
        await c.close()
        await stop_simulator(child)


async def test_settlement_report_rows_and_injected_discrepancies(
    client: GatewayClient,
) -> None:
    # One day's report, whole: the sales and their report within one business day.
    day = await day_clear_of_midnight()
    for n in range(10):
        await client.sale(f"pay_{n}", 1_000 + n, "EUR", card(), T)
    await client.sale("pay_declined", 500, "EUR", card("4000000000009995"), T)
    await client.refund("pay_3", "rf-3", 400, "EUR", T)
    await client.void("pay_4", T)
    text, injected = await client.settlement_report(day, T)
    assert injected == []
    lines = text.splitlines()
    assert lines[0] == (
        "gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    got = [(r["merchant_reference"], r["amount_minor"], r["type"], r["status"]) for r in rows]
    expected = [(f"pay_{n}", str(1_000 + n), "CAPTURE", "SETTLED") for n in range(10)]
    expected[4] = ("pay_4", "1004", "CAPTURE", "VOIDED")
    expected.append(("pay_3", "400", "REFUND", "SETTLED"))
    assert got == expected  # the decline is not in it: nothing was captured
    assert all(r["currency"] == "EUR" and r["captured_at"].startswith(day) for r in rows)
    assert len({r["gateway_reference"] for r in rows}) == len(rows)
    # Another day's report is empty, and a malformed day is refused.
    empty, _ = await client.settlement_report("2001-01-01", T)
    assert empty.splitlines() == lines[:1]
    with pytest.raises(GatewayRefused):
        await client.settlement_report("yesterday", T)

    spec = ",".join(f"{kind}:1" for kind in DISCREPANCY_KINDS)
    dirty, injected = await client.settlement_report(day, T, inject=spec, inject_seed=3)
    assert sorted(i["kind"] for i in injected) == sorted(DISCREPANCY_KINDS)
    by_kind = {i["kind"]: i for i in injected}
    dirty_rows = list(csv.DictReader(io.StringIO(dirty)))
    clean = {r["gateway_reference"]: r for r in rows}
    dirty_refs = [r["gateway_reference"] for r in dirty_rows]
    assert by_kind["missing_at_gateway"]["gateway_reference"] not in dirty_refs
    assert dirty_refs.count(by_kind["duplicate"]["gateway_reference"]) == 2
    assert by_kind["missing_in_billing"]["merchant_reference"] not in {
        r["merchant_reference"] for r in rows
    }
    changed = {r["gateway_reference"]: r for r in dirty_rows}
    for kind, column in [
        ("amount_mismatch", "amount_minor"),
        ("currency_mismatch", "currency"),
        ("status_mismatch", "status"),
        ("outside_window", "captured_at"),
    ]:
        ref = by_kind[kind]["gateway_reference"]
        assert changed[ref][column] != clean[ref][column], kind
    assert not changed[by_kind["outside_window"]["gateway_reference"]]["captured_at"].startswith(
        day
    )
    # The reconciliation reads both reports as they are, with no column mapping.
    for text_ in (text, dirty):
        parsed = list(read_rows(io.StringIO(text_)))
        assert len(parsed) == len(list(csv.DictReader(io.StringIO(text_))))
    assert [r.amount_minor for r in read_rows(io.StringIO(text))] == [
        int(r["amount_minor"]) for r in rows
    ]
    # The same seed corrupts the same rows; an unknown kind is refused.
    again, _ = await client.settlement_report(day, T, inject=spec, inject_seed=3)
    assert again == dirty
    with pytest.raises(GatewayRefused):
        await client.settlement_report(day, T, inject="typo:1")


async def test_fault_model_is_validated(sim: SimulatorProcess) -> None:
    for bad in [
        {"lost_response_rate": 1.5},
        {"reset_after_rate": -0.1},
        {"slow_body_rate": 0.5, "reset_before_rate": 0.3, "timeout_rate": 0.3},
        {"declines": {"NOT_A_REASON": 0.1}},
        {"declines": {"INSUFFICIENT_FUNDS": 0.7, "DO_NOT_HONOUR": 0.4}},
        {"latency_ms_median": 50, "latency_ms_p99": 10},
        {"typo_rate": 0.1},
    ]:
        status, body = await raw("PUT", f"{sim.url}/sim/faults", bad)
        assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST"), bad
    status, body = await raw("PUT", f"{sim.url}/sim/faults", {"server_error_rate": 0.5})
    assert status == 200 and body["server_error_rate"] == 0.5


async def test_unknown_paths_wrong_methods_and_huge_bodies_get_json_errors(
    sim: SimulatorProcess,
) -> None:
    for method, path, body, status, code in [
        ("GET", "/v1/nothing", None, 404, "NOT_FOUND"),
        ("DELETE", "/v1/payments/pay_1", None, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/v1/payments/sale", {"pad": "x" * 20_000}, 413, "BODY_TOO_LARGE"),
        ("POST", "/v1/payments/sale", [1, 2], 400, "INVALID_REQUEST"),
        ("POST", "/v1/payments/%FF/capture", {}, 400, "INVALID_REQUEST"),
    ]:
        got, answer = await raw(method, f"{sim.url}{path}", body)
        assert (got, answer["error"]["code"]) == (status, code), path
    # The near miss: a body just under the bound is read (and refused for its fields).
    got, answer = await raw("POST", f"{sim.url}/v1/payments/sale", {"pad": "x" * 16_000})
    assert (got, answer["error"]["message"]) == (400, "merchant_reference must be a str")


# Invariant 7


async def test_card_number_never_reaches_the_simulators_disk_or_logs(tmp_path: Path) -> None:
    pans = ["4242424242424242", "5555555555554444", "4000000000009995", "4242424242424241"]
    child = await start_simulator("acq-a", FaultModel(seed=3), tmp_path)
    c = GatewayClient(gateway_config("acq-a", child.url))
    await c.start()
    try:
        for n, pan in enumerate(pans):
            await c.sale(f"pay_{n}", 1_000, "EUR", card(pan), T)
        with pytest.raises(GatewayRefused):  # a refused request: no echo in the error
            await c.sale("pay_bad", 1_000, "EUR", card(pans[0], month="12"), T)  # type: ignore[arg-type]
        await set_faults(child.url, lost_response_rate=1.0, hang_ms=1_000)
        with pytest.raises(GatewayAmbiguous):
            await c.sale("pay_lost", 1_000, "EUR", card(pans[1]), 0.3)
        await set_faults(child.url, server_error_rate=1.0)
        with pytest.raises(GatewayAmbiguous):
            await c.sale("pay_5xx", 1_000, "EUR", card(pans[0]), T)
        found = await c.lookup("pay_1", T)
    finally:
        await c.close()
        await stop_simulator(child)
    assert found is not None and found["method"]["last4"] == "4444"
    files, stored = read_tree(tmp_path)
    assert sim_data_dir(tmp_path, "acq-a") / LOG_FILE in files
    assert any(p.name.startswith("ledger.sqlite3") for p in files)
    assert b"4444" in stored  # the last four digits are kept, so the scan reads the books
    for pan in pans:
        assert pan.encode() not in stored, pan


# Supervisor


async def test_bundled_simulators_start_answer_and_stop(tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO")
    config, stop = await open_gateways(None, tmp_path)
    try:
        assert [g.name for g in config.gateways] == ["acq-a", "acq-b", "wallet-x"]
        ports = set()
        for g in config.gateways:
            assert g.url.startswith("http://127.0.0.1:")
            ports.add(g.url)
            status, body = await raw("GET", f"{g.url}/health")
            assert (status, body) == (200, {"status": "ok", "gateway": g.name})
        assert len(ports) == 3
        assert "starting the bundled gateway simulators" in caplog.text
    finally:
        await stop()
    for g in config.gateways:
        c = GatewayClient(g)
        await c.start()
        try:
            with pytest.raises(GatewayUnreachable):
                await c.lookup("pay_x", T)
        finally:
            await c.close()


async def test_simulator_exits_when_its_parent_goes(tmp_path: Path) -> None:
    child = await start_simulator("acq-a", FaultModel(), tmp_path)
    assert child.process.stdin is not None
    child.process.stdin.close()  # what the kernel does when the parent dies
    assert await asyncio.wait_for(child.process.wait(), 10) == 0


def test_simulator_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    from quickpay_engine.cli import main

    assert main(["gateway-sim", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)]) == 2
    assert main(["gateway-sim", "--faults-json", '{"timeout_rate": 2}']) == 2


# The gateways file


def test_default_gateways_file_parses() -> None:
    config = load_config(None)
    names = [g.name for g in config.gateways]
    assert names == ["acq-a", "acq-b", "wallet-x"]
    assert all(g.simulator is not None and not g.url for g in config.gateways)
    assert config.gateways[0].takes(MethodKind.CARD, "EUR")
    assert not config.gateways[0].takes(MethodKind.WALLET, "EUR")
    assert not config.gateways[0].takes(MethodKind.CARD, "JPY")


def test_gateways_file_errors_name_the_problem(tmp_path: Path) -> None:
    good = {
        "defaults": {"timeout_ms": 500, "breaker": {"failure_threshold": 2}},
        "gateway": [
            {"name": "ext", "url": "http://127.0.0.1:9/", "methods": ["card"],
             "currencies": ["EUR"], "breaker": {"open_ms": 100}},
        ],
    }  # fmt: skip
    parsed = parse_config(good).gateways[0]
    assert (parsed.url, parsed.timeout_ms, parsed.simulator) == ("http://127.0.0.1:9", 500, None)
    assert parsed.breaker == BreakerSettings(failure_threshold=2, open_ms=100)
    g = good["gateway"][0]
    for change, message in [
        ({"methods": ["cash"]}, "methods"),
        ({"currencies": ["EURO"]}, "currencies"),
        ({"url": "ftp://x"}, "url"),
        ({"url": ""}, "needs a url"),
        ({"timeout_ms": 0}, "positive"),
        ({"breaker": {"open_sec": 1}}, "unknown keys"),
        ({"colour": "red"}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**good, "gateway": [{**g, **change}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"gateway": [g, g]})
    path = tmp_path / "gateways.toml"
    path.write_text("[[gateway]]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    assert GatewaysConfig(()).with_urls({}) == GatewaysConfig(())


def read_tree(root: Path) -> tuple[list[Path], bytes]:
    """Every file under ``root`` and all their bytes (WAL and journal files included)."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return files, b"".join(p.read_bytes() for p in files)


async def test_report_exported_offline_matches_the_served_one(tmp_path: Path) -> None:
    from quickpay_engine.cli import main

    child = await start_simulator("acq-a", FaultModel(), tmp_path)
    c = GatewayClient(gateway_config("acq-a", child.url))
    await c.start()
    day = await day_clear_of_midnight()  # the sales below on this day's report
    try:
        for n in range(5):
            await c.sale(f"pay_{n}", 100 + n, "EUR", card(), T)
        await c.refund("pay_2", "rf-2", 50, "EUR", T)
        served, _ = await c.settlement_report(day, T, inject="duplicate:1", inject_seed=5)
    finally:
        await c.close()
        await stop_simulator(child)
    out = tmp_path / "acq-a.csv"
    argv = ["gateway-sim", "--name", "acq-a", "--data-dir", str(tmp_path)]
    assert main([*argv, "--export-report", day, "--inject", "duplicate:1",
                 "--inject-seed", "5", "--out", str(out)]) == 0  # fmt: skip
    assert out.read_text() == served
    assert '"kind": "duplicate"' in out.with_suffix(".injected.json").read_text()
    # Near misses: an unknown gateway's books, an unknown discrepancy kind.
    assert main(["gateway-sim", "--name", "acq-z", "--data-dir", str(tmp_path),
                 "--export-report", day]) == 2  # fmt: skip
    assert main([*argv, "--export-report", day, "--inject", "typo:1"]) == 2


async def test_an_answer_with_a_fractional_amount_is_unreadable_not_a_float(
    tmp_path: Path,
) -> None:
    """A gateway that answers 3000.0 where minor units belong: the answer is treated as
    garbled (its fate unknown, so it is looked up again), never taken as money."""
    from aiohttp import web

    from quickpay_engine.gateways.client import GatewayAmbiguous

    async def lookup(request: web.Request) -> web.Response:
        return web.json_response(
            {"merchant_reference": "pay_1", "state": "CAPTURED", "captured_minor": 3000.0}
        )

    app = web.Application()
    app.router.add_get("/v1/payments/{ref}", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = GatewayClient(gateway_config("odd", f"http://127.0.0.1:{port}"))
    await client.start()
    try:
        with pytest.raises(GatewayAmbiguous, match="ValueError"):
            await client.lookup("pay_1", 2.0)
    finally:
        await client.close()
        await runner.cleanup()
