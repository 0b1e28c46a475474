"""The audit key (audit.key in the data dir) lost while the trail has keyed rows: the
read-only checks fail naming the file and create nothing; the writers (serve among them)
refuse to start, since a new key would break the chain, until the operator says so with
`quickpay audit new-key`. A trail from before the key (0.1.0) or an empty one still gets
its key made at the first writer's start, as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import settings_for
from quickpay_engine.config import SQLITE_FILE
from quickpay_engine.errors import ConfigError
from quickpay_engine.storage import open_store
from quickpay_engine.store.audit import KEY_FILE, verify
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
    assert f"rows 1 to {rows}" in done.stdout and "can no longer be verified" in done.stdout
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    made = key.read_bytes()
    # Asked again with a key in place: refused, the key untouched.
    again = cli(data_dir, database_urls, "audit", "new-key")
    assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
    assert key.read_bytes() == made
    # The writers start again; the next commit starts the chain under the new key behind a
    # marker row, and the walk names the first row of the lost key's.
    store = open_store(settings_for(data_dir, database_urls=database_urls))
    try:
        store.commit_batch([settle("k3", account="acc-pre")], now_us=2)
        report = verify(store.audit_rows(), store.audit_key)
    finally:
        store.close()
    assert report.broken is not None and report.broken.seq == 1
    assert "another audit key" in report.broken.problem


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
