"""Payment ids: the format callers see, the time-ordered layout, strictly increasing."""

from __future__ import annotations

import re
import threading

import pytest

from quickpay_engine._engine import make_payment_ids
from quickpay_engine.settlement.ledger_book import payment_name, payment_number
from quickpay_engine.settlement.payment_ids import PaymentIdSource, new_payment_ids

ID = re.compile(r"pay_[0-9a-f]{32}")


def test_ids_keep_the_format_and_grow() -> None:
    first = new_payment_ids(500)
    second = new_payment_ids(3)
    assert all(ID.fullmatch(i) for i in first + second)
    assert len(set(first + second)) == 503
    numbers = [payment_number(i) for i in first + second]
    assert numbers == sorted(numbers)
    assert [payment_name(n) for n in numbers] == first + second


def test_the_first_48_bits_are_the_milliseconds_and_the_rest_the_random_bytes() -> None:
    source = PaymentIdSource(clock_ms=lambda: 0x0193_A1B2_C3D4, random_bytes=lambda n: b"\x07" * n)
    (only,) = source(1)
    assert only == "pay_0193a1b2c3d4" + "07" * 10


def test_a_batch_is_its_random_draws_sorted() -> None:
    draws = bytes([9] * 10 + [1] * 10 + [5] * 10)
    source = PaymentIdSource(clock_ms=lambda: 1, random_bytes=lambda n: draws[:n])
    assert [i[-20:] for i in source(3)] == ["01" * 10, "05" * 10, "09" * 10]


def test_ids_stay_increasing_in_one_millisecond_and_when_the_clock_steps_back() -> None:
    now = [1_000]
    draws = iter([b"\xff" * 10, b"\x00" * 10, b"\x00" * 10, b"\x80" * 20])
    source = PaymentIdSource(clock_ms=lambda: now[0], random_bytes=lambda n: next(draws))
    made = source(1)
    made += source(1)  # same millisecond, a lower draw
    now[0] = 900  # the clock stepped back
    made += source(1)
    now[0] = 1_001
    made += source(2)
    numbers = [payment_number(i) for i in made]
    assert numbers == sorted(set(numbers))
    # Moved above the last id by 1 and the draw's top 40 bits (0 here): adjacent.
    assert numbers[1] == numbers[0] + 1
    # Once the clock is past the last id's millisecond, ids are the clock's again.
    assert numbers[3] >> 80 == 1_001


def test_threads_never_get_the_same_id() -> None:
    source = PaymentIdSource(clock_ms=lambda: 5)
    made: list[list[str]] = []

    def take() -> None:
        made.append([i for _ in range(50) for i in source(20)])

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in made for i in ids]
    assert len(set(every)) == len(every) == 4_000
    for ids in made:
        assert ids == sorted(ids)


def test_the_core_refuses_partial_draws_and_a_clock_past_48_bits() -> None:
    with pytest.raises(ValueError, match="raw"):
        make_payment_ids(1, b"\x00" * 15, 0)
    with pytest.raises(ValueError, match="clock_ms"):
        make_payment_ids(1 << 48, b"\x00" * 10, 0)
    assert make_payment_ids(1, b"", 7) == ([], 7)
