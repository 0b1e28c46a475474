"""Real gateway simulator processes for the suites, started without an event loop.

``SimulatorSet`` starts ``quickpay gateway-sim`` children on free loopback ports (the
same command ``quickpay serve`` would start) and writes a --gateways file naming them,
so a server under test talks HTTP to real processes. The children exit when their stdin
closes, so none outlives the test run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

# No latency, no declines, no transport faults: tests that want faults set them.
QUIET = {"seed": 1}

# The three gateways of the bundled default file, in the same roles.
ROLES = {
    "acq-a": ["card", "bank_account"],
    "acq-b": ["card"],
    "wallet-x": ["wallet", "carrier_balance"],
}
CURRENCIES = ["EUR", "GBP", "KES", "NGN", "INR", "USD"]


@dataclass
class SimulatorSet:
    """Running simulators and the --gateways file that points at them."""

    data_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def gateways_file(self) -> Path:
        return self.data_dir / "gateways.toml"

    def start(self, roles: dict[str, list[str]] = ROLES, faults: dict = QUIET) -> SimulatorSet:
        for name in roles:
            self.urls[name] = self._spawn(name, faults)
        lines = ["[defaults]", "timeout_ms = 2000", "lookup_timeout_ms = 1000", ""]
        for name, methods in roles.items():
            lines += [
                "[[gateway]]",
                f'name = "{name}"',
                f'url = "{self.urls[name]}"',
                f"methods = {json.dumps(methods)}",
                f"currencies = {json.dumps(CURRENCIES)}",
                "",
            ]
        self.gateways_file.write_text("\n".join(lines))
        return self

    def _spawn(self, name: str, faults: dict, listen: str = "127.0.0.1:0") -> str:
        with (self.data_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "quickpay_engine.cli", "gateway-sim", "--name", name,
                 "--listen", listen, "--data-dir", str(self.data_dir / "sims"),
                 "--faults-json", json.dumps(faults), "--exit-on-stdin-eof"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("listening on "):
            process.kill()
            raise RuntimeError(f"simulator {name} did not start: {line!r}")
        self.processes[name] = process
        return "http://" + line.split()[-1]

    def kill(self, name: str) -> None:
        """Ends a simulator at once (SIGKILL), as a crashed gateway host would."""
        process = self.processes.pop(name)
        process.kill()
        _reap(process)

    def restart(self, name: str, faults: dict = QUIET) -> None:
        """Starts a stopped simulator again at its old address, with its books."""
        assert name not in self.processes, f"{name} is still running"
        self.urls[name] = self._spawn(name, faults, self.urls[name].removeprefix("http://"))

    def set_faults(self, name: str, faults: dict) -> None:
        """Changes a running simulator's fault model (its PUT /sim/faults)."""
        request = urllib.request.Request(
            f"{self.urls[name]}/sim/faults", json.dumps(faults).encode(), method="PUT",
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def payment(self, name: str, payment_id: str) -> dict | None:
        """The simulator's record of a payment (its status lookup), or None."""
        try:
            with urllib.request.urlopen(f"{self.urls[name]}/v1/payments/{payment_id}") as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    def stop(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.processes):
            process = self.processes.pop(n)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            _reap(process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Waits for an ended simulator and closes its pipes."""
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


# --- business days near midnight ------------------------------------------------------
# A simulator dates each capture by its UTC business day, and its settlement report is
# one day's. A test that reads "today's" report after its sales fails when they were
# booked before midnight and read after (a CI run did so at 00:00). So a test reads
# every day of its recent past (``recent_business_days``), or starts its sales with
# enough of the day left to finish them within it (``day_clear_of_midnight``).

# Longer than any suite here takes from a sale to reading its report.
LOOKBACK_S = 120


def recent_business_days(lookback_s: float = LOOKBACK_S) -> list[str]:
    """The UTC business days from ``lookback_s`` ago to now, oldest first: today, and
    yesterday too when that span began before midnight."""
    today = datetime.now(UTC).date()
    day = (datetime.now(UTC) - timedelta(seconds=lookback_s)).date()
    days = []
    while day <= today:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


async def day_clear_of_midnight(need_s: float = LOOKBACK_S) -> str:
    """Today's UTC business day, once at least ``need_s`` of it is left: closer to
    midnight than that, it first waits for the next day (at most ``need_s``)."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
    left_s = (midnight - now).total_seconds()
    if left_s < need_s:
        await asyncio.sleep(left_s + 1)
    return datetime.now(UTC).date().isoformat()
