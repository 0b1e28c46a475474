"""`quickpay doctor`: checks what `serve` needs before it is started, and says what is wrong.

Each check prints one line, `ok` or `FAIL`, with what it found; the exit status is 0
when every check passed and 1 otherwise (2 for settings that do not parse at all). It
reads the same flags and variables as `serve`, opens nothing for writing and takes no
lock, so it may run beside a running server (a container's HEALTHCHECK, an init
container, an operator at 3 a.m.).

The checks: the settings (and the files they name: gateways, engine rules); each
database (reachable, schema current, and `max_prepared_transactions` above 0 where
billing, AR and provisioning are separate databases committed by two-phase commit);
the free space under the data dir; the clock (within ``CLOCK_SKEW_MAX_S`` of each
PostgreSQL server's, and a warning when the kernel says it is not synchronised); and
each configured gateway's health endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import functools
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.commands import add_command
from quickpay_engine.config import Settings, settings_from
from quickpay_engine.errors import ConfigError
from quickpay_engine.store.sqlite_library import sqlite_uri

# Free space under the data dir below which the check fails: the log grows by a 64 MiB
# segment at a time, snapshots copy the ledger, and SQLite needs room to checkpoint.
DISK_FREE_MIN_BYTES = 1 << 30
# The clock may differ from a database server's by this much (payment and event times
# are taken from the engine's clock, retention and expiry from both).
CLOCK_SKEW_MAX_S = 2.0
# How long one gateway's health endpoint or one database connection may take.
PROBE_TIMEOUT_S = 5.0
# adjtimex(2) answers TIME_ERROR (5) while the kernel considers the clock unsynchronised.
_TIME_ERROR = 5


class Doubtful(Exception):
    """What a check found is worth a look but does not stop `serve` (a warning)."""


@dataclass(frozen=True)
class Check:
    """One check's verdict: ok, ok with a warning, or failed."""

    name: str
    ok: bool
    detail: str
    warning: bool = False

    def line(self) -> str:
        verdict = "FAIL" if not self.ok else "warn" if self.warning else "ok  "
        return f"{verdict}  {self.name}: {self.detail}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "doctor", "check the settings, databases, disk, clock and gateways serve needs"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ConfigError as err:
        print(Check("settings", False, str(err)).line())
        return 1
    checks = diagnose(settings)
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"quickpay doctor: {len(failed)} problem(s): {', '.join(failed)}")
        return 1
    print("quickpay doctor: everything checked is ok")
    return 0


def diagnose(settings: Settings) -> list[Check]:
    """Every check, in order; none raises."""
    checks = [_settings(settings)]
    checks += _databases(settings)
    checks.append(_disk(settings.data_dir))
    checks += _clock(settings)
    checks += asyncio.run(_gateways(settings))
    return checks


def _guarded(name: str, check: Callable[[], str]) -> Check:
    """Runs ``check`` (which returns what it found, or raises saying what is wrong)."""
    try:
        return Check(name, True, check())
    except Doubtful as err:
        return Check(name, True, str(err), warning=True)
    except Exception as err:
        return Check(name, False, str(err) or type(err).__name__)


def _settings(settings: Settings) -> Check:
    def check() -> str:
        from quickpay_engine._engine import Engine
        from quickpay_engine.gateways.config import load_config

        found = [f"listen {settings.listen}", f"data dir {settings.data_dir}"]
        if settings.gateways is not None:
            gateways = load_config(settings.gateways)
            found.append(f"{len(gateways.gateways)} gateways in {settings.gateways}")
        if settings.engine_config is not None:
            try:
                Engine(settings.engine_config.read_text())
            except Exception as err:
                raise ConfigError(f"--engine-config {settings.engine_config}: {err}") from None
            found.append(f"engine rules {settings.engine_config}")
        return ", ".join(found)

    return _guarded("settings", check)


def _databases(settings: Settings) -> list[Check]:
    if not settings.postgres:
        return [_guarded("database sqlite", lambda: _sqlite(settings.sqlite_path))]
    names = ("billing", "ar", "provisioning")
    urls = dict(zip(names, settings.domain_urls, strict=True))
    two_phase = len(set(urls.values())) > 1
    checks = []
    for url in dict.fromkeys(urls.values()):
        domains = "+".join(n for n, u in urls.items() if u == url)
        checks.append(_guarded(f"database {domains}", functools.partial(_postgres, url, two_phase)))
    return checks


def _sqlite(path: Path) -> str:
    from quickpay_engine.store.sqlite import SCHEMA_VERSION

    if not path.exists():
        if not _nearest_dir(path.parent).is_dir():
            raise ConfigError(f"{path} does not exist and its directory cannot be made")
        return f"{path} does not exist yet; serve creates it (import subscribers first)"
    # Read-only: a running server's file is looked at, never changed or locked for long.
    with sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=PROBE_TIMEOUT_S) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (quick,) = db.execute("PRAGMA quick_check").fetchone()
    db.close()
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path} holds schema version {version}; this build uses {SCHEMA_VERSION}"
        )
    if quick != "ok":
        raise ConfigError(f"{path} fails SQLite's quick_check: {quick}")
    return f"{path}, schema {version}, quick_check ok"


def _postgres(url: str, two_phase: bool) -> str:
    import psycopg

    from quickpay_engine.store.pg_migrations import applied_version, latest

    with psycopg.connect(url, connect_timeout=int(PROBE_TIMEOUT_S), autocommit=True) as conn:
        have = applied_version(conn)
        prepared = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])  # type: ignore[index]
        where = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    if have != latest():
        raise ConfigError(
            f"{where} is at schema version {have}; this build needs {latest()}:"
            " run `quickpay db migrate` with the same URLs"
        )
    found = f"{where}, schema {have}"
    if two_phase:
        if prepared <= 0:
            raise ConfigError(
                f"{where}: max_prepared_transactions is 0, and billing, AR and provisioning"
                " are separate databases committed by two-phase commit: set it above 0"
                " (and restart PostgreSQL)"
            )
        found += f", max_prepared_transactions {prepared}"
    return found


def _nearest_dir(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(data_dir: Path) -> Check:
    def check() -> str:
        where = _nearest_dir(data_dir)
        usage = shutil.disk_usage(where)
        free = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB under {where}"
        if usage.free < DISK_FREE_MIN_BYTES:
            raise ConfigError(f"only {free}; at least {DISK_FREE_MIN_BYTES >> 30} GiB needed")
        return free

    return _guarded("disk", check)


def _clock(settings: Settings) -> list[Check]:
    checks = [_guarded("clock", _kernel_clock)]
    if settings.postgres:
        for url in dict.fromkeys(settings.domain_urls):
            checks.append(_guarded("clock vs database", functools.partial(_database_skew, url)))
    return checks


def _kernel_clock() -> str:
    """Whether the kernel considers the clock synchronised (adjtimex), where it says."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return "cannot ask the kernel (no libc found): not checked"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    buffer = ctypes.create_string_buffer(512)  # struct timex, with room to spare
    state = libc.adjtimex(buffer)
    if state == -1:
        return "the kernel did not answer adjtimex: not checked"
    if state == _TIME_ERROR:
        # A warning, not a failure: in a container the kernel's flag is the host's, and
        # the skew against each database (checked next) is what payments depend on.
        raise Doubtful(
            "the kernel reports the clock unsynchronised (no NTP or chrony on this host?):"
            " payment times, retention and hold expiry depend on it"
        )
    return "synchronised (per the kernel)"


def _database_skew(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=int(PROBE_TIMEOUT_S), autocommit=True) as conn:
        before = time.time()
        (theirs,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()  # type: ignore[misc]
        after = time.time()
        where = f"{conn.info.host}:{conn.info.port}"
    skew = float(theirs) - (before + after) / 2
    if abs(skew) > CLOCK_SKEW_MAX_S:
        raise ConfigError(
            f"{where}'s clock is {skew:+.1f} s from this host's (at most"
            f" {CLOCK_SKEW_MAX_S:g} s): fix the time service of one of them"
        )
    return f"{where} within {abs(skew):.3f} s"


async def _gateways(settings: Settings) -> list[Check]:
    if settings.gateways is None:
        return [Check("gateways", True, "none configured: serve starts the bundled simulators")]
    from quickpay_engine.gateways.client import GatewayClient
    from quickpay_engine.gateways.config import load_config

    try:
        config = load_config(settings.gateways)
    except Exception as err:
        return [Check("gateways", False, str(err))]

    async def one(gateway: object) -> Check:
        name = getattr(gateway, "name", "?")
        url = getattr(gateway, "url", "")
        client = GatewayClient(gateway)  # type: ignore[arg-type]
        try:
            await client.start()
            healthy = await client.health(PROBE_TIMEOUT_S)
        except Exception as err:
            return Check(f"gateway {name}", False, f"{url}: {err}")
        finally:
            await client.close()
        if not healthy:
            return Check(f"gateway {name}", False, f"{url}/health did not answer OK")
        return Check(f"gateway {name}", True, f"{url} healthy")

    return list(await asyncio.gather(*(one(g) for g in config.gateways)))
