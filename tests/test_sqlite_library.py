"""One SQLite library per process (DESIGN.md, src/store/): the start-up check reads the
process's memory maps and refuses two copies of SQLite."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from quickpay_engine.errors import StoreError
from quickpay_engine.store import SqliteStore
from quickpay_engine.store.sqlite_library import require_one_library, sqlite_libraries, sqlite_uri

SYSTEM = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6"
OTHER = "/opt/engine/lib/libsqlite3.so.0.8.7"
BINDING = "/usr/lib/python3.11/lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so"


def maps(*mapped: tuple[str, str, str]) -> str:
    """A /proc/PID/maps text: one line per (device, inode, path), plus the noise a real
    one has (anonymous mappings, the stack, a binding module)."""
    lines = [
        "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]",
        "7f250ed00000-7f250ed2e000 rw-p 00000000 00:00 0 ",
        f"7f250ee8d000-7f250ee94000 r--p 00000000 fe:00 21533                      {BINDING}",
    ]
    for n, (device, inode, path) in enumerate(mapped):
        lines.append(f"7f25{n:04x}e000-7f25{n:04x}f000 r-xp 00026000 {device} {inode}   {path}")
    lines.append("7ffd5a0e0000-7ffd5a101000 rw-p 00000000 00:00 0                  [stack]")
    return "\n".join(lines) + "\n"


def test_one_library_in_several_segments_is_one() -> None:
    text = maps(*[("fe:00", "326791", SYSTEM)] * 5)
    assert sqlite_libraries(text) == [SYSTEM]


def test_two_copies_are_found_and_the_binding_module_is_not_a_copy() -> None:
    text = maps(("fe:00", "326791", SYSTEM), ("fe:01", "77", OTHER + " (deleted)"))
    assert sqlite_libraries(text) == [OTHER, SYSTEM]
    assert sqlite_libraries(maps()) == []


def test_one_file_under_two_names_is_one_library() -> None:
    text = maps(("fe:00", "326791", SYSTEM), ("fe:00", "326791", "/lib/libsqlite3.so.0"))
    assert len(sqlite_libraries(text)) == 1


def test_the_store_refuses_to_open_beside_two_copies(tmp_path: Path, monkeypatch) -> None:
    crafted = tmp_path / "maps"
    crafted.write_text(maps(("fe:00", "326791", SYSTEM), ("fe:01", "77", OTHER)))
    with pytest.raises(StoreError, match=r"^2 SQLite libraries are loaded in this process"):
        require_one_library(crafted)
    monkeypatch.setattr(
        "quickpay_engine.store.sqlite.require_one_library",
        lambda: require_one_library(crafted),
    )
    with pytest.raises(StoreError, match="break SQLite's locking"):
        SqliteStore(tmp_path / "db" / "quickpay.sqlite3")
    assert not (tmp_path / "db").exists(), "refused before the file was touched"


def test_this_process_has_one_library() -> None:
    require_one_library()  # the real maps: Python's sqlite3 only


def test_sqlite_uri_opens_a_file_whose_directory_name_holds_uri_characters(
    tmp_path: Path,
) -> None:
    # Spliced into "file:PATH?mode=ro" as it is, "#" would end the path at "q ".
    path = tmp_path / "q #1 ?x %41" / "billing.sqlite3"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.execute("INSERT INTO t VALUES (7)")
        db.commit()
    for mode in ("ro", "rw"):
        with contextlib.closing(sqlite3.connect(sqlite_uri(path, mode), uri=True)) as db:
            assert db.execute("SELECT a FROM t").fetchall() == [(7,)]
