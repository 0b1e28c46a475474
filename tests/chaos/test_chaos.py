"""The chaos suite: real faults of the real parts under a load of Pay, PayStream and
PayBatch, each scenario ending with every invariant checked (tests/chaos/invariants.py).

Small by default (part of `make test`); QUICKPAY_FULL=1 runs the full sizes. The faults
are timed by the clock (a fault lands "during the load"), but no verdict is: each is a
count of answers, payments, events or discrepancies.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from conftest import FULL, Stage

# A scenario's own bound (pytest-timeout): the full soak alone takes an hour.
pytestmark = pytest.mark.timeout(7_200 if FULL else 600)

# Answers a caller may hear while a fault lasts, besides SETTLED and business declines:
# the load's own malformed share (INVALID_ARGUMENT) and "try again" (UNAVAILABLE).
RETRY_LATER = {"UNAVAILABLE"}
MALFORMED = {"INVALID_ARGUMENT"}
# A batch already at the gateways when its database went away: its captures are given
# back and it fails with this reason.
STORE_LOST = {"BILLING_UNAVAILABLE"}


def unexpected(answers: list[dict[str, str]], errors: set[str], failed: set[str]) -> list[str]:
    """Answers outside what the scenario allows: other gRPC codes, other FAILED reasons."""
    bad: Counter[str] = Counter()
    for a in answers:
        if a["error"] and a["error"] not in errors | MALFORMED:
            bad[a["error"]] += 1
        elif a["status"] == "FAILED" and a["reason"] not in failed:
            bad[f"FAILED {a['reason']}"] += 1
    return [f"callers heard {dict(bad)}"] if bad else []


def settles_again(st: Stage, tries: int = 60) -> int:
    """Runs short unary loads until one payment settles; returns how many it took. The
    engine is never restarted: this is it resuming by itself."""
    for n in range(1, tries + 1):
        st.load.start(st.engine.target, 1.0, rpcs=("unary",))
        st.load.wait()
        if any(a["status"] == "SETTLED" for a in st.load.answers(st.load.runs)):
            return n
    return 0


def after_load(st: Stage, seconds: float) -> list[str]:
    """A load of all three RPCs once the fault is over: every answer must be an answer
    (no UNAVAILABLE left, no restart needed), and some must settle."""
    st.load.start(st.engine.target, seconds)
    st.load.wait()
    answers = st.load.answers(st.load.runs)
    problems = unexpected(answers, set(), set())
    if not any(a["status"] == "SETTLED" for a in answers):
        problems.append("nothing settled after the fault")
    return [f"after the fault: {p}" for p in problems]


@pytest.mark.parametrize("databases", [1, 3], ids=["one-db", "three-db-2pc"])
def test_postgres_stopped_and_started_mid_load(stage, databases: int) -> None:
    """`pg_ctl stop -m immediate` on the engine's own cluster while it settles, then
    started again: callers hear UNAVAILABLE or FAILED BILLING_UNAVAILABLE, never a
    SETTLED that did not land, and the same engine process settles again."""
    st = stage(f"pg-stop-{databases}db", databases=databases)
    rounds, load_s = (5, 40.0) if FULL else (1, 6.0)
    st.mark("setup")
    st.engine.start()
    st.mark("start")
    pid = st.engine.process.pid
    st.load.start(st.engine.target, load_s)
    first = st.load.runs
    gap_s = load_s / (rounds + 1)
    for _ in range(rounds):
        time.sleep(gap_s * 0.6)
        st.pg.stop_immediate()
        time.sleep(gap_s * 0.4)
        st.pg.start()
    st.load.wait()
    st.mark("load")
    problems = unexpected(st.load.answers(first), RETRY_LATER, STORE_LOST)
    tries = settles_again(st)
    if not tries:
        problems.append("the engine did not settle again once the database was back")
    st.mark("probe")
    problems += after_load(st, 10.0 if FULL else 3.0)
    st.mark("after-load")
    if st.engine.process is None or st.engine.process.pid != pid or st.engine.starts != 1:
        problems.append("the engine was restarted")
    st.wait_finished()
    st.mark("finished")
    st.finish(problems, f"{rounds} immediate stops of PostgreSQL ({databases} database(s)),"
                        f" settling again after {tries} probe(s) without a restart")  # fmt: skip
