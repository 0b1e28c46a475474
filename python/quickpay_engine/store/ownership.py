"""One owner of a data dir: an exclusive OS lock on ``DATA_DIR/LOCK``, held for the life
of the process that writes there (DESIGN.md invariant 8).

The lock is ``flock(2)``: the kernel drops it when the process ends however it ends
(SIGKILL included), so a lock is never stale, and a lock taken through a second open
file description conflicts even within one process. (POSIX ``fcntl`` locks would not:
they belong to the process, and closing any descriptor of the file drops them, which is
also why the SQLite file itself is never opened here, see ``lock_path_of``.)

The file records who holds it, one line of JSON: the command, its pid, its host and when
it started (RFC 3339, UTC). A process refused the lock reads that line to name the
holder. The record is only a label: the lock is what counts, and a record left by a
killed holder is overwritten by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quickpay_engine.errors import QuickpayError

# The lock file in a data dir.
LOCK_FILE = "LOCK"
# Beside a SQLite file outside the data dir: PATH + this.
SQLITE_LOCK_SUFFIX = ".lock"
# A holder record is one short line; more is not read.
RECORD_BYTES_MAX = 4_096


class InUse(QuickpayError):
    """Another process holds the data dir (or database) this command would write."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock, as its record says."""

    command: str
    pid: int
    host: str
    since: str  # RFC 3339, UTC

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.since})"

    def encode(self) -> bytes:
        fields = {"command": self.command, "pid": self.pid, "host": self.host}
        return (json.dumps({**fields, "since": self.since}) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        """The record, or None when it is empty or unreadable (a holder that has the lock
        but has not written its record yet, or a file of another program)."""
        try:
            fields = json.loads(data.decode())
            return cls(str(fields["command"]), int(fields["pid"]), str(fields["host"]),
                       str(fields["since"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None


def this_process(command: str) -> Holder:
    """The record of the calling process, started now."""
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Holder(command, os.getpid(), socket.gethostname(), since)


class DirLock:
    """An exclusive lock on one file, held until ``release`` (or the process ends)."""

    def __init__(self, path: Path, what: str, holder: Holder) -> None:
        """Takes the lock at ``path`` without waiting, creating the file (and its
        directory) if needed, and writes ``holder`` into it. ``what`` names what the
        lock guards in the refusal, e.g. ``data dir ./var``. Raises ``InUse`` naming the
        holder when another process has it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            held_by = Holder.decode(os.pread(self._fd, RECORD_BYTES_MAX, 0))
            os.close(self._fd)
            self._fd = None
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InUse(f"{what}: cannot lock {path}: {err.strerror}") from None
            who = held_by.describe() if held_by else "another process (no holder recorded)"
            raise InUse(f"{what} is in use by {who}; stop it first") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode(), 0)

    def release(self) -> None:
        """Clears the record and lets the lock go (closing the file does that)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def lock_path_of(sqlite_file: Path) -> Path:
    """The lock of a SQLite file: a file beside it, never the database file itself. A
    second descriptor on the database, closed, would drop SQLite's own POSIX locks on it
    (SQLite's "How To Corrupt An SQLite Database File", section 2.2)."""
    return sqlite_file.with_name(sqlite_file.name + SQLITE_LOCK_SUFFIX)


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def guarded_paths(data_dir: Path, sqlite_file: Path | None) -> list[tuple[Path, str]]:
    """(lock file, what it guards) for a data dir and, when it lies outside the data dir,
    the SQLite file the command opens."""
    locks = [(data_dir / LOCK_FILE, f"data dir {data_dir}")]
    if sqlite_file is not None and not _inside(sqlite_file, data_dir):
        locks.append((lock_path_of(sqlite_file), f"database {sqlite_file}"))
    return locks


@contextlib.contextmanager
def hold(data_dir: Path, sqlite_file: Path | None, command: str) -> Iterator[list[DirLock]]:
    """Holds the data dir (and an outside SQLite file) for the ``with`` block; refused
    with ``InUse`` before anything else is touched when another process holds either."""
    holder = this_process(command)
    taken: list[DirLock] = []
    try:
        for path, what in guarded_paths(data_dir, sqlite_file):
            taken.append(DirLock(path, what, holder))
        yield taken
    finally:
        for lock in reversed(taken):
            lock.release()
