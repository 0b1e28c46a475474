"""The HTTP adapter for one gateway: a keep-alive pool driven off the GIL.

Every call says how it ended in one of three ways, because the router's safety rests
on telling them apart:

- an answer (a JSON body, or a definite refusal ``GatewayRefused`` for a 4xx);
- ``GatewayUnreachable``: the connection was refused, so the request never left;
- ``GatewayAmbiguous``: it may have arrived (timeout, dropped connection, 5xx), so
  the payment's state is unknown until it is looked up.

The transport is the engine's ``HttpPool`` (reqwest on a tokio runtime, in Rust): the
requests a batch of payments makes in one turn of the event loop are started in one
call, and one thread per gateway waits (without the GIL) for answers as they come and
hands them to the event loop, so the event loop only builds bodies and reads answers,
and a slow request holds back no other. Before it, aiohttp's client took about a third
of the event loop's time per payment (benches/RESULTS.md, "Gateway transport").

A request whose caller gave up (a cancelled call) still runs to its end: it may have
been sent already, and the router never leaves a reference whose fate is unknown
without looking it up or voiding it there, which also refuses a late sale.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import urllib.parse
from typing import Any

from quickpay_engine._engine import SUBMIT_MAX, HttpPool
from quickpay_engine.gateways.config import GatewayConfig

# Connections beyond pool_max, so that lookups and voids resolving an unknown outcome
# never queue behind a full pool of sales (the router runs at most pool_max sales).
RESOLVE_CONNECTIONS = 8
# Idle keep-alive connections are closed after this long (the simulator keeps them 75 s).
KEEPALIVE_S = 30.0
# The receiving thread looks at least this often whether the client is closing.
RECEIVE_WAIT_S = 0.1
# How a request ended, as HttpPool.send_many reports it.
_ANSWERED, _UNREACHABLE = 0, 1
# The settlement report names the discrepancies it injected in this header.
INJECTED_HEADER = "X-Quickpay-Injected"

_Request = tuple[str, str, bytes | None, float, str | None]
_Answer = tuple[int, int, bytes, str | None, str]

log = logging.getLogger(__name__)


class GatewayUnreachable(Exception):
    """The request never reached the gateway (connection refused or reset on connect)."""


class GatewayAmbiguous(Exception):
    """The request may have been processed: timed out, connection dropped, or a 5xx."""


class GatewayRefused(Exception):
    """The gateway answered with a definite refusal (4xx); ``code`` is its stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class GatewayClient:
    """Calls one gateway's acquirer API; ``start`` opens the pool, ``close`` drains it."""

    def __init__(self, config: GatewayConfig) -> None:
        if not config.url:
            raise ValueError(f"gateway {config.name!r} has no url (simulator not started?)")
        self.config = config
        self._pool: HttpPool | None = None
        self._ids = itertools.count()
        # Requests made in this turn of the event loop, started together at its end.
        self._queued: list[tuple[int, _Request]] = []
        # Every request started and not yet answered, by id: bounded by the router's
        # slots and the transport's timeouts (each ends by its own).
        self._waiting: dict[int, asyncio.Future[_Answer]] = {}
        self._receiver: threading.Thread | None = None
        self._closing = threading.Event()
        self._idle = asyncio.Event()  # set while nothing is waiting for an answer
        self._idle.set()

    async def start(self) -> None:
        """Opens the connection pool and starts the thread that receives answers."""
        self._pool = HttpPool(
            self.config.url,
            connections_max=self.config.pool_max + RESOLVE_CONNECTIONS,
            keepalive_s=KEEPALIVE_S,
        )
        self._closing.clear()
        self._receiver = threading.Thread(
            target=self._receive,
            args=(self._pool, asyncio.get_running_loop()),
            name=f"gateway-{self.config.name}",
            daemon=True,
        )
        self._receiver.start()

    async def close(self) -> None:
        """Waits for the requests under way (each ends by its timeout), then stops
        receiving and closes every pooled connection."""
        await self._idle.wait()
        self._closing.set()
        if self._receiver is not None:
            await asyncio.to_thread(self._receiver.join)
        self._pool = self._receiver = None

    async def sale(
        self, reference: str, amount_minor: int, currency: str, method: dict[str, object],
        timeout_s: float, *, capture: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Authorize and capture (or authorize only, with ``capture=False``)."""
        body = {
            "merchant_reference": reference,
            "amount_minor": amount_minor,
            "currency": currency,
            "method": method,
        }
        path = "/v1/payments/sale" if capture else "/v1/payments/authorize"
        return await self._call("POST", path, body, timeout_s)

    async def capture(
        self, reference: str, amount_minor: int | None, timeout_s: float
    ) -> dict[str, Any]:
        """Captures an authorization (all of it when ``amount_minor`` is None)."""
        body = {} if amount_minor is None else {"amount_minor": amount_minor}
        return await self._call(
            "POST", f"/v1/payments/{_quote(reference)}/capture", body, timeout_s
        )

    async def lookup(self, reference: str, timeout_s: float) -> dict[str, Any] | None:
        """The payment with this merchant reference, or None if the gateway never saw it."""
        try:
            return await self._call("GET", f"/v1/payments/{_quote(reference)}", None, timeout_s)
        except GatewayRefused as err:
            if err.status == 404:
                return None
            raise

    async def void(self, reference: str, timeout_s: float) -> dict[str, Any]:
        """Cancels the payment; an unknown reference is tombstoned so it never lands."""
        return await self._call("POST", f"/v1/payments/{_quote(reference)}/void", {}, timeout_s)

    async def refund(
        self, reference: str, refund_reference: str, amount_minor: int, currency: str,
        timeout_s: float,
    ) -> dict[str, Any]:  # fmt: skip
        """Refunds part or all of a capture; idempotent on ``refund_reference``."""
        body = {
            "refund_reference": refund_reference,
            "amount_minor": amount_minor,
            "currency": currency,
        }
        return await self._call(
            "POST", f"/v1/payments/{_quote(reference)}/refunds", body, timeout_s
        )

    async def settlement_report(
        self, business_day: str, timeout_s: float, inject: str = "", inject_seed: int = 0
    ) -> tuple[str, list[dict[str, str]]]:
        """The day's settlement CSV and the discrepancies injected into it (if asked)."""
        query = urllib.parse.urlencode(
            {"business_day": business_day, "inject": inject, "inject_seed": str(inject_seed)}
        )
        path = f"/v1/reports/settlement?{query}"
        outcome, status, body, injected, error = await self._send(
            ("GET", path, None, timeout_s, INJECTED_HEADER)
        )
        if outcome != _ANSWERED:
            raise GatewayAmbiguous(f"{self.config.name}: {error}")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise GatewayAmbiguous(f"{self.config.name}: report is not UTF-8") from None
        if status != 200:
            raise _refusal(status, text)
        return text, json.loads(injected or "[]")

    async def health(self, timeout_s: float) -> bool:
        """Whether the gateway answers its health endpoint."""
        try:
            await self._call("GET", "/health", None, timeout_s)
        except (GatewayUnreachable, GatewayAmbiguous, GatewayRefused):
            return False
        return True

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body).encode()
        outcome, status, text, _, error = await self._send((method, path, payload, timeout_s, None))
        name = self.config.name
        if outcome == _UNREACHABLE:
            raise GatewayUnreachable(f"{name}: {error}")
        if outcome != _ANSWERED:
            # Timeouts and dropped connections leave the request's fate unknown. Only
            # what went wrong is kept: a message could quote the request.
            raise GatewayAmbiguous(f"{name}: {error}")
        if 400 <= status < 500:
            raise _refusal(status, text.decode(errors="replace"))
        if not 200 <= status < 300:
            # A 5xx, or a redirect this client does not follow: it may have been done.
            raise GatewayAmbiguous(f"{name}: HTTP {status}")
        try:
            return json.loads(text, parse_float=_no_fractions)
        except ValueError as err:  # not JSON, not UTF-8, or a fraction: unreadable
            raise GatewayAmbiguous(f"{name}: {type(err).__name__}") from None

    def _send(self, request: _Request) -> asyncio.Future[_Answer]:
        """Queues one request for the end of this turn of the event loop; its answer."""
        if self._pool is None:
            raise RuntimeError(f"gateway client {self.config.name!r} is not started")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[_Answer] = loop.create_future()
        request_id = next(self._ids)
        self._waiting[request_id] = answer
        self._idle.clear()
        self._queued.append((request_id, request))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return answer

    def _flush(self) -> None:
        """Starts every queued request, in one transport call per SUBMIT_MAX."""
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), SUBMIT_MAX):
            chunk = queued[start : start + SUBMIT_MAX]
            try:
                assert self._pool is not None, "closed with requests queued"
                self._pool.submit([(i, *request) for i, request in chunk])
            except Exception as err:  # every caller must hear of it
                # Refused before any of them started; nothing was sent.
                log.error("gateway %s: requests not started: %s", self.config.name, err)
                self._deliver(
                    [(i, _UNREACHABLE, 0, b"", None, type(err).__name__) for i, _ in chunk]
                )

    def _receive(self, pool: HttpPool, loop: asyncio.AbstractEventLoop) -> None:
        """The receiving thread: hands answers to the event loop as they come."""
        while not self._closing.is_set():
            answers = pool.answers(RECEIVE_WAIT_S)
            if answers:
                try:
                    loop.call_soon_threadsafe(self._deliver, answers)
                except RuntimeError:  # the loop is closed: nobody is waiting
                    return

    def _deliver(self, answers: list[tuple[int, int, int, bytes, str | None, str]]) -> None:
        """Gives each caller its answer (a caller that gave up has cancelled its future)."""
        for request_id, *answer in answers:
            future = self._waiting.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(tuple(answer))  # type: ignore[arg-type]
        if not self._waiting:
            self._idle.set()


def _no_fractions(text: str) -> None:
    """Every number a gateway sends is an integer (amounts are minor units): a fraction
    makes the answer unreadable (its fate unknown), never a float amount."""
    raise ValueError(f"a gateway answer holds the non-integer number {text}")


def _quote(reference: str) -> str:
    """A reference as one URL path segment, whatever characters it holds."""
    return urllib.parse.quote(reference, safe="")


def _refusal(status: int, text: str) -> GatewayRefused:
    try:
        error = json.loads(text)["error"]
        return GatewayRefused(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return GatewayRefused(status, f"HTTP_{status}", "no error body")
