"""One engine per PostgreSQL database (DESIGN.md invariant 8): a session-level advisory
lock in every database the engine writes (billing, AR, provisioning), held on a
connection of its own for as long as the engine runs.

The key is two int4: ``(NAMESPACE, partition)``; today every engine is partition 0, so
one engine owns a database's accounts. Partitioned scale-out gives each partition its
own key in the same namespace (``lock_key(partition)``). In ``pg_locks`` the lock shows
as ``locktype = 'advisory'``, ``classid = NAMESPACE``, ``objid = partition``,
``objsubid = 2``.

A second engine is refused at start, naming the holder as ``pg_stat_activity`` shows it:
its ``application_name`` (the command, its pid and host), the client address and the
backend pid. Should the lock's connection be lost (the database restarted, failed over,
or the session was terminated), the engine is fenced: ``check`` raises ``NotOwner``
(UNAVAILABLE to a caller: retry with the same key), and every settlement write proves in
its own transaction that this engine's session holds the lock (``prove``), so nothing
settles on a lock that may have passed to another engine. A watcher thread retakes the
lock by itself and the fence lifts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Sequence

import psycopg

from quickpay_engine.errors import NotOwner
from quickpay_engine.store.ownership import InUse
from quickpay_engine.threads import name_os_thread

log = logging.getLogger(__name__)

# The advisory lock namespace of quickpay-engine's ownership locks: "qpow" as an int4.
NAMESPACE = 0x71706F77
# The partition every engine owns until partitioned scale-out.
PARTITION = 0
# The lock's connections are checked this often, and at once when the server speaks.
HEARTBEAT_S = 1.0
# A lost lock is tried again this often.
RETAKE_S = 0.5
# PostgreSQL keeps this many bytes of an application_name.
APPLICATION_NAME_MAX = 63
# libpq settings of the lock's connections: a dead peer is noticed within seconds, not
# after the kernel's two hours.
_CONNECT = {
    "autocommit": True,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
}
_HOLDER = (
    "SELECT a.application_name, coalesce(host(a.client_addr), 'local socket'), a.pid,"
    " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
    " AND l.classid = %s::oid AND l.objid = %s::oid"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_HELD_BY = (
    "SELECT EXISTS (SELECT FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.objsubid = 2 AND l.classid = %s::oid AND l.objid = %s::oid AND l.pid = %s"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)


def lock_key(partition: int = PARTITION) -> tuple[int, int]:
    """The advisory lock's two keys for a partition."""
    if not 0 <= partition < 2**31:
        raise ValueError(f"partition {partition}: expected 0 to 2**31 - 1")
    return NAMESPACE, partition


def database_name(url: str) -> str:
    """``database NAME on HOST:PORT``, for messages (no user, no password)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
    return f"database {info.get('dbname', '?')} on {where}"


class PgOwner:
    """The advisory locks of one engine, one session per distinct database."""

    def __init__(self, urls: Sequence[str], command: str, partition: int = PARTITION) -> None:
        self._urls = list(dict.fromkeys(urls))
        self._key = lock_key(partition)
        name = f"{command} pid {os.getpid()} on {socket.gethostname()}"
        self.application_name = name.encode()[:APPLICATION_NAME_MAX].decode(errors="ignore")
        # url -> (the lock's session, its backend pid); only the watcher thread (or the
        # thread that called acquire, before the watcher starts) uses the sessions.
        self._sessions: dict[str, tuple[psycopg.Connection, int]] = {}
        # Written by the watcher, read by the store's and the event loop's threads.
        self._pids: dict[str, int] = {}
        self._held = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._watcher: threading.Thread | None = None
        self._last_refusal = ""

    @property
    def held(self) -> bool:
        """True while every lock is held, as last seen."""
        return self._held

    def acquire(self) -> None:
        """Takes every lock without waiting; raises ``InUse`` naming the holder of the
        first one another engine has (and takes none), or psycopg's error."""
        try:
            for url in self._urls:
                self._take(url)
        except BaseException:
            self._drop()
            raise
        self._pids = {url: pid for url, (_, pid) in self._sessions.items()}
        self._held = True

    def _take(self, url: str) -> None:
        conn = psycopg.connect(url, application_name=self.application_name, **_CONNECT)
        try:
            (taken,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._key).fetchone()
            if not taken:
                row = conn.execute(_HOLDER, self._key).fetchone()
                who = (
                    f"{row[0] or 'a session with no application_name'} (client {row[1]},"
                    f" backend pid {row[2]}, since {row[3]})"
                    if row
                    else "another session (gone since)"
                )
                raise InUse(f"{database_name(url)} is in use by {who}; stop it first")
        except BaseException:
            conn.close()
            raise
        self._sessions[url] = (conn, conn.info.backend_pid)

    def _drop(self) -> None:
        """Closes every lock session, which lets its lock go."""
        self._held = False
        self._pids = {}
        for conn, _ in self._sessions.values():
            conn.close()
        self._sessions.clear()

    def check(self) -> None:
        """The fence, once per batch: raises ``NotOwner`` while a lock is not held."""
        if not self._held:
            raise NotOwner(
                "this engine does not hold its databases' ownership lock (connection lost);"
                " it settles nothing until it holds it again: retry with the same"
                " idempotency_key"
            )

    def prove(self, url: str, conn: psycopg.Connection) -> None:
        """Inside a settlement's transaction on ``conn`` (a store connection to ``url``):
        raises ``NotOwner`` unless this engine's lock session still holds the lock, so
        the transaction writes nothing on ownership that may have passed on."""
        self.check()
        pid = self._pids.get(url)
        if pid is None:
            raise NotOwner(f"{database_name(url)} is not one this engine holds")
        (held,) = conn.execute(_HELD_BY, (*self._key, pid)).fetchone()
        if not held:
            raise NotOwner(
                f"{database_name(url)}: this engine's ownership lock is gone; it settles"
                " nothing until it holds it again: retry with the same idempotency_key"
            )

    def watch(self) -> None:
        """Starts the watcher: notices a lost lock at once (its connection closes) or
        within a heartbeat, fences, and retakes the lock in the background."""
        self._watcher = threading.Thread(target=self._watch, name="pg-owner", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        name_os_thread()
        while not self._stop.is_set():
            if self._held:
                self._heartbeat()
            else:
                self._retake()

    def _heartbeat(self) -> None:
        fds = [conn.fileno() for conn, _ in self._sessions.values()]
        with contextlib.suppress(OSError, ValueError):
            select.select([*fds, self._wake_r], [], [], HEARTBEAT_S)
        if self._stop.is_set():
            return
        try:
            for conn, _ in self._sessions.values():
                conn.execute("SELECT 1")
        except psycopg.Error as err:
            self._drop()
            log.error(
                "lost the ownership lock (%s): fenced, payments answer UNAVAILABLE until"
                " it is retaken",
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
            )

    def _retake(self) -> None:
        try:
            self.acquire()
        except (InUse, psycopg.Error) as err:
            why = str(err).strip() or type(err).__name__
            if why != self._last_refusal:  # once per reason, not twice a second
                log.warning("ownership lock not retaken, trying every %.1f s: %s", RETAKE_S, why)
                self._last_refusal = why
            self._stop.wait(RETAKE_S)
            return
        self._last_refusal = ""
        log.warning("ownership lock retaken in %d database(s): settling again", len(self._urls))

    def close(self) -> None:
        """Stops the watcher and lets every lock go; again, it does nothing more."""
        if not self._stop.is_set():
            self._stop.set()
            os.write(self._wake_w, b"x")
            if self._watcher is not None:
                self._watcher.join()
            os.close(self._wake_r)
            os.close(self._wake_w)
        self._drop()
