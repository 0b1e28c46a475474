"""Starts the bundled gateway simulators as child processes on loopback, and stops them.

``quickpay serve`` with no --gateways file calls ``open_gateways(None, data_dir)``:
every gateway of the default file (or of a given file) that has no ``url`` is started
as ``quickpay gateway-sim`` on a free loopback port, awaited on its /health endpoint,
and logged; the returned config carries the URLs. The children keep their books in
DATA_DIR/gateways/NAME/ and their logs in DATA_DIR/gateways/NAME/sim.log.

A child exits when its stdin closes, so simulators never outlive a parent that was
killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from quickpay_engine.errors import ConfigError
from quickpay_engine.gateways.config import GatewaysConfig, load_config
from quickpay_engine.gateways.sim.faults import FaultModel

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
READY_POLL_S = 0.05
LOG_FILE = "sim.log"


def sim_data_dir(data_dir: Path, name: str) -> Path:
    """Where the simulator called ``name`` keeps its books and log under a data dir."""
    return data_dir / "gateways" / name


@dataclass
class SimulatorProcess:
    """One running simulator child."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    model: FaultModel
    data_dir: Path

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"


async def start_simulator(
    name: str, model: FaultModel, data_dir: Path, port: int = 0
) -> SimulatorProcess:
    """Starts ``quickpay gateway-sim`` and returns once its /health answers."""
    log_path = sim_data_dir(data_dir, name) / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quickpay_engine.cli", "gateway-sim",
            "--name", name, "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--faults-json", json.dumps(model.to_dict()), "--exit-on-stdin-eof",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
        if not line.startswith(b"listening on 127.0.0.1:"):
            raise ConfigError(f"gateway simulator {name} did not start; see {log_path}")
        child = SimulatorProcess(name, process, int(line.rsplit(b":", 1)[1]), model, data_dir)
        await _await_healthy(child.url, STARTUP_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return child


async def stop_simulator(child: SimulatorProcess, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM, then SIGKILL after the grace; returns the exit code."""
    process = child.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    code = await process.wait()
    if process.stdin is not None:
        process.stdin.close()
    return code


@dataclass
class BundledSimulators:
    """The running simulators and the config that points at them."""

    config: GatewaysConfig
    children: dict[str, SimulatorProcess] = field(default_factory=dict)

    async def stop(self) -> None:
        """Stops every child (they are independent, so in parallel)."""
        await asyncio.gather(*(stop_simulator(c) for c in self.children.values()))
        if self.children:
            log.info("stopped gateway simulators %s", ", ".join(self.children))
        self.children.clear()

    async def restart(self, name: str) -> SimulatorProcess:
        """Stops one simulator (if running) and starts it again on the same port."""
        old = self.children[name]
        await stop_simulator(old)
        self.children[name] = await start_simulator(name, old.model, old.data_dir, old.port)
        return self.children[name]


async def start_bundled_simulators(
    data_dir: Path, config: GatewaysConfig | None = None
) -> BundledSimulators:
    """Starts a simulator for every gateway of ``config`` (default: the bundled file)
    that has no URL; the result's config has every URL filled in."""
    config = config or load_config(None)
    bundled = BundledSimulators(config)
    wanted = [g for g in config.gateways if not g.url and g.simulator is not None]

    async def start(name: str, model: FaultModel) -> None:
        child = await start_simulator(name, model, data_dir)
        bundled.children[name] = child
        log.info(
            "started bundled gateway simulator %s at %s (books in %s)",
            name, child.url, sim_data_dir(data_dir, name),
        )  # fmt: skip

    try:
        # Each takes a second or so to import and bind: started side by side.
        async with asyncio.TaskGroup() as group:
            for g in wanted:
                assert g.simulator is not None
                group.create_task(start(g.name, g.simulator))
    except BaseExceptionGroup as failed:
        await bundled.stop()
        raise failed.exceptions[0] from None  # the first reason, as the CLI reports it
    except BaseException:
        await bundled.stop()
        raise
    bundled.config = config.with_urls({n: c.url for n, c in bundled.children.items()})
    return bundled


async def open_gateways(
    path: Path | None, data_dir: Path
) -> tuple[GatewaysConfig, Callable[[], Awaitable[None]]]:
    """The gateways config for ``--gateways`` (None: the bundled simulators, started
    here) and the coroutine function that stops whatever was started."""
    if path is None:
        log.info("no --gateways file: starting the bundled gateway simulators")
    bundled = await start_bundled_simulators(data_dir, load_config(path))
    return bundled.config, bundled.stop


@contextlib.asynccontextmanager
async def bundled_simulators(
    data_dir: Path, config: GatewaysConfig | None = None
) -> AsyncIterator[BundledSimulators]:
    """``start_bundled_simulators`` as an async context manager that stops them on exit."""
    bundled = await start_bundled_simulators(data_dir, config)
    try:
        yield bundled
    finally:
        await bundled.stop()


async def _await_healthy(url: str, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(
                    f"{url}/health", timeout=aiohttp.ClientTimeout(total=1)
                ) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(f"gateway simulator at {url} is not healthy")
            await asyncio.sleep(READY_POLL_S)
