"""The HTTP adapter for one gateway: a keep-alive pool driven off the GIL.

Every call says how it ended in one of three ways, because the router's safety rests
on telling them apart:

- an answer (a JSON body, or a definite refusal ``GatewayRefused`` for a 4xx);
- ``GatewayUnreachable``: the connection was refused, so the request never left;
- ``GatewayAmbiguous``: it may have arrived (timeout, dropped connection, 5xx), so
  the payment's state is unknown until it is looked up.

The transport is the engine's ``HttpPool`` (hyper on a tokio runtime, in Rust): the
requests made in one turn of the event loop go in one ``send_many`` call on a sender
thread, which releases the GIL while they run, so the event loop only builds bodies and
reads answers. Before it, aiohttp's client took about a third of the event loop's time
per payment (benches/RESULTS.md, "Gateway transport").

The router's sales go further: ``sales`` hands rows of a batch's ``Sales`` (the core's,
holding the requests' own strings) to the pool's ``sale_many_into``, which builds each
body, sends them and reads the answers in the core, and hands back columns through the
event loop's completion queue (no thread of ours waits, no Python object or list per
sale); a single ``queue_sale`` is queued for the end of the turn and goes out the same
way. The pool holds the gateway's sale slots: at most ``pool_max`` of those sales in
flight, whichever way they came. (``sale`` is the plain JSON call, for tools and
tests.)
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
from typing import Any, NamedTuple

from quickpay_engine._engine import SEND_MANY_MAX, BatchTooLarge, HttpPool, HttpSetupError, Sales
from quickpay_engine.completions import completions
from quickpay_engine.gateways.config import GatewayConfig
from quickpay_engine.gateways.types import METHOD_BY_NAME
from quickpay_engine.threads import name_os_thread

# Connections beyond pool_max, so that lookups and voids resolving an unknown outcome
# never queue behind a full pool of sales (the router runs at most pool_max sales).
RESOLVE_CONNECTIONS = 8
# Idle keep-alive connections are closed after this long (the simulator keeps them 75 s).
KEEPALIVE_S = 30.0
# Sender threads per gateway: each carries one turn's lookups, voids and other plain
# requests until they have all ended (each by its timeout at the latest); further turns
# wait for a free thread, their requests not yet started. Sales need none (``sales``).
SENDERS_MAX = 32
# How a request ended, as HttpPool.send_many reports it.
_ANSWERED, _UNREACHABLE, _AMBIGUOUS = 0, 1, 2
# How a sale ended, as HttpPool.sale_many_into reports it: a payment in the answer, never
# sent (error "connect", "busy" or "late"), fate unknown, refused by a 4xx.
PAID, NOT_SENT, UNKNOWN, REFUSED = 0, 1, 2, 3
SALE_PATH = "/v1/payments/sale"
AUTHORIZE_PATH = "/v1/payments/authorize"
# The settlement report names the discrepancies it injected in this header.
INJECTED_HEADER = "X-Quickpay-Injected"

_Request = tuple[str, str, bytes | None, float, str | None]
_Answer = tuple[int, int, bytes, str | None, str]

log = logging.getLogger(__name__)


class GatewayUnreachable(Exception):
    """The request never reached the gateway (connection refused or reset on connect)."""


class GatewayBusy(GatewayUnreachable):
    """A sale that never left: no free sale slot before its timeout (``reason`` "busy")
    or too little time left to start it ("late"). Not the gateway's fault."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GatewayAmbiguous(Exception):
    """The request may have been processed: timed out, connection dropped, or a 5xx."""


class GatewayRefused(Exception):
    """The gateway answered with a definite refusal (4xx); ``code`` is its stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class SaleAnswers(NamedTuple):
    """How each sale of a ``sales`` call ended (PAID, NOT_SENT, UNKNOWN, REFUSED), and for
    PAID the payment's fields; ``errors`` is what went wrong (for REFUSED the gateway's
    code, ``messages`` its text)."""

    outcomes: bytes  # one byte per sale
    statuses: list[int]
    states: list[str]
    gateway_references: list[str]
    decline_reasons: list[str]
    captured_minor: list[int]
    refunded_minor: list[int]
    currencies: list[str]
    errors: list[str]
    messages: list[str]


class _SaleQueue:
    """A turn's single sales on one path, as the core's ``Sales`` columns, each with its
    timeout; their deadlines are on the event loop's clock."""

    __slots__ = ("columns", "timeouts_s", "waiting")

    def __init__(self) -> None:
        self.columns: tuple[list[Any], ...] = tuple([] for _ in range(11))
        self.timeouts_s: list[float] = []
        self.waiting: list[asyncio.Future[SaleAnswers]] = []

    def add(
        self, reference: str, amount_minor: int, currency: str, method: dict[str, Any],
        timeout_s: float, deadline: float,
    ) -> int:  # fmt: skip
        """Appends one sale, its instrument given as its wire dict (``Instrument.wire()``);
        its row."""
        row = (
            reference, amount_minor, currency, METHOD_BY_NAME.get(str(method["kind"]), 0),
            str(method.get("pan", "")), int(method.get("expiry_month", 0)),
            int(method.get("expiry_year", 0)), str(method.get("provider", "")),
            str(method.get("wallet_id", "")), str(method.get("iban", "")), deadline,
        )  # fmt: skip
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)
        self.timeouts_s.append(timeout_s)
        return len(self.timeouts_s) - 1


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
        self._sending: set[asyncio.Future[Any]] = set()
        # Single sales made in this turn, by path, sent together at its end.
        self._queued_sales: dict[str, _SaleQueue] = {}

    async def start(self) -> None:
        """Opens the connection pool."""
        self._pool = HttpPool(
            self.config.url,
            connections_max=self.config.pool_max + RESOLVE_CONNECTIONS,
            keepalive_s=KEEPALIVE_S,
            sales_max=self.config.pool_max,
        )
        self._senders = concurrent.futures.ThreadPoolExecutor(
            SENDERS_MAX,
            thread_name_prefix=f"gateway-{self.config.name}",
            initializer=name_os_thread,
        )

    async def close(self) -> None:
        """Waits for the requests under way (each ends by its timeout), then closes
        every pooled connection."""
        while self._queued or self._queued_sales or self._sending:
            await asyncio.gather(*self._sending, asyncio.sleep(0), return_exceptions=True)
        if self._senders is not None:
            self._senders.shutdown(wait=False)
        self._pool = self._senders = None

    async def sale(
        self, reference: str, amount_minor: int, currency: str, method: dict[str, object],
        timeout_s: float, *, capture: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Authorize and capture (or authorize only, with ``capture=False``), as a plain
        JSON call: the gateway's whole answer, whatever the body holds. It takes no
        sale slot; the router's sales go through ``sales`` and ``queue_sale``."""
        body = {
            "merchant_reference": reference,
            "amount_minor": amount_minor,
            "currency": currency,
            "method": method,
        }
        path = SALE_PATH if capture else AUTHORIZE_PATH
        return await self._call("POST", path, body, timeout_s)

    async def queue_sale(
        self, reference: str, amount_minor: int, currency: str, method: dict[str, object],
        timeout_s: float, *, capture: bool = True, end_s: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One sale through the core, holding one of the gateway's sale slots: queued for
        the end of this turn and sent with the turn's other single sales in one
        ``sales`` call. It waits for a slot at most ``min(timeout_s, end_s)``
        (``GatewayBusy`` otherwise) and runs at most ``timeout_s`` and no later than
        ``end_s`` from now. The payment's fields the router reads, or the exception
        ``_call`` would raise (an answer that is not a payment is ambiguous)."""
        if self._pool is None:
            raise RuntimeError(f"gateway client {self.config.name!r} is not started")
        path = SALE_PATH if capture else AUTHORIZE_PATH
        loop = asyncio.get_running_loop()
        queue = self._queued_sales.get(path)
        if queue is None:
            queue = self._queued_sales[path] = _SaleQueue()
            loop.call_soon(self._flush_sales, path)
        end = timeout_s if end_s is None else end_s
        row = queue.add(reference, amount_minor, currency, method, timeout_s, loop.time() + end)
        answer: asyncio.Future[SaleAnswers] = loop.create_future()
        queue.waiting.append(answer)
        return self.payment_of(await answer, row)

    def payment_of(self, answers: SaleAnswers, i: int) -> dict[str, Any]:
        """Row ``i``'s payment, or the exception ``_call`` would raise for it."""
        name = self.config.name
        outcome = answers.outcomes[i]
        if outcome == PAID:
            return {
                "state": answers.states[i],
                "gateway_reference": answers.gateway_references[i],
                "decline_reason": answers.decline_reasons[i],
                "captured_minor": answers.captured_minor[i],
                "refunded_minor": answers.refunded_minor[i],
                "currency": answers.currencies[i],
            }
        error = answers.errors[i]
        if outcome == NOT_SENT:
            if error in ("busy", "late"):
                raise GatewayBusy(f"{name}: {error}", error)
            raise GatewayUnreachable(f"{name}: {error}")
        if outcome == REFUSED:
            raise GatewayRefused(answers.statuses[i], error, answers.messages[i])
        raise GatewayAmbiguous(f"{name}: {error}")

    def sales(
        self, sales: Sales, rows: list[int], timeouts_s: list[float], now: float, keep_s: float,
        *, capture: bool = True,
    ) -> asyncio.Future[SaleAnswers]:  # fmt: skip
        """Sends ``rows`` of a batch's sales in one core call (bodies built from the
        requests' strings, answers read in Rust, no thread of ours waiting); the answers'
        columns, in the order of ``rows``, once every sale has ended. Each runs at most
        its timeout and ends early enough to leave min(``keep_s``, half its budget at
        ``now``) of its deadline. A call the transport refused before sending anything
        answers NOT_SENT for each; one that failed otherwise answers UNKNOWN for each."""
        if self._pool is None or self._senders is None:
            raise RuntimeError(f"gateway client {self.config.name!r} is not started")
        loop = asyncio.get_running_loop()
        path = SALE_PATH if capture else AUTHORIZE_PATH
        n = len(rows)
        # The sales run on the core's HTTP runtime; no thread waits for them, and their
        # columns come back through the loop's completion queue.
        queue, sent = completions()
        try:
            self._pool.sale_many_into(queue, sent, path, sales, rows, timeouts_s, now, keep_s)
        except Exception as err:  # raised before any sale was started: none was sent
            log.error("gateway %s: sales not sent: %r", self.config.name, err)
            sent.set_result(_all_sales(n, NOT_SENT, type(err).__name__))
        answers: asyncio.Future[SaleAnswers] = loop.create_future()
        self._sending.add(sent)
        sent.add_done_callback(self._sending.discard)
        sent.add_done_callback(lambda done: _deliver_sales(answers, n, done))
        return answers

    def _flush_sales(self, path: str) -> None:
        """Sends the turn's single sales on ``path`` in one ``sales`` call."""
        queued = self._queued_sales.pop(path)
        n = len(queued.timeouts_s)
        try:
            sales = Sales(*queued.columns)
        except Exception as err:  # a row the core cannot take: none was sent
            log.error("gateway %s: sales not sent: %r", self.config.name, err)
            _answer_sales(queued.waiting, _all_sales(n, NOT_SENT, type(err).__name__))
            return
        try:
            answers = self.sales(
                sales, list(range(n)), queued.timeouts_s, asyncio.get_running_loop().time(),
                0.0, capture=path == SALE_PATH,
            )  # fmt: skip
        except Exception as err:  # closed meanwhile: none was sent, every caller hears
            log.error("gateway %s: sales not sent: %s", self.config.name, err)
            _answer_sales(queued.waiting, _all_sales(n, NOT_SENT, "closed"))
            return

        answers.add_done_callback(lambda done: _answer_sales(queued.waiting, done.result()))

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


def _answer_sales(waiting: list[asyncio.Future[SaleAnswers]], answers: SaleAnswers) -> None:
    """Hands a turn's sales' answers to each single sale still waiting (a caller that
    gave up has cancelled its future)."""
    for answer in waiting:
        if not answer.done():
            answer.set_result(answers)


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


def _deliver_sales(answers: asyncio.Future[SaleAnswers], n: int, sent: asyncio.Future[Any]) -> None:
    """The core's columns as ``SaleAnswers``; a transport that failed leaves every fate
    unknown, except a setting it refused before sending anything."""
    if answers.done():
        return
    failed = asyncio.CancelledError() if sent.cancelled() else sent.exception()
    if failed is None:
        answers.set_result(SaleAnswers(*sent.result()))
        return
    log.error("gateway sales failed: %r", failed)
    refused = isinstance(failed, HttpSetupError | BatchTooLarge)
    answers.set_result(_all_sales(n, NOT_SENT if refused else UNKNOWN, type(failed).__name__))


def _all_sales(n: int, outcome: int, error: str) -> SaleAnswers:
    return SaleAnswers(
        bytes([outcome]) * n, [0] * n, [""] * n, [""] * n, [""] * n, [0] * n, [0] * n, [""] * n,
        [error] * n, [""] * n,
    )  # fmt: skip


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
