"""The audit key (audit.key in the data dir) lost while the trail has keyed rows: the
read-only checks fail naming the file and create nothing; the writers (serve among them)
refuse to start, since a new key would break the chain, until the operator says so with
`quickpay audit new-key`. A trail from before the key (0.1.0) or an empty one still gets
its key made at the first writer's start, as before."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import settings_for
from quickpay_engine.config import SQLITE_FILE
from quickpay_engine.errors import ConfigError
from quickpay_engine.storage import open_store
from quickpay_engine.store.audit import (
    GENESIS,
    KEY_FILE,
    NEW_KEY,
    AuditKeyMismatch,
    AuditRow,
    _is_marker,
    entries_rows,
    key_id,
    plain_hash,
    verify,
)
from quickpay_engine.store.ownership import LOCK_FILE, SQLITE_LOCK_SUFFIX
from test_store_sqlite import plain_trail, settle

SQLITE_AND_POSTGRES = pytest.mark.parametrize("backend", ("sqlite", "postgres"), indirect=True)


def cli(data_dir: Path, database_urls: list[str] | None, *command: str, timeout: float = 60):
    url = ["--database-url", database_urls[0]] if database_urls else []
    return subprocess.run(
        [sys.executable, "-m", "quickpay_engine.cli", *command, "--data-dir", str(data_dir), *url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def keyed_trail(data_dir: Path, database_urls: list[str] | None) -> int:
    """Commits a batch (keyed audit rows) and returns the trail's last seq."""
    store = open_store(settings_for(data_dir, database_urls=database_urls))
    try:
        store.commit_batch([settle("k1", account="acc-pre"), settle("k2")], now_us=1)
        return sum(1 for _ in store.audit_rows())
    finally:
        store.close()


def listing(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file in the data dir with its size and modification time, but the empty
    lock files every command takes (store/ownership.py)."""
    return {
        str(p.relative_to(data_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in data_dir.rglob("*")
        if p.is_file() and p.name not in (LOCK_FILE, f"{SQLITE_FILE}{SQLITE_LOCK_SUFFIX}")
    }


@SQLITE_AND_POSTGRES
def test_the_checks_with_the_key_missing_fail_naming_it_and_create_nothing(
    data_dir: Path, database_urls: list[str] | None
) -> None:
    rows = keyed_trail(data_dir, database_urls)
    (data_dir / KEY_FILE).unlink()
    before = listing(data_dir)
    for command in (("verify",), ("audit", "verify")):
        done = cli(data_dir, database_urls, *command)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert f"{data_dir / KEY_FILE} is missing" in done.stderr, done.stderr
        assert f"the audit trail ({rows} rows) is keyed with it" in done.stderr
        assert "restore it from its backup" in done.stderr
        assert not (data_dir / KEY_FILE).exists()
        assert listing(data_dir) == before


def test_serve_with_the_key_missing_and_a_keyed_trail_refuses_to_start(data_dir: Path) -> None:
    keyed_trail(data_dir, None)
    (data_dir / KEY_FILE).unlink()
    try:
        done = cli(data_dir, None, "serve", "--listen", "127.0.0.1:0", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve started with its audit key missing")
    assert done.returncode == 2, done.stderr
    assert f"{data_dir / KEY_FILE} is missing" in done.stderr, done.stderr
    assert "a new key would break the chain" in done.stderr
    assert "quickpay audit new-key" in done.stderr
    assert not (data_dir / KEY_FILE).exists()


def test_every_writer_refuses_a_lost_key(data_dir: Path) -> None:
    keyed_trail(data_dir, None)
    (data_dir / KEY_FILE).unlink()
    with pytest.raises(ConfigError, match="is missing"):
        open_store(settings_for(data_dir))
    assert not (data_dir / KEY_FILE).exists()


@SQLITE_AND_POSTGRES
def test_audit_new_key_replaces_a_lost_key_once_asked(
    data_dir: Path, database_urls: list[str] | None
) -> None:
    rows = keyed_trail(data_dir, database_urls)
    key = data_dir / KEY_FILE
    key.unlink()
    done = cli(data_dir, database_urls, "audit", "new-key")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"rows up to {rows}" in done.stdout and "can no longer be verified" in done.stdout
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    made = key.read_bytes()
    # Asked again with a key in place: refused, the key untouched.
    again = cli(data_dir, database_urls, "audit", "new-key")
    assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
    assert key.read_bytes() == made
    # The trail names the new key already: a marker under it, then the row saying which
    # rows the lost key leaves unverifiable; the writers start again and go on after
    # them, and the walk names the first row of the lost key's.
    store = open_store(settings_for(data_dir, database_urls=database_urls))
    try:
        trail = list(store.audit_rows())
        assert len(trail) == rows + 2
        marker_row, named = trail[rows], trail[rows + 1]
        assert json.loads(marker_row.content) == {
            "algorithm": "hmac-sha256", "key_id": key_id(made), "kind": "audit.keyed",
        }  # fmt: skip
        assert json.loads(named.content) == {
            "key_id": key_id(made), "kind": NEW_KEY, "unverifiable_from": 1,
            "unverifiable_through": rows,
        }  # fmt: skip
        store.commit_batch([settle("k3", account="acc-pre")], now_us=2)
        after = list(store.audit_rows())
        report = verify(after, store.audit_key)
    finally:
        store.close()
    assert not any(_is_marker(r.content) for r in after[rows + 2 :])  # no second marker
    # The lost key's rows are walked for order and links, the rest verifies.
    assert report.broken is None, report.broken
    assert (report.unverifiable_from, report.unverifiable_through) == (1, rows)
    assert report.keyed_from == rows + 1
    assert report.good == len(after) - rows
    done = cli(data_dir, database_urls, "audit", "verify")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"rows 1 to {rows} were keyed with a key lost and replaced" in done.stdout


@SQLITE_AND_POSTGRES
def test_a_writer_refuses_a_key_that_is_not_the_trails(
    data_dir: Path, database_urls: list[str] | None
) -> None:
    """Another installation's key restored by mistake: a writer's first commit would
    start the chain again under it (a marker), and the trail's own key would no longer
    verify those rows. The writers refuse, naming the file, and write nothing; the
    checks still run (and report the chain broken); the right key lets them start."""
    keyed_trail(data_dir, database_urls)
    key = data_dir / KEY_FILE
    right = key.read_bytes()
    key.write_bytes(b"w" * 32)
    settings = settings_for(data_dir, database_urls=database_urls)
    with pytest.raises(AuditKeyMismatch, match="does not verify the audit trail's last row"):
        open_store(settings)
    done = cli(data_dir, database_urls, "serve", "--listen", "127.0.0.1:0")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{key} does not verify the audit trail's last row" in done.stderr, done.stderr
    assert key_id(b"w" * 32) in done.stderr and "nothing was written" in done.stderr
    # new-key does not replace a key in place, wrong or not.
    again = cli(data_dir, database_urls, "audit", "new-key")
    assert again.returncode == 2 and "move this file aside" in again.stderr, again.stderr
    checked = cli(data_dir, database_urls, "audit", "verify")
    assert checked.returncode == 1 and "BROKEN at row 1" in checked.stdout, checked.stdout
    key.write_bytes(right)
    store = open_store(settings)
    try:
        before = len(list(store.audit_rows()))
        store.commit_batch([settle("k4", account="acc-pre")], now_us=3)
        report = verify(store.audit_rows(), store.audit_key)
    finally:
        store.close()
    assert report.broken is None and report.good > before


def test_new_key_again_after_a_crash_before_the_key_file(data_dir: Path) -> None:
    """new-key died after its marker committed and before the key file was written: the
    file is missing again, the trail ends in a marker under a key nobody has; running
    it again writes another marker and the writers start under that key."""
    rows = keyed_trail(data_dir, None)
    (data_dir / KEY_FILE).unlink()
    lost = b"x" * 32
    store = open_store(settings_for(data_dir), key=lost)
    try:
        store.record_access(_new_key_row(lost, 1, rows))
    finally:
        store.close()
    done = cli(data_dir, None, "audit", "new-key")
    assert done.returncode == 0, (done.stdout, done.stderr)
    store = open_store(settings_for(data_dir))
    try:
        trail = list(store.audit_rows())
        store.commit_batch([settle("k5", account="acc-pre")], now_us=4)
    finally:
        store.close()
    assert len(trail) == rows + 4
    report = verify(trail, (data_dir / KEY_FILE).read_bytes())
    assert (report.broken, report.unverifiable_from, report.unverifiable_through) == (
        None, 1, rows + 2,
    )  # fmt: skip
    assert json.loads(trail[-1].content)["key_id"] == key_id((data_dir / KEY_FILE).read_bytes())


def test_a_trail_from_before_the_key_is_checked_without_one_and_keyed_at_the_next_start(
    data_dir: Path,
) -> None:
    """The upgrade from a build without the key (0.1.0): the checks create nothing and pass
    on the plain rows; the first writer makes the key."""
    plain_trail(settings_for(data_dir).sqlite_path, ['{"n":1}', '{"n":2}'])
    key = data_dir / KEY_FILE
    key.unlink()
    done = cli(data_dir, None, "audit", "verify")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "intact: 2 rows (no keyed row yet" in done.stdout
    assert not key.exists()
    store = open_store(settings_for(data_dir))
    try:
        assert key.exists()
        store.commit_batch([settle("u1")], now_us=1)
        report = verify(store.audit_rows(), store.audit_key)
    finally:
        store.close()
    assert (report.good, report.broken, report.keyed_from) == (4, None, 3)


def test_a_new_installation_still_makes_its_key(tmp_path: Path) -> None:
    store = open_store(settings_for(tmp_path))
    store.close()
    assert (tmp_path / KEY_FILE).exists()
    assert oct(os.stat(tmp_path / KEY_FILE).st_mode & 0o777) == "0o600"


def _trail(parts: list[tuple[bytes, list[dict[str, object]]]]) -> list[AuditRow]:
    """Rows appended as writers append them: each part's contents under its key (a
    marker first where the trail's last row is not that key's)."""
    rows: list[AuditRow] = []
    for key, contents in parts:
        head = rows[-1] if rows else None
        rows += [AuditRow(*r) for r in entries_rows(head, key, contents)]
    return rows


def _new_key_row(key: bytes, first: int, through: int) -> dict[str, object]:
    return {
        "kind": NEW_KEY, "key_id": key_id(key), "unverifiable_from": first,
        "unverifiable_through": through,
    }  # fmt: skip


LOST, NEW = b"L" * 32, b"N" * 32


def test_the_walk_passes_the_rows_of_a_replaced_key_and_nothing_else() -> None:
    """The rows of a key that `audit new-key` replaced are passed only when this key's
    marker and the row naming them follow them; a row altered after them, the naming
    row removed or naming other rows, or no such rows at all, are breaks."""
    old = [{"n": i} for i in range(5)]
    rows = _trail([(LOST, old), (NEW, [_new_key_row(NEW, 1, 5), {"n": 5}])])
    report = verify(rows, NEW)
    assert (report.broken, report.unverifiable_from, report.unverifiable_through) == (None, 1, 5)
    assert report.keyed_from == 6
    assert report.good == 3
    # Without the marker and its row: the first row of the other key is the break.
    report = verify(rows[:5], NEW)
    assert report.broken is not None and report.broken.seq == 1 and report.good == 0
    # A row after the marker altered.
    altered = [*rows[:7], dataclasses.replace(rows[7], content='{"n":55}')]
    report = verify(altered, NEW)
    assert report.broken is not None and report.broken.seq == 8
    # The naming row names other rows (or is forged): the lost rows are a break.
    wrong = _trail([(LOST, old), (NEW, [_new_key_row(NEW, 1, 3)])])
    assert verify(wrong, NEW).broken.seq == 1  # type: ignore[union-attr]
    forged = [*rows[:6], dataclasses.replace(rows[6], row_hash="f" * 64)]
    assert verify(forged, NEW).broken.seq == 1  # type: ignore[union-attr]
    # A row of the lost key's removed: the links break there.
    cut = [*rows[:2], *[dataclasses.replace(r, seq=r.seq - 1) for r in rows[3:]]]
    assert verify(cut, NEW).broken.seq == 3  # type: ignore[union-attr]


def test_plain_rows_before_a_replaced_key_still_verify() -> None:
    """A trail from before the key (plain rows), then a key's rows, lost and replaced:
    the plain rows still verify and an altered one is the break; only the lost key's
    rows (from its marker) are passed."""
    plain = [
        AuditRow(1, GENESIS, '{"p":1}', plain_hash(GENESIS, 1, '{"p":1}')),
    ]
    second = plain_hash(plain[0].row_hash, 2, '{"p":2}')
    plain.append(AuditRow(2, plain[0].row_hash, '{"p":2}', second))
    head = plain[-1]
    lost = [AuditRow(*r) for r in entries_rows(head, LOST, [{"n": 1}])]  # marker + a row
    rest = [AuditRow(*r) for r in entries_rows(lost[-1], NEW, [_new_key_row(NEW, 3, 4)])]
    rows = [*plain, *lost, *rest]
    report = verify(rows, NEW)
    assert (report.broken, report.unverifiable_from, report.unverifiable_through) == (None, 3, 4)
    assert report.keyed_from == 5
    assert report.good == 4  # the plain rows, the marker and the naming row
    altered = [dataclasses.replace(plain[0], content='{"p":9}'), *rows[1:]]
    assert verify(altered, NEW).broken.seq == 1  # type: ignore[union-attr]
    assert (
        "altered"
        in verify(
            [plain[0], dataclasses.replace(plain[1], content='{"p":9}'), *rows[2:]], NEW
        ).broken.problem
    )  # type: ignore[union-attr]
