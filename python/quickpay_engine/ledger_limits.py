"""The ledger's capacity: how many payments and transfers it holds, and for how long.

The ledger keeps one retention window of traffic in memory (finished payments and their
transfers age out after it); a batch that would cross a bound is refused whole, before
any gateway is called, and its callers get RESOURCE_EXHAUSTED. So the bounds and the
window decide the sustained rate the engine carries: ``payments_max / retention_s``
payments per second, averaged over the window.

The limits are kept with the data dir (``DATA_DIR/ledger/limits.json``): `serve` writes
what it was started with, and every command that opens the ledger later (`recover`,
`verify`, `audit verify`, `wal verify`) opens it with the same limits, since a replay
under smaller bounds would refuse what the live ledger took. A `serve` started without
the flags uses what the data dir keeps, else the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from quickpay_engine.errors import ConfigError

log = logging.getLogger(__name__)

LIMITS_FILE = "limits.json"
# The memory the defaults are sized for: the whole engine process in 4 GiB, of which
# LEDGER_BUDGET_BYTES for the ledger's tables (the rest: Python, gRPC buffers, batches,
# the subscriber table, SQLite's cache).
MEMORY_BUDGET_BYTES = 4 << 30
LEDGER_BUDGET_BYTES = 3 << 30
# Measured (benches/RESULTS.md, "Ledger memory per payment"): one settled payment (two
# transfers, the hold and its post, and its settlement state) holds about 580 bytes of
# the ledger's memory, and about 1,750 while a snapshot is written (the snapshot's image
# and its encoding are copies): the peak is what a memory limit must hold.
PAYMENT_BYTES_PEAK = 1_800
# A day: a retry of a key within it is a replay the ledger can prove on its own.
RETENTION_S_DEFAULT = 86_400
# Bounds of the settings themselves: at least one full batch; at most what 64 GiB holds.
PAYMENTS_MAX_MIN = 4_096
PAYMENTS_MAX_MAX = 1 << 27
RETENTION_S_MIN = 60
RETENTION_S_MAX = 90 * 86_400


# LEDGER_BUDGET_BYTES / PAYMENT_BYTES_PEAK, rounded down: 1.75 million payments, which
# over a day's window is about 20 payments/s sustained.
PAYMENTS_MAX_DEFAULT = LEDGER_BUDGET_BYTES // PAYMENT_BYTES_PEAK // 250_000 * 250_000


@dataclasses.dataclass(frozen=True)
class LedgerLimits:
    """The ledger's bounds and retention window."""

    payments_max: int = PAYMENTS_MAX_DEFAULT
    # Each payment is two transfers (hold, then post or void); a refund is one more.
    # Zero: 2.25 times payments_max.
    transfers_max: int = 0
    retention_s: int = RETENTION_S_DEFAULT

    def __post_init__(self) -> None:
        if not PAYMENTS_MAX_MIN <= self.payments_max <= PAYMENTS_MAX_MAX:
            raise ConfigError(
                f"--ledger-payments-max {self.payments_max}: expected {PAYMENTS_MAX_MIN}"
                f" to {PAYMENTS_MAX_MAX}"
            )
        if self.transfers_max == 0:
            object.__setattr__(self, "transfers_max", self.payments_max * 9 // 4)
        if not 2 * self.payments_max <= self.transfers_max <= 4 * PAYMENTS_MAX_MAX:
            raise ConfigError(
                f"--ledger-transfers-max {self.transfers_max}: expected at least twice"
                f" --ledger-payments-max ({2 * self.payments_max}): each payment is two"
            )
        if not RETENTION_S_MIN <= self.retention_s <= RETENTION_S_MAX:
            raise ConfigError(
                f"--ledger-retention-s {self.retention_s}: expected {RETENTION_S_MIN} to"
                f" {RETENTION_S_MAX}"
            )

    @property
    def payments_per_s(self) -> float:
        """The sustained rate these limits carry, averaged over the retention window."""
        return self.payments_max / self.retention_s

    def open_kwargs(self) -> dict[str, int]:
        """Keyword arguments of ``Ledger.open`` and ``wal_verify``."""
        return {
            "payments_max": self.payments_max,
            "transfers_max": self.transfers_max,
            "retention_s": self.retention_s,
        }


def stored(ledger_dir: Path) -> LedgerLimits | None:
    """The limits the data dir keeps, None when it keeps none (a ledger from before)."""
    path = ledger_dir / LIMITS_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the ledger's limits ({err})") from None
    known = {f.name for f in dataclasses.fields(LedgerLimits)}
    if not isinstance(data, dict) or set(data) - known:
        raise ConfigError(f"{path}: unexpected content; expected the keys {sorted(known)}")
    return LedgerLimits(**data)


# A ledger written before its limits were kept (no limits.json beside its log) ran with
# the core's built-in bounds: it is opened with those, never with smaller defaults.
LEGACY = LedgerLimits(payments_max=1 << 22, transfers_max=1 << 23, retention_s=86_400)


def _unkept(ledger_dir: Path) -> LedgerLimits:
    """The limits of a ledger dir that keeps none: the legacy bounds when it holds a log
    already, the defaults for a new one."""
    if ledger_dir.is_dir() and any(ledger_dir.iterdir()):
        return LEGACY
    return LedgerLimits()


def for_reading(ledger_dir: Path) -> LedgerLimits:
    """The limits an offline command opens the ledger with: the data dir's, else the
    ones it was written with."""
    return stored(ledger_dir) or _unkept(ledger_dir)


def open_ledger(ledger_dir: Path) -> Any:
    """``Ledger.open`` with the limits the data dir keeps (for every command but serve)."""
    from quickpay_engine._engine import Ledger

    return Ledger.open(ledger_dir, **for_reading(ledger_dir).open_kwargs())


def for_serving(
    ledger_dir: Path,
    payments_max: int | None = None,
    transfers_max: int | None = None,
    retention_s: int | None = None,
) -> LedgerLimits:
    """The limits `serve` opens the ledger with, kept in the data dir from then on: what
    the data dir keeps (else the defaults), with each limit given by a flag in its place
    (a new payments_max without a transfers_max brings the transfers along)."""
    kept = stored(ledger_dir)
    base = kept or _unkept(ledger_dir)
    limits = LedgerLimits(
        payments_max=payments_max or base.payments_max,
        transfers_max=transfers_max or (0 if payments_max else base.transfers_max),
        retention_s=retention_s or base.retention_s,
    )
    if limits != kept:
        ledger_dir.mkdir(parents=True, exist_ok=True)
        tmp = ledger_dir / (LIMITS_FILE + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(limits), indent=2) + "\n")
        os.replace(tmp, ledger_dir / LIMITS_FILE)
        if kept is not None:
            log.warning("ledger limits changed from %s to %s", kept, limits)
    log.info(
        "ledger holds %d payments (%d transfers) over %d s: %.0f payments/s sustained",
        limits.payments_max, limits.transfers_max, limits.retention_s, limits.payments_per_s,
    )  # fmt: skip
    return limits
