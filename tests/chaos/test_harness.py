"""The chaos harness's own helpers: what a failed scenario quotes and keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.answers import is_refusal, refused
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


def _answer(error: str = "", detail: str = "", status: str = "", reason: str = "") -> dict:
    return {"rpc": "unary", "error": error, "status": status, "reason": reason, "detail": detail}


@pytest.mark.parametrize(
    ("answer", "is_refused"),
    [
        # grpc-core's bound on calls not yet taken: the server's, "retry later".
        (_answer("CANCELLED", "CANCELLED"), True),
        (_answer("CANCELLED", ""), True),
        # The client's own cancellations (grpc.aio's details): not the server's word.
        (_answer("CANCELLED", "Locally cancelled by application!"), False),
        (_answer("CANCELLED", "Cancelled upon garbage collection!"), False),
        # Admission's refusal, as a call's code and as a PayStream frame's reason.
        (_answer("RESOURCE_EXHAUSTED", "the engine is overloaded"), True),
        (_answer(status="FAILED", reason="RESOURCE_EXHAUSTED"), True),
        # Everything else is not a refusal.
        (_answer("UNAVAILABLE", "Socket closed"), False),
        (_answer("DEADLINE_EXCEEDED"), False),
        (_answer("INTERNAL", "CANCELLED"), False),
        (_answer(status="FAILED", reason="CANCELLED"), False),
        (_answer(status="FAILED", reason="BILLING_UNAVAILABLE"), False),
        (_answer(status="SETTLED"), False),
        (_answer(status="DECLINED", reason="INSUFFICIENT_CREDIT"), False),
    ],
)
def test_which_answers_are_refusals(answer: dict, is_refused: bool) -> None:
    assert refused(answer) is is_refused
    if answer["error"]:
        assert is_refusal(answer["error"], answer["detail"]) is is_refused


def test_a_cancelled_the_caller_did_not_cause_is_a_refusal_not_an_error() -> None:
    answers = [
        _answer("CANCELLED", "CANCELLED"),
        _answer(status="FAILED", reason="RESOURCE_EXHAUSTED"),
        _answer(status="SETTLED"),
    ]
    # Allowed whatever the scenario allows, as RESOURCE_EXHAUSTED is.
    assert unexpected(answers, set(), set()) == []
    mine = _answer("CANCELLED", "Locally cancelled by application!")
    assert unexpected([*answers, mine], RETRY_LATER, set()) == [
        "callers heard {'CANCELLED': 1} (1 x CANCELLED on unary: Locally cancelled by application!)"
    ]


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
