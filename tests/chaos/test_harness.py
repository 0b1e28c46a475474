"""The chaos harness's own helpers: what a failed scenario quotes and keeps."""

from __future__ import annotations

from pathlib import Path

from chaos.conftest import keep_logs, server_errors
from chaos.soak import Sample, trends
from chaos.test_chaos import RETRY_LATER, unexpected

LOG = """\
--- start 1
2026-12-06 08:20:58,846 INFO quickpay_engine.server: serving
2026-12-06 08:20:59,001 WARNING quickpay_engine.settlement.twophase: two-phase recovery
--- start 2
2026-12-06 08:21:03,840 INFO quickpay_engine.ledger_limits: ledger holds
2026-12-06 08:21:04,100 ERROR quickpay_engine.settlement.batcher: settlement batch of 10 failed
Traceback (most recent call last):
  File "pipeline.py", line 1, in prepare
psycopg.errors.InFailedSqlTransaction: current transaction is aborted
2026-12-06 08:21:04,200 INFO quickpay_engine.server: stopped
"""


def test_server_errors_quotes_each_error_with_its_traceback_and_life(tmp_path: Path) -> None:
    log = tmp_path / "engine.serve.log"
    log.write_text(LOG)
    assert server_errors(log) == [
        "--- start 2",
        "2026-12-06 08:21:04,100 ERROR quickpay_engine.settlement.batcher: settlement batch"
        " of 10 failed",
        "Traceback (most recent call last):",
        '  File "pipeline.py", line 1, in prepare',
        "psycopg.errors.InFailedSqlTransaction: current transaction is aborted",
    ]
    assert server_errors(log, limit=2)[-1] == f"... (more in {log})"
    assert server_errors(tmp_path / "missing.log") == []
    assert server_errors(None) == []


def test_unexpected_answers_quote_what_they_said() -> None:
    answers = [
        {"rpc": "batch", "error": "INTERNAL", "status": "", "reason": "", "detail": "boom"},
        {"rpc": "batch", "error": "INTERNAL", "status": "", "reason": "", "detail": "boom"},
        {"rpc": "unary", "error": "UNAVAILABLE", "status": "", "reason": "", "detail": "x"},
        {"rpc": "unary", "error": "", "status": "SETTLED", "reason": "", "detail": ""},
    ]
    assert unexpected(answers, RETRY_LATER, set()) == [
        "callers heard {'INTERNAL': 2} (2 x INTERNAL on batch: boom)"
    ]
    assert unexpected(answers[2:], RETRY_LATER, set()) == []


def test_a_failed_scenario_keeps_its_logs_and_answers(tmp_path: Path, monkeypatch) -> None:
    import chaos.conftest

    monkeypatch.setattr(chaos.conftest, "CHAOS_OUT", tmp_path / "out")
    work = tmp_path / "work"
    (work / "gateways").mkdir(parents=True)
    (work / "engine").mkdir()
    for name in ("engine.serve.log", "load1-unary.csv", "load1-unary.json", "gateways/a.log"):
        (work / name).write_text(name)
    (work / "engine" / "big.db").write_text("data")
    kept = keep_logs(work, "2pc-kill")
    assert kept.parent == tmp_path / "out" / "failed"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "engine.serve.log", "gateways/a.log", "load1-unary.csv", "load1-unary.json",
    ]  # fmt: skip


def _samples(rss_mib: list[int]) -> list[Sample]:
    """One sample every 10 s with the given RSS, a steady 50 descriptors and no WAL."""
    return [Sample(10.0 * n, mib << 20, 50, 0) for n, mib in enumerate(rss_mib)]


def test_rss_that_grows_only_while_the_window_fills_does_not_trend() -> None:
    # 0-60 s: the retention window filling (by design); flat afterwards.
    filling_then_flat = _samples([100, 120, 140, 160, 180, 200, 210] + [210] * 12)
    assert trends(filling_then_flat, gateways=3, settled_s=60.0) == []
    # Judged from the start, the same samples are a trend: what settled_s is for.
    assert trends(filling_then_flat, gateways=3) != []


def test_rss_that_grows_after_the_window_is_full_trends() -> None:
    leaking = _samples([100, 120, 140, 160, 180, 200, 210] + [210 + 15 * n for n in range(12)])
    assert [p for p in trends(leaking, gateways=3, settled_s=60.0) if p.startswith("RSS")]


def test_too_few_samples_after_the_window_is_a_problem_not_a_pass() -> None:
    assert trends(_samples([100] * 12), gateways=3, settled_s=100.0) == [
        "only 2 samples after 100 s: too few to see a trend"
    ]
