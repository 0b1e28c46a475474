"""The operator's HTTP port (``--metrics-listen``): Prometheus metrics and the probes.

- ``GET /metrics``: the registry of ``metrics.Metrics``, in Prometheus' text format;
- ``GET /livez``: 200 as long as the event loop turns (it is answered on the loop, so a
  loop stuck in a blocking call answers nothing and the kubelet restarts the process);
- ``GET /readyz``: 200 once recovery has finished and the subscribers are loaded, 503
  before and again from the start of a drain: the same verdict as the gRPC health
  service's.

It is served by aiohttp on the engine's own event loop: a scrape reads the engine's
state where it lives, with no lock, and costs the loop a few milliseconds per scrape
(not per payment). A refresh task reads what needs a database (outbox lag, open
discrepancies) every ``REFRESH_S`` and checks the ledger's capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quickpay_engine.errors import ConfigError
from quickpay_engine.metrics import CapacityWarning, Metrics

log = logging.getLogger(__name__)

# The database-backed gauges are read, and the ledger's capacity checked, this often.
REFRESH_S = 5.0


@dataclass
class Readiness:
    """Whether the engine takes payments; the gRPC health service says the same."""

    ready: bool = False
    metrics: Metrics | None = None

    def set(self, ready: bool) -> None:
        self.ready = ready
        if self.metrics is not None:
            self.metrics.ready.set(1 if ready else 0)


@dataclass
class ProbeServer:
    """The running HTTP endpoint and its refresh task."""

    runner: web.AppRunner
    port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runner.cleanup()


async def start_probes(listen: str, metrics: Metrics, readiness: Readiness) -> ProbeServer:
    """Serves /metrics, /livez and /readyz on ``listen`` (HOST:PORT; port 0 picks one)."""

    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if readiness.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: starting, recovering or draining\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(f"--metrics-listen {listen}: {err.strerror or err}") from None
    bound = runner.addresses[0][1]
    log.info("metrics and probes on http://%s:%d/ (/metrics, /livez, /readyz)", host, bound)
    return ProbeServer(runner, bound)


async def refresh(
    metrics: Metrics | None,
    usage: Callable[[], Sequence[tuple[str, int, int]]],
    backlog: Callable[[], Awaitable[tuple[int | None, int]]],
    relaying: bool,
    every_s: float = REFRESH_S,
) -> None:
    """Every ``every_s``: the ledger's capacity checked (a warning at 80 % of a bound,
    metrics or not) and the database-backed gauges read. Runs until cancelled."""
    warning = CapacityWarning(_warn_capacity)
    while True:
        try:
            warning.check(usage())
            if metrics is not None:
                oldest_us, discrepancies = await backlog()
                metrics.discrepancies_open.set(discrepancies)
                # Without a broker nothing is ever published: there is no lag to report.
                lag_s = 0.0
                if relaying and oldest_us is not None:
                    lag_s = max(0.0, time.time() - oldest_us / 1e6)
                metrics.outbox_lag.set(lag_s)
        except Exception as err:  # a database restarting: the gauges wait for the next round
            log.warning("metrics refresh failed, trying again in %.0f s: %s", every_s, err)
        await asyncio.sleep(every_s)


def _warn_capacity(table: str, held: int, bound: int) -> None:
    log.warning(
        "ledger table %s holds %d of its %d entries (%.0f %%): raise the ledger capacity"
        " settings (or shorten the retention window) before it is full and payments are"
        " refused with RESOURCE_EXHAUSTED",
        table, held, bound, 100 * held / bound,
    )  # fmt: skip
