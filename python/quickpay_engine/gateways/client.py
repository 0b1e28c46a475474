"""The HTTP adapter for one gateway: an aiohttp session with a keep-alive pool.

Every call says how it ended in one of three ways, because the router's safety rests
on telling them apart:

- an answer (a JSON body, or a definite refusal ``GatewayRefused`` for a 4xx);
- ``GatewayUnreachable``: the connection was refused, so the request never left;
- ``GatewayAmbiguous``: it may have arrived (timeout, dropped connection, 5xx), so
  the payment's state is unknown until it is looked up.

aiohttp rather than httpx: one library serves both the simulator and this client, its
HTTP parser is compiled, and against the simulator with 32 concurrent callers over a
32-connection keep-alive pool, httpx's AsyncClient carried a fifth to a half of
aiohttp's sales per second (benches/gateway_clients.py; figures in benches/RESULTS.md).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import aiohttp

from quickpay_engine.gateways.config import GatewayConfig

# Connections beyond pool_max, so that lookups and voids resolving an unknown outcome
# never queue behind a full pool of sales (the router runs at most pool_max sales).
RESOLVE_CONNECTIONS = 8
# Idle keep-alive connections are closed after this long (the simulator keeps them 75 s).
KEEPALIVE_S = 30.0


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
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Opens the connection pool (needs a running event loop)."""
        connector = aiohttp.TCPConnector(
            limit=self.config.pool_max + RESOLVE_CONNECTIONS,
            keepalive_timeout=KEEPALIVE_S,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            base_url=self.config.url, connector=connector, json_serialize=json.dumps
        )

    async def close(self) -> None:
        """Closes every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        params = {"business_day": business_day, "inject": inject, "inject_seed": str(inject_seed)}
        session = self._require()
        try:
            async with session.get(
                "/v1/reports/settlement",
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if response.status != 200:
                    raise _refusal(response.status, await response.text())
                injected = json.loads(response.headers.get("X-Quickpay-Injected", "[]"))
                return await response.text(), injected
        except (aiohttp.ClientError, TimeoutError) as err:
            raise GatewayAmbiguous(f"{self.config.name}: {type(err).__name__}") from None

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
        session = self._require()
        name = self.config.name
        try:
            async with session.request(
                method, path, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                text = await response.text()
                if response.status >= 500:
                    raise GatewayAmbiguous(f"{name}: HTTP {response.status}")
                if response.status >= 400:
                    raise _refusal(response.status, text)
                return json.loads(text, parse_float=_no_fractions)
        except aiohttp.ClientConnectorError as err:
            # Raised only while connecting: nothing was sent.
            raise GatewayUnreachable(f"{name}: {err.strerror or type(err).__name__}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            # Timeouts, dropped connections and garbled bodies all leave the request's
            # fate unknown. Only the exception type is kept: the message could quote
            # the request.
            raise GatewayAmbiguous(f"{name}: {type(err).__name__}") from None

    def _require(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"gateway client {self.config.name!r} is not started")
        return self._session


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
