"""The py-spy profiles' reader (benches/_support.py), shared by benches/profile_calls.py
and benches/profile_paybatch.py, on a raw file of known counts."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

# `py-spy record --threads --format raw`: frames outermost first, the thread's first,
# then the count; a line without a count is not a stack.
RAW = """\
thread (0x7F01): MainThread;_run (asyncio/events.py:80);sale_many (quickpay_engine/gateways/router.py:5) 30
thread (0x7F02): gateway-sim-a_2;send (grpc/_channel.py:40) 10
thread (0x7F01): MainThread;_run (asyncio/events.py:80);_score (quickpay_engine/fraud/model.py:3) 60
not a stack
"""


@pytest.fixture
def raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(BENCHES))
    path = tmp_path / "prof.txt"
    path.write_text(RAW)
    return path


def test_the_reader_yields_each_stack_with_its_thread_and_code_frames(raw: Path) -> None:
    from _support import pyspy_stacks

    stacks = list(pyspy_stacks(raw))
    assert [(s.thread, s.count) for s in stacks] == [
        ("MainThread", 30),
        ("gateway-sim-a_2", 10),
        ("MainThread", 60),
    ]
    assert stacks[0].frames == (
        "_run (asyncio/events.py:80)",
        "sale_many (quickpay_engine/gateways/router.py:5)",
    )
    assert stacks[1].text.startswith("thread (0x7F02): gateway-sim-a_2;send (")


def test_both_profiles_summarize_through_it(raw: Path) -> None:
    import profile_calls
    import profile_paybatch

    calls = profile_calls.summarize(raw, top=5).splitlines()
    assert calls[0] == "samples 100; by thread: MainThread 90.0 %, gateway-sim-a_ 10.0 %"
    assert calls[1:4] == [
        "MainThread 90 samples; by self:",
        "   66.7 %  model.py:_score",
        "   33.3 %  router.py:sale_many",
    ]
    batch = profile_paybatch.summarize(raw, ["_score ("])
    assert batch.splitlines() == [
        "samples 100; gateway stage on the event loop 30 (30.0 %); gateway sender threads"
        " 10 (10.0 %)",
        "by thread: MainThread 90.0 %, gateway-NAME_N 10.0 %",
        "'_score (': 60 (60.0 %)",
    ]
