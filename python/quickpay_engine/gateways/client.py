"""The HTTP adapter for one gateway: a keep-alive pool driven off the GIL.

Every call says how it ended in one of three ways, because the router's safety rests
on telling them apart:

- an answer (a JSON body, or a definite refusal ``GatewayRefused`` for a 4xx);
- ``GatewayUnreachable``: the connection was refused, so the request never left;
- ``GatewayAmbiguous``: it may have arrived (timeout, dropped connection, 5xx), so
  the payment's state is unknown until it is looked up.

The transport is the engine's ``HttpPool`` (reqwest on a tokio runtime, in Rust): the
requests made in one turn of the event loop (a batch's sales, typically) go in one
``send_many`` call on a sender thread, which releases the GIL while they run, so the
event loop only builds bodies and reads answers. Before it, aiohttp's client took about
a third of the event loop's time per payment (benches/RESULTS.md, "Gateway transport").
The answers of one turn come back together, when its slowest request has ended (at
most its timeout): the pipeline waits for a whole batch's sales anyway, and requests of
different turns never wait for each other. Handing back each answer as it came was
measured too, and cost the event loop more wake-ups than it saved (RESULTS.md).

A request whose caller gave up (a cancelled call) still runs to its end: it may have
been sent already, and the router never leaves a reference whose fate is unknown
without looking it up or voiding it there, which also refuses a late sale.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import urllib.parse
from typing import Any

from quickpay_engine._engine import SEND_MANY_MAX, BatchTooLarge, HttpPool, HttpSetupError
from quickpay_engine.gateways.config import GatewayConfig

# Connections beyond pool_max, so that lookups and voids resolving an unknown outcome
# never queue behind a full pool of sales (the router runs at most pool_max sales).
RESOLVE_CONNECTIONS = 8
# Idle keep-alive connections are closed after this long (the simulator keeps them 75 s).
KEEPALIVE_S = 30.0
# Sender threads per gateway: each carries one turn's requests until they have all
# ended (each by its timeout at the latest). The pipeline has at most 8 batches in
# flight; further turns wait for a free thread, their requests not yet started.
SENDERS_MAX = 32
# How a request ended, as HttpPool.send_many reports it.
_ANSWERED, _UNREACHABLE, _AMBIGUOUS = 0, 1, 2
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
        self._senders: concurrent.futures.ThreadPoolExecutor | None = None
        # Requests made in this turn of the event loop, sent together at its end.
        self._queued: list[tuple[_Request, asyncio.Future[_Answer]]] = []
        self._sending: set[asyncio.Future[list[_Answer]]] = set()

    async def start(self) -> None:
        """Opens the connection pool."""
        self._pool = HttpPool(
            self.config.url,
            connections_max=self.config.pool_max + RESOLVE_CONNECTIONS,
            keepalive_s=KEEPALIVE_S,
        )
        self._senders = concurrent.futures.ThreadPoolExecutor(
            SENDERS_MAX, thread_name_prefix=f"gateway-{self.config.name}"
        )

    async def close(self) -> None:
        """Waits for the requests under way (each ends by its timeout), then closes
        every pooled connection."""
        while self._queued or self._sending:
            await asyncio.gather(*self._sending, asyncio.sleep(0), return_exceptions=True)
        if self._senders is not None:
            self._senders.shutdown(wait=False)
        self._pool = self._senders = None

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
        self._queued.append((request, answer))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return answer

    def _flush(self) -> None:
        """Hands the turn's requests to the transport, SEND_MANY_MAX per sender thread."""
        queued, self._queued = self._queued, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queued), SEND_MANY_MAX):
            chunk = queued[start : start + SEND_MANY_MAX]
            try:
                assert self._pool is not None and self._senders is not None, "closed"
                sent = loop.run_in_executor(
                    self._senders, self._pool.send_many, [request for request, _ in chunk]
                )
            except Exception as err:  # every caller must hear of it
                log.error("gateway %s: requests not sent: %s", self.config.name, err)
                _answer_all(chunk, _UNREACHABLE, type(err).__name__)  # none was sent
                continue
            self._sending.add(sent)
            sent.add_done_callback(self._sending.discard)
            sent.add_done_callback(lambda done, chunk=chunk: _deliver(chunk, done))


def _deliver(
    chunk: list[tuple[_Request, asyncio.Future[_Answer]]], sent: asyncio.Future[list[_Answer]]
) -> None:
    """Gives each caller its answer; a transport that failed leaves every fate unknown,
    except a setting it refused before sending anything."""
    failed = asyncio.CancelledError() if sent.cancelled() else sent.exception()
    if failed is None:
        answers = sent.result()
    else:
        log.error("gateway transport failed: %r", failed)
        refused = isinstance(failed, HttpSetupError | BatchTooLarge)
        _answer_all(chunk, _UNREACHABLE if refused else _AMBIGUOUS, type(failed).__name__)
        return
    for (_, answer), result in zip(chunk, answers, strict=True):
        if not answer.done():  # a caller that gave up has cancelled its future
            answer.set_result(result)


def _answer_all(
    chunk: list[tuple[_Request, asyncio.Future[_Answer]]], outcome: int, error: str
) -> None:
    for _, answer in chunk:
        if not answer.done():
            answer.set_result((outcome, 0, b"", None, error))


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
