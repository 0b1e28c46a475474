"""Differential test: the Reconcile reply and the discrepancy rows as the core writes them
(engine/src/reconcile/reply.rs, store/sqlite.rs) against the Python encoder and store
method they replaced on the server's path (``convert.reconcile_message``,
``SqliteStore.record_discrepancies``).

The core's reply must be byte for byte Python protobuf's deterministic encoding of the
same message. Python's default encoding differs only in the order of the
``counts_by_category`` map's entries, which upb takes from a hash table seeded per
process (two processes encode one message differently): both decode to the same
message, which is checked too. Random reports (the matcher's differential generator,
every kind of discrepancy), random investigation states and odd values (negative and
extreme amounts, empty and non-ASCII text). 300 reports by default (QUICKPAY_FULL=1:
3,000).
"""

from __future__ import annotations

import io
import os
import random
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from quickpay_engine._engine import SettlementReport
from quickpay_engine.api.convert import reconcile_message, reconcile_report
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.domain import BilledCapture
from quickpay_engine.reconcile.matcher import Reconciliation, day_bounds_us, reconcile
from quickpay_engine.reconcile.report import ColumnMapping, read_rows
from quickpay_engine.settlement import reconciliation
from quickpay_engine.settlement.reconciliation import ReconcileRun
from quickpay_engine.store import SqliteStore
from test_reconcile_differential import ACQUIRER_X, DAY, generate

REPORTS = 3_000 if os.environ.get("QUICKPAY_FULL") else 300
STATUSES = ("OPEN", "INVESTIGATING", "RESOLVED")
TEXT = ["", "x", "acquirer called", "日本語 ñ", 'a,b\n"c"', "\u0000nul", "é" * 300]
I64 = (-(2**63), -1, 0, 1, 2**63 - 1)


def _states(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(rng.choice(STATUSES), rng.choice(TEXT)) for _ in range(n)]


def _compare(run: ReconcileRun) -> bytes:
    ours = reconcile_report(run)
    message = reconcile_message(run)
    assert ours == message.SerializeToString(deterministic=True)
    assert pb.ReconcileReport.FromString(ours) == message
    assert pb.ReconcileReport.FromString(message.SerializeToString()) == message
    return ours


@pytest.mark.parametrize("mapping", [ColumnMapping(), ACQUIRER_X], ids=["default", "acquirer-x"])
def test_the_core_encodes_the_reply_as_python_protobuf_does(mapping: ColumnMapping) -> None:
    rng = random.Random(20261206)
    kinds: set[str] = set()
    for _ in range(REPORTS):
        lines, billed = generate(rng, mapping)
        result = reconcile(rng.choice(["acq-a", "", "ñ-gw"]), DAY, read_rows(lines, mapping),
                           billed, rng.choice([0, 900]))  # fmt: skip
        result.held.set_states(0, _states(rng, len(result.held)))
        _compare(ReconcileRun(result))
        kinds.update(d.category for d in result.discrepancies)
    assert len(kinds) >= 6, kinds  # every kind the generator makes was encoded


def test_odd_values_encode_as_python_protobuf_does() -> None:
    """Extreme and negative amounts (a zero amount is still a Money), empty and
    non-ASCII references, a report without rows, an outcome with nothing to report."""
    rng = random.Random(5)
    start_us, end_us = day_bounds_us(DAY)
    for _ in range(REPORTS // 3):
        rows = [
            (k + 2, rng.choice(TEXT) + str(k), rng.choice(TEXT), rng.choice(I64),
             rng.choice(["EUR", "", "ÄÖÜ"]), rng.choice(["CAPTURE", "REFUND"]),
             rng.choice(["SETTLED", "VOIDED"]), start_us + rng.randrange(10**10))
            for k in range(rng.randint(0, 12))
        ]  # fmt: skip
        billed = [
            BilledCapture(f"pay-{rng.choice(TEXT)}-{k}", f"ref-{k}", rng.choice(I64),
                          rng.choice(["EUR", ""]), start_us + rng.randrange(10**10),
                          rng.random() < 0.5)
            for k in range(rng.randint(0, 6))
        ]  # fmt: skip
        held = SettlementReport.from_rows(rows).reconcile(
            "acq-a", DAY.isoformat(), start_us, end_us, 900, billed
        )
        held.set_states(0, _states(rng, len(held)))
        result = Reconciliation(rng.choice(["acq-a", ""]), DAY, held)
        _compare(ReconcileRun(result))
    empty = SettlementReport.from_rows([]).reconcile("g", "1970-01-01", 0, 1, 0, [])
    assert reconcile_report(ReconcileRun(Reconciliation("", date(1970, 1, 1), empty)))


def test_a_reply_needs_every_state() -> None:
    start_us, end_us = day_bounds_us(DAY)
    rows = [(2, "gw-1", "pay-1", 100, "EUR", "CAPTURE", "SETTLED", start_us + 1)]
    held = SettlementReport.from_rows(rows).reconcile(
        "acq-a", DAY.isoformat(), start_us, end_us, 900, []
    )
    with pytest.raises(ValueError, match="has no state"):
        held.encode_report("acq-a", DAY.isoformat())
    with pytest.raises(ValueError, match="past the end"):
        held.set_states(0, [("OPEN", ""), ("OPEN", "")])


def _table(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM discrepancies ORDER BY discrepancy_id").fetchall()


def test_the_core_writes_the_rows_and_reads_the_states_python_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same reports recorded through the core (a run, in chunks) and through the
    Python store method, into two files: the same rows, the same states read back, a
    re-run after investigators worked finds their states in both, and the replies are
    the same bytes."""
    monkeypatch.setattr(reconciliation, "DISCREPANCY_CHUNK", 7)  # many chunks per run
    monkeypatch.setattr(reconciliation.time, "time_ns", lambda: 1_764_000_000_000_000_000)
    rng = random.Random(11)
    core, python = SqliteStore(tmp_path / "core.sqlite"), SqliteStore(tmp_path / "py.sqlite")
    try:
        for round_ in range(12):
            lines, _ = generate(rng, ColumnMapping())
            text = "".join(lines)
            ours = reconciliation.run(core, "acq-a", io.StringIO(text, newline=""), None, 900, DAY)
            theirs = reconcile("acq-a", DAY, read_rows(io.StringIO(text, newline="")), [], 900)
            states = python.record_discrepancies(
                "acq-a", DAY.isoformat(), theirs.discrepancies, 1_764_000_000_000_000
            )
            assert ours.states == {d.discrepancy_id: states[d.discrepancy_id]
                                   for d in theirs.discrepancies}  # fmt: skip
            theirs.held.set_states(0, [states[d.discrepancy_id] for d in theirs.discrepancies])
            assert reconcile_report(ours) == _compare(ReconcileRun(theirs))
            assert _table(tmp_path / "core.sqlite") == _table(tmp_path / "py.sqlite")
            # Investigators at work: the next runs must report what they wrote.
            for d in rng.sample(ours.result.discrepancies, min(3, len(ours.result.discrepancies))):
                status, note = rng.choice(STATUSES), f"round {round_}"
                assert core.set_discrepancy(d.discrepancy_id, status, note)
                assert python.set_discrepancy(d.discrepancy_id, status, note)
    finally:
        core.close()
        python.close()
