"""Two-phase commit across the billing, AR and provisioning databases, coordinated by
the engine's write-ahead log.

Per batch: every participant does its work and prepares it (``PREPARE TRANSACTION``);
the COMMIT decision goes into the engine's log (durable before the call returns); then
``COMMIT PREPARED`` in every participant, and the decision is forgotten. Presumed
abort: a batch whose decision is not in the log is rolled back wherever it is prepared,
so any failure before the decision (a participant down, a crash) leaves nothing behind.

Recovery, at start before serving and then periodically on the store's thread (so it
never races a batch), lists this instance's prepared transactions in every participant
and resolves each from the log. An orphan holds its row locks and stops vacuum, so it
must not outlive a sweep interval.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from quickpay_engine._engine import Ledger
from quickpay_engine.domain import Outcome, PaymentStatus
from quickpay_engine.errors import ConfigError, StoreError
from quickpay_engine.store.postgres import GID_PREFIX, PostgresStore
from quickpay_engine.store.rows import Decision
from quickpay_engine.store.sqlite import SettledState

log = logging.getLogger(__name__)

R = TypeVar("R")

# Decision values in the engine's log (Ledger.record_decisions).
COMMIT = 1
ABORT = 2
# The log's entry code for a decision recorded.
ENTRY_OK = 0

# How often the running server resolves orphaned prepared transactions.
SWEEP_INTERVAL_S = 30.0

# The instance id lives beside the decision log: a restarted engine must find its own
# prepared transactions, and only those (several engines may share a database server).
INSTANCE_FILE = "instance"

# The decision log's own directory, beside the instance file.
LOG_DIR = "log"

# Fault injection for the crash tests: when QUICKPAY_FAULT_2PC names a point, the
# process kills itself there with SIGKILL, as a power cut would.
FAULT_ENV = "QUICKPAY_FAULT_2PC"
FAULT_POINTS = ("after_prepare", "after_decision", "after_first_commit")
# With QUICKPAY_FAULT_2PC_SKIP=N the first N passes through the point live, so the chaos
# suite can let a restart's recovery commit and kill the engine under load instead.
FAULT_SKIP_ENV = "QUICKPAY_FAULT_2PC_SKIP"
_fault_passes: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one recovery pass did."""

    committed: list[str]
    rolled_back: list[str]
    forgotten: list[str]


def instance_id(directory: Path) -> str:
    """This engine's id for global transaction ids, created once (16 hex digits)."""
    path = directory / INSTANCE_FILE
    directory.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(8) + "\n")
    value = path.read_text().strip()
    if not value or not value.isalnum() or len(value) > 32:
        raise ConfigError(f"{path}: not an instance id ({value!r})")
    return value


class TwoPhaseCoordinator:
    """Commits batches across the store's participants, the decision in ``ledger``."""

    def __init__(
        self,
        store: PostgresStore,
        ledger: Ledger,
        instance: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._clock_ns = clock_ns
        self.prefix = f"{GID_PREFIX}{instance}:"
        # Batch ids: this start's clock in hex, then a counter, so ids never repeat
        # across restarts and stay far below 200 bytes ("qp:" + 16 + ":" + 16 + ":" + n).
        self._start = f"{clock_ns():x}"
        self._numbers = itertools.count(1)
        # Set when a decided batch could not be committed everywhere; cleared by recover.
        self._unresolved = False

    def require_enabled(self) -> None:
        """Refuses two-phase mode where a participant cannot prepare transactions."""
        off = [name for name, n in self._store.max_prepared_transactions().items() if n == 0]
        if off:
            raise ConfigError(
                f"two-phase commit needs prepared transactions, but max_prepared_transactions"
                f" is 0 on the server of the {', '.join(off)} database: set it above 0 (e.g."
                " ALTER SYSTEM SET max_prepared_transactions = 64) and restart PostgreSQL,"
                " or give billing, AR and provisioning one database"
            )

    def next_gid(self) -> str:
        return f"{self.prefix}{self._start}:{next(self._numbers)}"

    def commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """The store's ``commit_batch``, atomic across every participant."""
        if not decisions:
            return [], []
        return self._commit(lambda gid: self._store.prepare_batch(decisions, gid, now_us))

    def finish_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """The store's ``finish_refund``, atomic across every participant."""
        return self._commit(
            lambda gid: self._store.prepare_refund(refund_id, gateway_reference, gid, now_us)
        )

    def finish_adjustment(
        self, adjustment_id: str, now_us: int | None = None
    ) -> SettledState | None:
        """The store's ``finish_adjustment``, atomic across every participant."""
        return self._commit(lambda gid: self._store.prepare_adjustment(adjustment_id, gid, now_us))

    def _commit(self, prepare: Callable[[str], R]) -> R:
        """Prepare everywhere, log COMMIT, COMMIT PREPARED everywhere, forget."""
        if self._unresolved:
            # A batch decided but not committed everywhere still holds its locks (and the
            # next payment sequence numbers): resolve it first, or fail this batch too.
            self.recover()
        gid = self.next_gid()
        # A failure here rolls back whatever was prepared (the store does) and raises.
        result = prepare(gid)
        _fault("after_prepare")
        try:
            codes, _ = self._ledger.record_decisions(
                self._clock_ns(), [gid], np.array([COMMIT], np.uint8)
            )
        except BaseException:
            self._store.rollback_prepared(gid)
            raise
        if codes.tolist() != [ENTRY_OK]:
            self._store.rollback_prepared(gid)
            raise StoreError(f"two-phase commit {gid}: the log refused the decision {codes}")
        _fault("after_decision")
        # Committed: from here on the batch lands, whatever fails. A participant that
        # cannot be reached now is committed by the next sweep or the next start.
        try:
            for n, participant in enumerate(self._store.participants):
                self._store.commit_prepared(gid, [participant])
                if n == 0:
                    _fault("after_first_commit")
        except Exception as err:
            log.warning("two-phase commit %s: decided, left for the sweep: %s", gid, err)
            self._unresolved = True
            return result
        self._ledger.forget_decisions(self._clock_ns(), [gid])
        return result

    def recover(self) -> Resolution:
        """Resolves every prepared transaction of this instance from the log; then
        forgets the decisions that have nothing left to resolve."""
        decided = {gid: d for gid, d in self._ledger.decisions() if gid.startswith(self.prefix)}
        committed: list[str] = []
        rolled_back: list[str] = []
        for found in self._store.prepared():
            if not found.gid.startswith(self.prefix):
                continue  # another engine's: its own recovery resolves it
            name = f"{found.gid}:{found.participant}"
            if decided.get(found.gid) == COMMIT:
                self._store.commit_prepared(found.gid, [found.participant])
                committed.append(name)
            else:
                self._store.rollback_prepared(found.gid, [found.participant])
                rolled_back.append(name)
        # Every prepared transaction of a decided batch is committed now, so its decision
        # has done its work. Had a participant been unreachable, prepared() or the
        # commit above raised, and nothing is forgotten.
        forgotten = sorted(decided)
        if forgotten:
            self._ledger.forget_decisions(self._clock_ns(), forgotten)
        self._unresolved = False
        if committed or rolled_back:
            log.warning(
                "two-phase recovery: committed %d and rolled back %d prepared transactions (%s)",
                len(committed),
                len(rolled_back),
                ", ".join(committed + rolled_back),
            )
        return Resolution(committed, rolled_back, forgotten)


class TwoPhaseStore:
    """A PostgreSQL store over several databases whose batches commit through the
    coordinator; every other call goes to the store itself."""

    def __init__(self, store: PostgresStore, coordinator: TwoPhaseCoordinator, ledger: Ledger):
        self.store = store
        self.coordinator = coordinator
        self._ledger = ledger

    def commit_batch(
        self, decisions: Sequence[Decision], now_us: int | None = None
    ) -> tuple[list[Outcome], list[SettledState]]:
        """Commits a batch atomically across the billing, AR and provisioning databases."""
        return self.coordinator.commit_batch(decisions, now_us)

    def finish_refund(
        self, refund_id: str, gateway_reference: str, now_us: int | None = None
    ) -> tuple[PaymentStatus, int, SettledState | None]:
        """Records a refund atomically across the billing, AR and provisioning databases."""
        return self.coordinator.finish_refund(refund_id, gateway_reference, now_us)

    def finish_adjustment(
        self, adjustment_id: str, now_us: int | None = None
    ) -> SettledState | None:
        """Applies a balance adjustment atomically across the billing and AR databases."""
        return self.coordinator.finish_adjustment(adjustment_id, now_us)

    def sweep(self) -> Resolution:
        """Resolves orphaned prepared transactions (call on the store's thread)."""
        return self.coordinator.recover()

    def close(self) -> None:
        self.store.close()
        self._ledger.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def open_two_phase(store: PostgresStore, directory: Path) -> TwoPhaseStore:
    """Opens the decision log in ``directory``, checks that every participant can prepare
    transactions, and resolves what a previous run left prepared, before any batch."""
    try:
        ledger = Ledger.open(directory / LOG_DIR)
    except BaseException:
        store.close()
        raise
    try:
        coordinator = TwoPhaseCoordinator(store, ledger, instance_id(directory))
        coordinator.require_enabled()
        coordinator.recover()
    except BaseException:
        store.close()
        ledger.close()
        raise
    return TwoPhaseStore(store, coordinator, ledger)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        _fault_passes[point] = passes = _fault_passes.get(point, 0) + 1
        if passes > int(os.environ.get(FAULT_SKIP_ENV, "0")):
            os.kill(os.getpid(), signal.SIGKILL)
