"""The durable ledger through the bindings: batches in, result codes out, state across
restarts. Mirrors engine/src/ledger/ (the model-based property tests live there)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from quickpay_engine import _engine
from quickpay_engine.errors import BatchTooLarge, CapacityExceeded, InvalidBatch, LedgerClosed

EUR, USD = 978, 840
S = 1_000_000_000
CODES = {
    family: dict((name, number) for number, name in table)
    for family, table in _engine.ledger_result_codes()
}
T = CODES["transfer"]


def ids(*values: int) -> np.ndarray:
    return _engine.ids_array(list(values))


def open_ledger(path: Path, **kwargs) -> _engine.Ledger:
    return _engine.Ledger.open(str(path), segment_bytes_max=64 * 1024, **kwargs)


def with_accounts(path: Path, **kwargs) -> _engine.Ledger:
    ledger = open_ledger(path, **kwargs)
    flags = np.array([_engine.ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS, 0, 0, 0], dtype=np.uint16)
    codes, seq = ledger.create_accounts(
        1,
        ids(1, 2, 3, 4),
        np.array([EUR, EUR, EUR, USD], np.uint16),
        np.array([2, 3, 4, 3], np.uint16),
        flags,
    )
    assert codes.tolist() == [0, 0, 0, 0] and seq == 1
    return ledger


def transfers(ledger, now_ns, rows):
    """rows: (id, debit, credit, amount, currency, flags, pending_id, timeout_s, payment_id)."""
    cols = list(zip(*rows, strict=True))
    return ledger.create_transfers(
        now_ns,
        ids(*cols[0]),
        ids(*cols[1]),
        ids(*cols[2]),
        np.array(cols[3], np.int64),
        np.array(cols[4], np.uint16),
        np.array(cols[5], np.uint16),
        ids(*cols[6]),
        np.array(cols[7], np.uint32),
        ids(*cols[8]),
    )


def balances(ledger, *accounts):
    found, dp, dpo, cp, cpo = ledger.balances(ids(*accounts))
    assert found.all()
    return [tuple(int(x) for x in row) for row in zip(dp, dpo, cp, cpo, strict=True)]


BIG = (1 << 127) + 12345  # ids use all 128 bits


def test_ids_round_trip_through_both_halves():
    values = [0, 1, (1 << 64) - 1, 1 << 64, BIG, (1 << 128) - 1]
    arr = _engine.ids_array(values)
    assert arr.shape == (6, 2) and arr.dtype == np.uint64
    assert arr[4].tolist() == [1 << 63, 12345]
    assert _engine.ids_list(arr) == values
    with pytest.raises(OverflowError):
        _engine.ids_array([1 << 128])


def test_hold_post_for_less_and_near_misses_with_their_codes(tmp_path):
    ledger = with_accounts(tmp_path)
    P, POST, VOID = (
        _engine.TRANSFER_PENDING,
        _engine.TRANSFER_POST_PENDING,
        _engine.TRANSFER_VOID_PENDING,
    )
    codes, _ = transfers(
        ledger,
        2 * S,
        [
            (10, 2, 1, 500, EUR, 0, 0, 0, BIG),  # fund the prepaid account 1
            (BIG, 1, 3, 300, EUR, P, 0, 60, BIG),  # hold 300 of its 500
            (12, 1, 3, 201, EUR, 0, 0, 0, 0),  # one more than what is available
            (13, 1, 4, 1, EUR, 0, 0, 0, 0),  # account 4 is USD
            (14, 1, 1, 1, EUR, 0, 0, 0, 0),
            (15, 1, 3, 0, EUR, 0, 0, 0, 0),
        ],
    )
    assert codes.tolist() == [
        T["OK"],
        T["OK"],
        T["EXCEEDS_CREDITS"],
        T["CURRENCY_MISMATCH"],
        T["ACCOUNTS_MUST_BE_DIFFERENT"],
        T["AMOUNT_MUST_NOT_BE_ZERO"],
    ]
    assert balances(ledger, 1) == [(300, 0, 0, 500)]
    codes, _ = transfers(
        ledger,
        3 * S,
        [
            (20, 0, 0, 301, 0, POST, BIG, 0, BIG),
            (20, 0, 0, 250, 0, POST, BIG, 0, BIG),
            (20, 0, 0, 250, 0, POST, BIG, 0, BIG),
            (21, 0, 0, 0, 0, VOID, BIG, 0, BIG),
        ],
    )
    assert codes.tolist() == [
        T["EXCEEDS_PENDING_TRANSFER_AMOUNT"],
        T["OK"],
        T["EXISTS"],
        T["PENDING_TRANSFER_ALREADY_POSTED"],
    ]
    assert balances(ledger, 1, 3) == [(0, 250, 0, 500), (0, 0, 0, 250)]


def test_state_survives_a_restart_and_holds_expire_by_the_callers_clock(tmp_path):
    ledger = with_accounts(tmp_path)
    codes, _ = transfers(ledger, 10 * S, [(30, 2, 3, 100, EUR, _engine.TRANSFER_PENDING, 0, 5, 0)])
    assert codes.tolist() == [0]
    ledger.close()
    with pytest.raises(LedgerClosed):
        ledger.balances(ids(2))
    ledger = open_ledger(tmp_path)
    assert ledger.recovery()["records_replayed"] == 2
    assert balances(ledger, 2) == [(100, 0, 0, 0)]
    ledger.expire(15 * S - 1)
    assert balances(ledger, 2) == [(100, 0, 0, 0)], "one nanosecond early"
    ledger.expire(15 * S)
    assert balances(ledger, 2) == [(0, 0, 0, 0)]
    codes, _ = transfers(
        ledger, 16 * S, [(31, 0, 0, 0, 0, _engine.TRANSFER_POST_PENDING, 30, 0, 0)]
    )
    assert codes.tolist() == [T["PENDING_TRANSFER_EXPIRED"]]


def test_unfinished_payments_are_known_after_a_restart(tmp_path):
    ledger = open_ledger(tmp_path)
    R, C, SET, RB = 1, 2, 3, 4
    codes, seq = ledger.record_payment_states(
        S, ids(1, 2, 3, BIG), np.array([R, R, R, R], np.uint8)
    )
    assert codes.tolist() == [0, 0, 0, 0]
    codes, seq2 = ledger.record_payment_states(
        2 * S, ids(1, 2, 3, 4), np.array([C, RB, SET, C], np.uint8)
    )
    P = CODES["payment"]
    assert codes.tolist() == [P["OK"], P["OK"], P["TRANSITION_INVALID"], P["TRANSITION_INVALID"]]
    assert seq2 == seq + 1
    ledger.snapshot()
    ledger.record_payment_states(3 * S, ids(1), np.array([SET], np.uint8))
    ledger.close()
    ledger = open_ledger(tmp_path)
    found, states = ledger.unfinished_payments()
    assert _engine.ids_list(found) == [3, BIG]
    assert states.tolist() == [R, R]
    assert ledger.payment_states(ids(1, 2, 99)).tolist() == [SET, RB, 0]


def test_idempotency_index_replays_refuses_other_payloads_and_survives_restarts(tmp_path):
    ledger = open_ledger(tmp_path, retention_s=100)
    C = CODES["claim"]
    codes, pays, outcomes, _ = ledger.claim_keys(S, ["k1", "k2"], ids(111, 222), ids(7, 8))
    assert codes.tolist() == [C["NEW"], C["NEW"]]
    codes, _ = ledger.set_outcomes(2 * S, ["k1", "nope"], np.array([5, 5], np.uint16))
    assert codes.tolist() == [CODES["entry"]["OK"], CODES["entry"]["NOT_FOUND"]]
    ledger.close()
    ledger = open_ledger(tmp_path, retention_s=100)
    codes, pays, outcomes, _ = ledger.claim_keys(
        3 * S, ["k1", "k1", "k2", ""], ids(111, 999, 222, 1), ids(0, 0, 0, 0)
    )
    assert codes.tolist() == [C["REPLAY"], C["PAYLOAD_MISMATCH"], C["REPLAY"], C["KEY_INVALID"]]
    assert _engine.ids_list(pays) == [7, 7, 8, 0]
    assert outcomes.tolist() == [5, 5, 0, 0]
    codes, *_ = ledger.claim_keys(102 * S, ["k1"], ids(999), ids(9))
    assert codes.tolist() == [C["NEW"]], "after the retention window the key is free"


def test_two_phase_commit_decisions_are_logged_once(tmp_path):
    ledger = open_ledger(tmp_path)
    E = CODES["entry"]
    codes, _ = ledger.record_decisions(
        S, ["gtid-1", "gtid-1", "gtid-2"], np.array([1, 2, 3], np.uint8)
    )
    assert codes.tolist() == [E["OK"], E["EXISTS_WITH_DIFFERENT_VALUE"], E["VALUE_INVALID"]]
    ledger.close()
    ledger = open_ledger(tmp_path)
    assert ledger.decisions() == [("gtid-1", 1)]
    codes, _ = ledger.forget_decisions(2 * S, ["gtid-1", "gtid-1"])
    assert codes.tolist() == [E["OK"], E["NOT_FOUND"]]
    assert ledger.decisions() == []


def test_the_audit_anchor_is_kept_furthest_first_across_restarts_and_snapshots(tmp_path):
    A = CODES["anchor"]
    ledger = open_ledger(tmp_path)
    assert ledger.audit_anchor() is None
    codes, _ = ledger.anchor_audit(S, 5, b"\x01" * 32)
    assert codes.tolist() == [A["OK"]]
    codes, _ = ledger.anchor_audit(S, 4, b"\x02" * 32)
    assert codes.tolist() == [A["BEHIND"]]
    with pytest.raises(InvalidBatch, match="32 bytes"):
        ledger.anchor_audit(S, 6, b"short")
    ledger.close()
    ledger = open_ledger(tmp_path)
    assert ledger.audit_anchor() == (5, b"\x01" * 32)
    ledger.snapshot()
    ledger.close()
    ledger = open_ledger(tmp_path)
    assert ledger.audit_anchor() == (5, b"\x01" * 32)
    ledger.close()


def test_bad_columns_and_bounds_raise_typed_errors_before_any_work(tmp_path):
    ledger = with_accounts(tmp_path, transfers_max=2)
    row = (40, 2, 3, 1, EUR, 0, 0, 0, 0)
    with pytest.raises(InvalidBatch, match="amounts_minor"):
        ledger.create_transfers(
            S,
            ids(40),
            ids(2),
            ids(3),
            np.array([1, 2], np.int64),
            np.array([EUR], np.uint16),
            np.zeros(1, np.uint16),
            ids(0),
            np.zeros(1, np.uint32),
            ids(0),
        )
    strided = np.ones(4, np.int64)[::2]  # two rows, every other element
    with pytest.raises(InvalidBatch, match="C-contiguous"):
        ledger.create_transfers(
            S,
            ids(40, 41),
            ids(2, 2),
            ids(3, 3),
            strided,
            np.array([EUR, EUR], np.uint16),
            np.zeros(2, np.uint16),
            ids(0, 0),
            np.zeros(2, np.uint32),
            ids(0, 0),
        )
    with pytest.raises(InvalidBatch, match=r"shape \(n, 2\)"):
        ledger.balances(np.zeros((2, 3), np.uint64))
    with pytest.raises(TypeError):
        ledger.balances(np.zeros((2, 2), np.int64))
    with pytest.raises(CapacityExceeded, match="transfers"):
        transfers(ledger, S, [row, (41, 2, 3, 1, EUR, 0, 0, 0, 0), (42, 2, 3, 1, EUR, 0, 0, 0, 0)])
    assert ledger.counts() == (4, 0), "a refused batch changes nothing"
    n = _engine.LEDGER_BATCH_MAX + 1
    with pytest.raises(BatchTooLarge):
        ledger.record_payment_states(S, ids(*range(1, n + 1)), np.ones(n, np.uint8))
    assert transfers(ledger, S, [row])[0].tolist() == [0]


def test_concurrent_callers_are_all_acknowledged_and_replayed(tmp_path):
    ledger = with_accounts(tmp_path)
    errors = []

    def worker(base: int) -> None:
        try:
            for i in range(20):
                tid = base + i
                codes, _ = transfers(ledger, S, [(tid, 2, 3, 1, EUR, 0, 0, 0, 0)])
                assert codes.tolist() == [0]
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(1000 * (t + 1),)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledger.last_seq() == 81
    ledger.close()
    ledger = open_ledger(tmp_path)
    assert balances(ledger, 2, 3) == [(0, 80, 0, 0), (0, 0, 0, 80)]


async def test_the_book_forgets_old_transfers_and_snapshots_so_memory_and_log_stay_bounded(
    tmp_path,
):
    """Transfers of payments older than the retention window are forgotten (holds still
    pending are kept), and once enough records are logged the book snapshots the ledger,
    which removes the log segments it covers; a restart finds the same state."""
    from quickpay_engine.settlement.ledger_book import KIND_PREPAID, RESERVED, LedgerBook, Movement

    now = [S]
    book = LedgerBook(open_ledger(tmp_path, retention_s=60), clock_ns=lambda: now[0])
    book.open_accounts(["acc-1"], [KIND_PREPAID], ["KES"])
    for batch in range(40):
        moves = [
            Movement(f"pay_{batch + 1:04x}{n + 1:028x}", "acc-1", 100, "KES") for n in range(50)
        ]
        await book.reserve(moves)
        await book.capture([m.payment_id for m in moves])
        await book.settle([m.payment_id for m in moves])
    assert book.ledger.counts()[1] == 40 * 50 * 2, "a hold and its post per payment"
    stuck = Movement("pay_" + "d" * 32, "acc-1", 7, "KES")
    await book.reserve([stuck])
    segments = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("wal-"))
    assert len(segments) > 2

    now[0] = 200 * S  # the window has passed: the next batch sweeps
    fresh = Movement("pay_" + "e" * 32, "acc-1", 5, "KES")
    await book.reserve([fresh])
    assert book.ledger.counts()[1] == 2, "the hold left pending and the new one"
    assert book.unfinished() == {stuck.payment_id: RESERVED, fresh.payment_id: RESERVED}

    assert await book.snapshot_if_due(every_records=1_000_000) is None, "not due yet"
    seq = await book.snapshot_if_due(every_records=10)
    assert seq == book.ledger.last_seq()
    assert await book.snapshot_if_due(every_records=10) is None, "nothing new since"
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("wal-"))
    assert len(left) == 1 and left[0] not in segments[:-1], left
    book.close()

    book = LedgerBook(open_ledger(tmp_path, retention_s=60), clock_ns=lambda: now[0])
    try:
        assert book.ledger.recovery()["snapshot_seq"] == seq
        assert book.ledger.counts()[1] == 2
        assert book.unfinished() == {stuck.payment_id: RESERVED, fresh.payment_id: RESERVED}
        await book.capture([stuck.payment_id])
        await book.settle([stuck.payment_id])  # the kept hold still posts after a restart
        assert stuck.payment_id not in book.unfinished()
    finally:
        book.close()


async def test_settle_and_anchor_posts_the_holds_and_anchors_in_one_trip(tmp_path) -> None:
    """A settled batch's last step posts its holds and anchors the audit head on the
    ledger's thread at once; a failing post still anchors, and its error is raised."""
    from quickpay_engine.settlement.ledger_book import KIND_PREPAID, LedgerBook, Movement

    book = LedgerBook(open_ledger(tmp_path), clock_ns=lambda: S)
    try:
        book.open_accounts(["acc-1"], [KIND_PREPAID], ["KES"])
        moves = [Movement(f"pay_{n + 1:032x}", "acc-1", 100, "KES") for n in range(3)]
        await book.reserve(moves)
        await book.capture([m.payment_id for m in moves])
        await book.settle_and_anchor([m.payment_id for m in moves], (7, "ab" * 32))
        assert book.unfinished() == {}
        assert book.ledger.audit_anchor() == (7, b"\xab" * 32)
        with pytest.raises(Exception, match="transfer"):
            # Never held: posting it fails; the anchor still moves.
            await book.settle_and_anchor(["pay_" + "f" * 32], (8, "cd" * 32))
        assert book.ledger.audit_anchor() == (8, b"\xcd" * 32)
        await book.settle_and_anchor([], None)  # nothing to do: no trip
    finally:
        book.close()


async def test_saga_steps_address_the_ids_python_derives(tmp_path) -> None:
    """The ledger threads derive account, post and void ids in the core; they must be
    the ids ledger_book.derived_id gives, or a redo after an upgrade (and every check
    that looks an account up from Python) would miss them. A post made the Python way
    is found again by the core's settle (EXISTS, accepted), not posted twice."""
    from quickpay_engine._engine import TRANSFER_POST_PENDING, ids_array
    from quickpay_engine.settlement.ledger_book import (
        KIND_PREPAID,
        LedgerBook,
        Movement,
        adjustment_account,
        clearing_account,
        derived_id,
        payment_number,
        subscriber_account,
    )

    book = LedgerBook(open_ledger(tmp_path), clock_ns=lambda: S)
    try:
        moves = [
            Movement(f"pay_{n + 1:032x}", f"acc-ü-{n}", 100 + n, cur, KIND_PREPAID)
            for n, cur in enumerate(["KES", "UGX", "KES"])
        ]
        await book.reserve(moves)
        wanted = [subscriber_account(m.account_id) for m in moves] + [
            f(c) for c in ("KES", "UGX") for f in (clearing_account, adjustment_account)
        ]
        found, _, _, credits_pending, _ = book.ledger.balances(ids_array(wanted))
        assert found.all()
        assert credits_pending[:3].tolist() == [100, 101, 102]

        first = moves[0].payment_id
        hold = payment_number(first)
        codes, _ = book.ledger.create_transfers(
            S,
            ids_array([derived_id("post", first)]),
            ids_array([0]),
            ids_array([0]),
            np.zeros(1, np.int64),
            np.zeros(1, np.uint16),
            np.full(1, TRANSFER_POST_PENDING, np.uint16),
            ids_array([hold]),
            np.zeros(1, np.uint32),
            ids_array([hold]),
        )
        assert codes.tolist() == [0]
        await book.capture([first])
        await book.settle([first])  # the core's post has the same id: EXISTS
        await book.roll_back([moves[1].payment_id])
        await book.roll_back([moves[1].payment_id])  # a redo: the void EXISTS
        assert book.unfinished() == {moves[2].payment_id: 1}
    finally:
        book.close()


async def test_saga_steps_report_refusals_and_skip_cancelled_callers(tmp_path) -> None:
    """A step the ledger refuses raises LedgerRefused naming the codes; a currency the
    ledger cannot number is refused before anything is logged; a caller that gave up
    (its future cancelled) leaves the step to finish and the queue to go on."""
    from quickpay_engine.settlement.ledger_book import (
        KIND_PREPAID,
        LedgerBook,
        LedgerRefused,
        Movement,
    )

    book = LedgerBook(open_ledger(tmp_path), clock_ns=lambda: S)
    try:
        seq = book.ledger.last_seq()
        with pytest.raises(LedgerRefused, match="not an ISO 4217 currency"):
            await book.reserve([Movement("pay_" + "1" * 32, "acc-1", 5, "ZZZ", KIND_PREPAID)])
        assert book.ledger.last_seq() == seq, "nothing logged"
        with pytest.raises(
            LedgerRefused, match=r"refused 1 transfer events: PENDING_TRANSFER_NOT_FOUND"
        ):
            await book.settle(["pay_" + "2" * 32])  # never held
        moves = [Movement(f"pay_{n + 1:032x}", "acc-1", 10, "KES", KIND_PREPAID) for n in range(50)]
        gave_up = asyncio.ensure_future(book.reserve(moves[:1]))
        await asyncio.sleep(0)
        gave_up.cancel()
        await asyncio.gather(*(book.reserve([m]) for m in moves[1:]))
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        assert len(book.unfinished()) == 50, "the cancelled caller's step still ran"
    finally:
        book.close()


def test_opening_accounts_takes_the_engine_s_currencies_and_the_reserve_step_s_ids(tmp_path):
    """Refunds and adjustments open accounts with the reserve step's own code: the same
    ids (a subscriber's, its currency's clearing and adjustment accounts), each once,
    and a currency the engine does not bill in (gold: ISO 4217, not money here) refused
    with nothing opened."""
    from quickpay_engine.settlement.ledger_book import (
        KIND_PREPAID,
        KIND_RECEIVABLE,
        LedgerBook,
        LedgerRefused,
        adjustment_account,
        clearing_account,
        ids_array,
        subscriber_account,
    )

    book = LedgerBook(open_ledger(tmp_path))
    with pytest.raises(LedgerRefused, match=r"^'XAU' is not an ISO 4217 currency$"):
        book.open_accounts(["acc-gold"], [KIND_PREPAID], ["XAU"])
    assert book.ledger.counts()[0] == 0
    # Twice the same subscriber in one call: opened once.
    book.open_accounts(["acc-1", "acc-1"], [KIND_PREPAID, KIND_RECEIVABLE], ["KES", "KES"])
    ids = [subscriber_account("acc-1"), clearing_account("KES"), adjustment_account("KES")]
    assert book.ledger.balances(ids_array(ids))[0].tolist() == [True, True, True]
    assert book.ledger.counts()[0] == 3
    book.open_accounts(["acc-1"], [KIND_PREPAID], ["KES"])  # held already: nothing new
    assert book.ledger.counts()[0] == 3
    # Columns of unequal length are the caller's bug: refused as every other batch
    # column is (InvalidBatch naming the column), with nothing opened or held.
    with pytest.raises(InvalidBatch, match=r"^column currencies has 2 rows, expected 1$"):
        book.open_accounts(["acc-2"], [KIND_PREPAID], ["KES", "KES"])
    with pytest.raises(InvalidBatch, match=r"^column amounts_minor has 0 rows, expected 1$"):
        asyncio.run(book.reserve_columns(["pay_1"], ["acc-2"], [KIND_PREPAID], [], ["KES"]))
    assert book.ledger.counts()[0] == 3
    book.close()
