"""The simulator's HTTP/JSON acquirer API (aiohttp), one process per simulated gateway.

    GET  /health                                   readiness: {"status": "ok", "gateway"}
    POST /v1/payments/sale                         authorize and capture
    POST /v1/payments/authorize                    authorize only
    POST /v1/payments/{merchant_reference}/capture {"amount_minor"?}
    POST /v1/payments/{merchant_reference}/void    cancel; an unknown reference is
                                                   tombstoned (technical cancel)
    POST /v1/payments/{merchant_reference}/refunds {"refund_reference", "amount_minor",
                                                    "currency"}
    GET  /v1/payments/{merchant_reference}         status lookup (404 NOT_FOUND)
    GET  /v1/reports/settlement?business_day=YYYY-MM-DD[&inject=KIND:N,...&inject_seed=S]
                                                   the day's settlement CSV; what was
                                                   injected is in X-Quickpay-Injected
    GET|PUT /sim/faults                            the fault model (a test and demo hook,
                                                   not part of the acquirer API)

Sale and authorize take {"merchant_reference", "amount_minor", "currency", "method"}
where method is {"kind": "card", "pan", "expiry_month", "expiry_year"} |
{"kind": "wallet", "provider", "wallet_id"} | {"kind": "bank_account", "iban"} |
{"kind": "carrier_balance"}. Errors are {"error": {"code", "message"}}; a message never
repeats a request value, so no card number reaches a log through an error.

Sandbox cards, as real acquirers offer them: 4000000000000002 is declined DO_NOT_HONOUR,
4000000000009995 INSUFFICIENT_FUNDS, 4000000000000069 EXPIRED_CARD, 4100000000000019
SUSPECTED_FRAUD; a number failing the Luhn check is INVALID_CARD_NUMBER.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from quickpay_engine.gateways.sim.faults import Fault, FaultModel, FaultRoller
from quickpay_engine.gateways.sim.ledger import Ledger, LedgerError, MethodSummary, SaleIn
from quickpay_engine.gateways.sim.report import inject_discrepancies, parse_inject, to_csv

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite3"
KEY_FILE = "fingerprint.key"
# Request bodies above this size are refused (413); a sale is well under 1 KiB.
BODY_BYTES_MAX = 16 * 1024
REFERENCE_CHARS_MAX = 64
SHUTDOWN_GRACE_S = 1.0
SANDBOX_DECLINES = {
    "4000000000000002": "DO_NOT_HONOUR",
    "4000000000009995": "INSUFFICIENT_FUNDS",
    "4000000000000069": "EXPIRED_CARD",
    "4100000000000019": "SUSPECTED_FRAUD",
}
CURRENCY = re.compile(r"^[A-Z]{3}$")
SIM_KEY: web.AppKey[Simulator] = web.AppKey("simulator")


class BadRequest(Exception):
    """A malformed request; the message names the field, never its value."""


class Simulator:
    """One gateway's state: its books, its fault dice, its fingerprint key and clock."""

    def __init__(
        self, name: str, data_dir: Path, faults: FaultModel,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:  # fmt: skip
        self.name = name
        self.ledger = Ledger(data_dir / LEDGER_FILE, name)
        self.roller = FaultRoller(faults)
        self.clock_us = clock_us
        self._key = _fingerprint_key(data_dir)

    def summarize(self, method: dict[str, Any]) -> tuple[MethodSummary, str]:
        """What the books keep of a method, and a decline it forces ("" if none)."""
        kind = method.get("kind")
        if kind == "card":
            pan = _field(method, "pan", str)
            month, year = _field(method, "expiry_month", int), _field(method, "expiry_year", int)
            if not pan.isdigit() or not 12 <= len(pan) <= 19:
                raise BadRequest("method.pan must be 12 to 19 digits")
            summary = MethodSummary("card", pan[-4:], self._fingerprint(pan))
            decline = SANDBOX_DECLINES.get(pan, "")
            if not decline and not _luhn_ok(pan):
                decline = "INVALID_CARD_NUMBER"
            if not decline and not 1 <= month <= 12:
                decline = "INVALID_CARD_NUMBER"
            now = time.gmtime(self.clock_us() / 1e6)
            if not decline and (year, month) < (now.tm_year, now.tm_mon):
                decline = "EXPIRED_CARD"
            return summary, decline
        if kind == "wallet":
            wallet = _field(method, "wallet_id", str)
            provider = _field(method, "provider", str)
            return MethodSummary(f"wallet:{provider}"[:32], wallet[-4:],
                                 self._fingerprint(wallet)), ""  # fmt: skip
        if kind == "bank_account":
            iban = _field(method, "iban", str)
            return MethodSummary("bank_account", iban[-4:], self._fingerprint(iban)), ""
        if kind == "carrier_balance":
            return MethodSummary("carrier_balance", "", ""), ""
        raise BadRequest("method.kind must be card, wallet, bank_account or carrier_balance")

    def _fingerprint(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()[:32]


def create_app(simulator: Simulator) -> web.Application:
    """The aiohttp application serving one simulator."""
    app = web.Application(client_max_size=BODY_BYTES_MAX, middlewares=[_errors])
    app[SIM_KEY] = simulator
    app.router.add_get("/health", health)
    app.router.add_post("/v1/payments/sale", sale)
    app.router.add_post("/v1/payments/authorize", authorize)
    app.router.add_post("/v1/payments/{ref}/capture", capture)
    app.router.add_post("/v1/payments/{ref}/void", void)
    app.router.add_post("/v1/payments/{ref}/refunds", refund)
    app.router.add_get("/v1/payments/{ref}", lookup)
    app.router.add_get("/v1/reports/settlement", settlement_report)
    app.router.add_get("/sim/faults", get_faults)
    app.router.add_put("/sim/faults", put_faults)
    app.on_cleanup.append(_close)
    return app


async def _close(app: web.Application) -> None:
    app[SIM_KEY].ledger.close()


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as err:
        return _error(400, "INVALID_REQUEST", str(err))
    except LedgerError as err:
        return _error(err.http_status, err.code, str(err))


async def health(request: web.Request) -> web.Response:
    """Readiness probe."""
    return web.json_response({"status": "ok", "gateway": request.app[SIM_KEY].name})


async def sale(request: web.Request) -> web.StreamResponse:
    """Authorize and capture in one step."""
    return await _sale(request, capture=True)


async def authorize(request: web.Request) -> web.StreamResponse:
    """Authorize only; capture later."""
    return await _sale(request, capture=False)


async def _sale(request: web.Request, *, capture: bool) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    body = await _json(request)
    ref = _reference(_field(body, "merchant_reference", str))
    amount = _field(body, "amount_minor", int)
    currency = _field(body, "currency", str)
    if amount <= 0:
        raise BadRequest("amount_minor must be positive")
    if not CURRENCY.match(currency):
        raise BadRequest("currency must be an ISO 4217 alpha code")
    method = body.get("method")
    if not isinstance(method, dict):
        raise BadRequest("method must be an object")
    summary, forced = sim.summarize(method)
    draw = sim.roller.draw("sale" if capture else "authorize", ref, transport=True)

    def book() -> tuple[dict[str, Any], bool]:
        decision = SaleIn(ref, amount, currency, summary, forced or draw.decline, capture)
        return sim.ledger.sale(decision, sim.clock_us())

    return await _with_faults(request, draw, book)


async def capture(request: web.Request) -> web.StreamResponse:
    """Capture an authorization, whole or in part."""
    sim = request.app[SIM_KEY]
    ref = _reference(request.match_info["ref"])
    body = await _json(request) if request.can_read_body else {}
    amount = body.get("amount_minor")
    if amount is not None and (type(amount) is not int):
        raise BadRequest("amount_minor must be an integer")
    draw = sim.roller.draw("capture", ref, transport=True)
    return await _with_faults(
        request, draw, lambda: (sim.ledger.capture(ref, amount, sim.clock_us()), False)
    )


async def void(request: web.Request) -> web.StreamResponse:
    """Cancel an authorization or a same-day capture; tombstone an unknown reference."""
    sim = request.app[SIM_KEY]
    ref = _reference(request.match_info["ref"])
    draw = sim.roller.draw("void", ref, transport=False)
    await asyncio.sleep(draw.latency_s)
    return web.json_response(sim.ledger.void(ref, sim.clock_us()))


async def refund(request: web.Request) -> web.StreamResponse:
    """Refund part or all of a capture, idempotent on refund_reference."""
    sim = request.app[SIM_KEY]
    ref = _reference(request.match_info["ref"])
    body = await _json(request)
    refund_ref = _reference(_field(body, "refund_reference", str))
    amount = _field(body, "amount_minor", int)
    currency = _field(body, "currency", str)
    draw = sim.roller.draw("refund", refund_ref, transport=True)

    def book() -> tuple[dict[str, Any], bool]:
        reply = sim.ledger.refund(ref, refund_ref, amount, currency, sim.clock_us())
        return reply, reply["replayed"]

    return await _with_faults(request, draw, book)


async def lookup(request: web.Request) -> web.Response:
    """Status of a payment by merchant reference."""
    sim = request.app[SIM_KEY]
    ref = _reference(request.match_info["ref"])
    draw = sim.roller.draw("lookup", ref, transport=False)
    await asyncio.sleep(draw.latency_s)
    payment = sim.ledger.get(ref)
    if payment is None:
        return _error(404, "NOT_FOUND", "no payment with this merchant reference")
    return web.json_response(payment)


async def settlement_report(request: web.Request) -> web.Response:
    """The business day's settlement CSV, optionally with injected discrepancies."""
    sim = request.app[SIM_KEY]
    day = request.query.get("business_day", "")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise BadRequest("business_day must be YYYY-MM-DD")
    try:
        counts = parse_inject(request.query.get("inject", ""))
        seed = int(request.query.get("inject_seed", "0"))
    except ValueError as err:
        raise BadRequest(str(err)) from None
    rows, injected = inject_discrepancies(sim.ledger.report_rows(day), counts, seed)
    return web.Response(
        text=to_csv(rows),
        content_type="text/csv",
        headers={
            "X-Quickpay-Injected": json.dumps([dataclasses.asdict(i) for i in injected]),
            "Content-Disposition": f'attachment; filename="{sim.name}-{day}.csv"',
        },
    )


async def get_faults(request: web.Request) -> web.Response:
    """The current fault model."""
    return web.json_response(request.app[SIM_KEY].roller.model.to_dict())


async def put_faults(request: web.Request) -> web.Response:
    """Replaces the fault model (tests and demos turn faults on and off with it)."""
    sim = request.app[SIM_KEY]
    try:
        model = FaultModel.from_dict(await _json(request))
    except (TypeError, ValueError) as err:
        raise BadRequest(str(err)) from None
    sim.roller = FaultRoller(model)
    log.info("%s: fault model replaced: %s", sim.name, model.to_dict())
    return web.json_response(model.to_dict())


async def _with_faults(
    request: web.Request, draw: Any, book: Callable[[], tuple[dict[str, Any], bool]]
) -> web.StreamResponse:
    """Applies the drawn latency and transport fault around booking the request."""
    sim = request.app[SIM_KEY]
    await asyncio.sleep(draw.latency_s)
    if draw.fault is Fault.SERVER_ERROR:
        log.info("%s: injected server error on %s", sim.name, request.path)
        return _error(503, "SERVER_ERROR", "injected server error; nothing was processed")
    if draw.fault is Fault.TIMEOUT:
        # Held past any client deadline, then processed late, as an overloaded
        # acquirer does: the caller must look it up before doing anything else.
        log.info("%s: injected timeout on %s", sim.name, request.path)
        await asyncio.sleep(sim.roller.model.hang_ms / 1000)
    payment, replayed = book()
    if draw.fault is Fault.LOST_RESPONSE and not replayed:
        log.info("%s: injected lost response on %s", sim.name, request.path)
        await asyncio.sleep(sim.roller.model.hang_ms / 1000)
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("response withheld by the fault model")
    return web.json_response({**payment, "replayed": replayed})


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    # bool is an int to Python but not an amount to us.
    if type(value) is not kind:
        raise BadRequest(f"{name} must be a {kind.__name__}")
    return value


def _reference(ref: str) -> str:
    if not ref or len(ref) > REFERENCE_CHARS_MAX or not ref.isprintable():
        raise BadRequest(f"references must be 1 to {REFERENCE_CHARS_MAX} printable characters")
    return ref


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _fingerprint_key(data_dir: Path) -> bytes:
    """The simulator's fingerprint secret, created on first use with mode 0600."""
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


async def serve(
    simulator: Simulator, host: str, port: int, on_ready: Callable[[int], None],
    stop: asyncio.Event,
) -> None:  # fmt: skip
    """Serves until ``stop`` is set; ``on_ready`` gets the bound port (port 0 picks one)."""
    # Handlers run on after the client hangs up (no handler cancellation): a request
    # held by the timeout fault is still processed late, as at a real acquirer. The
    # access log is off: request lines carry only references, but it halves throughput.
    # On SIGTERM, requests still held by a fault get this long before they are dropped,
    # as they would be if the acquirer went down.
    runner = web.AppRunner(
        create_app(simulator),
        access_log=None,
        handler_cancellation=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1])
    on_ready(bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
