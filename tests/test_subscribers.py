"""Subscribers in: the CSV format, line-numbered errors, all-or-nothing imports, seeding."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SUBSCRIBERS, settings_for
from quickpay_engine.errors import ImportRowError
from quickpay_engine.store import SqliteStore
from quickpay_engine.subscribers import COLUMNS, generate, parse_csv, to_csv_text

GOOD = to_csv_text(SUBSCRIBERS)


def test_round_trip_of_the_fixed_columns() -> None:
    assert GOOD.splitlines()[0] == ",".join(COLUMNS)
    assert parse_csv(io.StringIO(GOOD)) == SUBSCRIBERS


def test_columns_may_come_in_any_order() -> None:
    lines = GOOD.splitlines()
    rows = [line.split(",") for line in lines]
    swapped = "\n".join(",".join([r[1], r[0], *r[2:]]) for r in rows)
    assert parse_csv(io.StringIO(swapped)) == SUBSCRIBERS


BAD_VALUES = [
    ("account_id", "acc 1"),
    ("msisdn", "306900000009"),
    ("msisdn", "+30690000000912345"),
    ("plan", "prepaid"),
    ("status", "DORMANT"),
    ("currency", "EURO"),
    ("balance_minor", "12.50"),
    ("balance_minor", "1e3"),
    ("country", "GRC"),
    ("sim_swapped_at", "2026-01-01"),
    ("sim_swapped_at", "2026-01-01T10:00:00"),
    ("created_at", ""),
]


@pytest.mark.parametrize(("column", "value"), BAD_VALUES)
def test_bad_value_is_reported_with_its_line(column: str, value: str) -> None:
    lines = GOOD.splitlines()
    fields = lines[3].split(",")
    fields[COLUMNS.index(column)] = value
    lines[3] = ",".join(fields)
    with pytest.raises(ImportRowError) as err:
        parse_csv(io.StringIO("\n".join(lines)))
    assert err.value.line == 4
    assert str(err.value).startswith(f"line 4: {column} ")


def test_near_misses_of_the_bad_values_parse() -> None:
    lines = GOOD.splitlines()
    fields = lines[3].split(",")
    fields[COLUMNS.index("balance_minor")] = "-1250"
    fields[COLUMNS.index("sim_swapped_at")] = "2026-01-01T10:00:00+02:00"
    lines[3] = ",".join(fields)
    row = parse_csv(io.StringIO("\n".join(lines)))[2]
    assert row.balance_minor == -1_250
    assert row.sim_swapped_at_s == 1_767_254_400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("account_id,msisdn\n", "header must name"),
        (GOOD + "acc-x,+306900000099,PREPAID\n", "expected 9 fields"),
        (GOOD + GOOD.splitlines()[1] + "\n", "appears twice"),
    ],
)
def test_file_level_errors(text: str, message: str) -> None:
    with pytest.raises(ImportRowError, match=message):
        parse_csv(io.StringIO(text))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_import_cli_loads_everything_or_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    done = run_cli("subscribers", "import", str(good), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 5 subscribers" in done.stdout

    # A file whose 6th line is bad: the rows before it must not land either.
    changed = [r.replace("+306900000002", "+306900000012") for r in GOOD.splitlines()]
    changed[1] = changed[1].replace(",8000,", ",1,")
    bad_lines = [*changed, "acc-new,+306900000077,PREPAID,ACTIVE,EUR,5.00,GR,,2026-01-01T00:00:00Z"]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(bad_lines) + "\n")
    done = run_cli("subscribers", "import", str(bad), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "line 7: balance_minor '5.00'" in done.stderr
    assert "nothing was loaded" in done.stderr
    store = SqliteStore(settings_for(tmp_path).sqlite_path)
    try:
        assert store.load_subscribers() == SUBSCRIBERS
    finally:
        store.close()


def test_data_dir_comes_from_the_environment_too(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    env_dir = tmp_path / "from-env"
    done = subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", "subscribers", "import", str(good)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={"QUICKPAY_DATA_DIR": str(env_dir), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert (env_dir / "quickpay.sqlite3").exists()


def test_bad_listen_flag_is_a_clear_config_error(tmp_path: Path) -> None:
    done = run_cli("serve", "--listen", "nowhere", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "--listen 'nowhere' must be HOST:PORT" in done.stderr


def test_seed_is_deterministic_and_importable(tmp_path: Path) -> None:
    first = to_csv_text(generate(500, seed=3))
    assert first == to_csv_text(generate(500, seed=3))
    assert first != to_csv_text(generate(500, seed=4))
    rows = parse_csv(io.StringIO(first))
    assert len(rows) == 500
    assert len({r.msisdn for r in rows}) == 500
    plans = {r.plan.name for r in rows}
    statuses = {r.status.name for r in rows}
    assert plans == {"PREPAID", "POSTPAID"}
    assert {"ACTIVE", "BARRED"} <= statuses
    done = run_cli(
        "seed", "--subscribers", "50", "--seed", "9", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    with (tmp_path / "subscribers.csv").open() as text:
        assert len(parse_csv(text)) == 50


def _import(path: Path, data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli("subscribers", "import", str(path), "--data-dir", str(data_dir), *flags,
                   cwd=data_dir)  # fmt: skip


def _stored(data_dir: Path) -> dict[str, object]:
    store = SqliteStore(settings_for(data_dir).sqlite_path)
    try:
        return {r.account_id: r for r in store.load_subscribers()}
    finally:
        store.close()


def test_default_import_upserts_and_replace_closes_the_missing(tmp_path: Path) -> None:
    """Default: the file's rows are inserted or updated, the others left as they are.
    --replace: the file is the whole base, and a line missing from it is CLOSED, never
    deleted."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert _import(good, tmp_path).returncode == 0
    lines = GOOD.splitlines()
    first = lines[1].split(",")
    gone = lines[2].split(",")[0]
    first[COLUMNS.index("balance_minor")] = "1234"
    new = "acc-new,+306900000077,PREPAID,ACTIVE,EUR,500,GR,,2026-01-01T00:00:00Z"
    part = tmp_path / "part.csv"
    part.write_text("\n".join([lines[0], ",".join(first), new]) + "\n")
    done = _import(part, tmp_path)
    assert done.returncode == 0, done.stderr
    stored = _stored(tmp_path)
    assert len(stored) == len(SUBSCRIBERS) + 1
    assert stored[first[0]].balance_minor == 1234  # type: ignore[attr-defined]
    assert stored[gone] == next(s for s in SUBSCRIBERS if s.account_id == gone)

    whole = tmp_path / "whole.csv"
    whole.write_text("\n".join([lines[0], ",".join(first), new]) + "\n")
    done = _import(whole, tmp_path, "--replace")
    assert done.returncode == 0, done.stderr
    closed = len(SUBSCRIBERS) - 1 - sum(1 for s in SUBSCRIBERS if s.status.name == "CLOSED")
    assert f"{closed} lines missing from the file closed" in done.stdout
    stored = _stored(tmp_path)
    assert len(stored) == len(SUBSCRIBERS) + 1, "closed, never deleted"
    assert stored[gone].status.name == "CLOSED"  # type: ignore[attr-defined]
    assert stored["acc-new"].status.name == "ACTIVE"  # type: ignore[attr-defined]


def test_a_duplicate_in_an_import_is_named_by_its_line_and_loads_nothing(tmp_path: Path) -> None:
    """Into an empty table and into a loaded one (the staging path), the same message."""
    lines = GOOD.splitlines()
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([*lines, lines[2]]) + "\n")
    for _ in range(2):
        done = _import(twice, tmp_path)
        assert done.returncode == 1
        assert f"line {len(lines) + 1}: account_id" in done.stderr, done.stderr
        assert "appears twice" in done.stderr
        good = tmp_path / "good.csv"
        good.write_text(GOOD)
        assert _import(good, tmp_path).returncode == 0
    assert len(_stored(tmp_path)) == len(SUBSCRIBERS)


def test_a_number_twice_or_taken_in_a_loaded_base_loads_nothing(tmp_path: Path) -> None:
    """Into a loaded table: a number the file gives two lines is named by the second's
    line; a number a line of the base keeps is a conflict with the database. Nothing of
    either file is loaded."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert _import(good, tmp_path).returncode == 0
    header, first = GOOD.splitlines()[:2]
    new = "acc-n{},{},PREPAID,ACTIVE,EUR,0,GR,,2026-01-01T00:00:00Z"
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([header, new.format(1, "+306900000091"), new.format(2, "+306900000091")]) + "\n")  # fmt: skip
    done = _import(twice, tmp_path)
    assert done.returncode == 1
    assert "line 3: msisdn '+306900000091' appears twice" in done.stderr, done.stderr
    taken = tmp_path / "taken.csv"
    taken.write_text("\n".join([header, new.format(3, first.split(",")[1])]) + "\n")
    done = _import(taken, tmp_path)
    assert done.returncode != 0
    assert "conflicts with the database" in done.stderr, done.stderr
    assert {a for a in _stored(tmp_path)} == {s.account_id for s in SUBSCRIBERS}
