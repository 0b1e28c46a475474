"""One SQLite library per process: two copies mapped into one process break SQLite's POSIX
locking (each copy keeps its own table of the locks the process holds, and a close in
one drops the other's; SQLite's "How To Corrupt An SQLite Database File", section 2.2).

Today only Python's ``sqlite3`` opens the engine's file. Should the Rust core open it as
well, it must link the same shared ``libsqlite3``; ``require_one_library`` refuses to go
on when the process has mapped more than one. It sees shared libraries only: a copy
compiled into another module (rusqlite's "bundled" feature) does not show in the maps,
which is why the core must not use that feature.
"""

from __future__ import annotations

import re
from pathlib import Path

from quickpay_engine.errors import StoreError

MAPS = Path("/proc/self/maps")

# The file name of a shared SQLite library (libsqlite3.so.0.8.6, libsqlcipher.so.1), not
# of a module that merely binds one (_sqlite3.cpython-311-x86_64-linux-gnu.so).
_LIBRARY = re.compile(r"lib(sqlite3?|sqlcipher)[\w.+-]*\.so(\.[\d.]+)?")


def sqlite_uri(path: Path, mode: str) -> str:
    """The URI that opens ``path`` with ``mode`` (``ro``, ``rw``) through ``sqlite3.connect(...,
    uri=True)``, the path percent-encoded: spliced in as it is, a data dir whose name holds
    ``#``, ``?`` or ``%`` would open another file."""
    return f"{path.resolve().as_uri()}?mode={mode}"


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` for reading without writing a byte of it, nor of its
    ``-wal``, for a checker (`verify`, `audit verify`) that holds the data dir's lock, so
    that no writer changes the file meanwhile (cli.owning).

    A read-write connection would not do: the last one to close checkpoints the ``-wal``
    into the database and removes it. ``mode=ro`` writes neither, but on a database
    without a ``-wal`` it creates an empty ``-wal`` and a ``-shm`` and leaves them behind;
    there, with nothing in a log to read, the file is opened ``immutable`` (no lock, no
    ``-shm``, no ``-wal``). With a ``-wal`` (a writer killed before its last close), whose
    transactions an immutable open would miss, ``mode=ro`` reads through it and changes at
    most the ``-shm``, the log's index, which it creates if absent."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return sqlite_uri(path, "ro")
    return sqlite_uri(path, "ro") + "&immutable=1"


def sqlite_libraries(maps: str) -> list[str]:
    """The distinct SQLite libraries mapped, as their paths, from the text of a
    /proc/PID/maps. One file mapped at several addresses (its segments) is one library;
    two paths are two libraries unless they are the same file (device and inode)."""
    seen: dict[tuple[str, str], str] = {}
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6:
            continue  # an anonymous mapping: no path
        _, _, _, device, inode, path = fields
        path = path.removesuffix(" (deleted)")
        if _LIBRARY.fullmatch(path.rsplit("/", 1)[-1]):
            seen.setdefault((device, inode), path)
    return sorted(set(seen.values()))


def require_one_library(maps_file: Path = MAPS) -> None:
    """Raises ``StoreError`` naming them when this process has more than one SQLite
    library mapped; does nothing where there is no /proc (not Linux)."""
    try:
        maps = maps_file.read_text()
    except OSError:
        return
    found = sqlite_libraries(maps)
    if len(found) > 1:
        raise StoreError(
            f"{len(found)} SQLite libraries are loaded in this process ({', '.join(found)}):"
            " two copies in one process break SQLite's locking and can corrupt the"
            " database; build the engine against the one the Python sqlite3 module loads"
        )
