"""Settings shared between subcommands: flags with QUICKPAY_* environment fallbacks.

``FLAGS`` describes each shared flag once and ``COMMAND_FLAGS`` says which commands
take it, so a command's --help lists only what it reads. The flag names and their
variables are fixed; scripts rely on them.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.errors import ConfigError
from quickpay_engine.settlement.admission import QUEUE_WAIT_MAX_MS, QUEUE_WAIT_MAX_MS_LIMIT

DEFAULT_LISTEN = "127.0.0.1:50051"
# The transport's bound on calls that have arrived but that the server's event loop has
# not yet taken, per RPC method (grpc-core's request matcher, server.py's
# ``transport_options``): past it a call is refused in grpc-core, in C++, before any
# Python runs for it. grpc's own default is 3,000, seconds of waiting at this engine's
# rate; 512 is about half a second at the ~1,100 payments/s of a quiet two-core host,
# one to two at what a loaded one answered (benches/RESULTS.md, "grpc-core's bound on
# calls not yet taken"): 128 cut the overloaded p99 more, but a closed loop of 256
# callers then heard CANCELLED for most of its calls, and a caller that did not cancel
# reads CANCELLED as nothing standard. A closed loop of more callers than this sees it.
PENDING_CALLS_MAX = 512
PENDING_CALLS_MAX_LIMIT = 100_000
# Whole seconds a call may wait untaken before grpc-core cancels it (checked when the
# server next takes a call of its method); grpc's own default is 30. Not 1: a busy
# host's event loop stalls for a second now and then (a checkpoint, the collector), and
# every call caught behind it would be cancelled.
PENDING_CALL_WAIT_MAX_S = 5
PENDING_CALL_WAIT_MAX_S_LIMIT = 3_600
FRAUD_MODES = ("enforce", "observe")
DEFAULT_DATA_DIR = "./var"
SQLITE_FILE = "quickpay.sqlite3"
# The subdirectory of the data dir holding the engine's write-ahead ledger (its log
# segments and snapshots). Named once: `serve` writes it and every offline command
# (verify, recover, wal verify, wal inspect) reads it from --data-dir alone.
LEDGER_SUBDIR = "ledger"
PG_SCHEMES = ("postgresql://", "postgres://")
# A NATS subject to consume: dot-separated tokens, '*' for one token, '>' for the rest.
_SUBJECT = re.compile(r"([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?|>")
# The per-domain database flags: (flag, variable, domain as the help text says it).
DOMAIN_URL_FLAGS = (
    ("--billing-url", "QUICKPAY_BILLING_URL", "billing, payment history, audit and outbox"),
    ("--ar-url", "QUICKPAY_AR_URL", "the accounts-receivable ledger"),
    ("--provisioning-url", "QUICKPAY_PROVISIONING_URL", "provisioning rules and changes"),
)


@dataclass(frozen=True)
class Settings:
    """Where the engine listens and keeps its state."""

    listen: str
    data_dir: Path
    database_url: str
    gateways: Path | None
    nats_url: str | None = None
    # "enforce": fraud decisions decline payments; "observe": every payment is scored
    # and the assessment returned and stored, but nothing is declined for it (a model on
    # trial, in shadow).
    fraud_mode: str = "enforce"
    # The engine's validation rules (limits, method matrix, assertion keys) as JSON;
    # None: the defaults of `quickpay_engine.default_engine_config()`.
    engine_config: Path | None = None
    # Where each domain lives (PostgreSQL only); empty: ``database_url``. When they name
    # different databases a batch commits across them with two-phase commit.
    billing_url: str = ""
    ar_url: str = ""
    provisioning_url: str = ""
    # A payment expected to wait longer than this in the settlement queue, or past its
    # caller's deadline, is refused before any work (settlement/admission.py); 0: only
    # a full queue refuses.
    queue_wait_max_ms: float = QUEUE_WAIT_MAX_MS
    # Calls of one RPC method arrived but not yet taken by the server's event loop: past
    # this grpc-core refuses every new one (CANCELLED, before any work); and a call left
    # untaken longer than the wait is cancelled (server.py, ``transport_options``).
    # Open streams are taken, so they never count.
    pending_calls_max: int = PENDING_CALLS_MAX
    pending_call_wait_max_s: int = PENDING_CALL_WAIT_MAX_S
    # HOST:PORT of the Prometheus metrics and the HTTP probes; empty: not served.
    metrics_listen: str = ""
    # The ledger's capacity (ledger_limits.py); None: what the data dir keeps, else the
    # defaults.
    ledger_payments_max: int | None = None
    ledger_transfers_max: int | None = None
    ledger_retention_s: int | None = None
    # The NATS JetStream subject of subscriber changes serve consumes (a durable
    # consumer, settlement/subscriber_feed.py); None: no feed.
    subscriber_events: str | None = None

    @property
    def postgres(self) -> bool:
        """True when the store is PostgreSQL rather than the embedded SQLite file."""
        return self.database_url.startswith(PG_SCHEMES)

    @property
    def domain_urls(self) -> tuple[str, str, str]:
        """(billing, AR, provisioning) URLs, each defaulting to ``database_url``."""
        return (
            self.billing_url or self.database_url,
            self.ar_url or self.database_url,
            self.provisioning_url or self.database_url,
        )

    @property
    def ledger_dir(self) -> Path:
        """The write-ahead ledger's directory: log segments and snapshots."""
        return self.data_dir / LEDGER_SUBDIR

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file named by ``database_url`` (only for sqlite URLs)."""
        if not self.database_url.startswith("sqlite:///"):
            raise ConfigError(f"--database-url {self.database_url!r} is not a sqlite:/// URL")
        return Path(self.database_url.removeprefix("sqlite:///"))


@dataclass(frozen=True)
class Flag:
    """One setting on the command line: its flag, its QUICKPAY_* variable (read when
    the flag is not given) and its default, said in the help the way scripts see it."""

    flag: str
    variable: str
    default: str | None
    what: str
    # How the help states the default when it is not a plain value (None: `default`).
    default_text: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value in."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def help(self) -> str:
        """The help line: what the flag sets, its variable and its default."""
        return f"{self.what} ({self.variable}, default {self.default_text or self.default})"


# Every setting shared between commands. Flag and variable names are fixed: scripts
# rely on them.
FLAGS: dict[str, Flag] = {
    "listen": Flag(
        "--listen", "QUICKPAY_LISTEN", DEFAULT_LISTEN, "HOST:PORT of the engine's gRPC server"
    ),
    "data_dir": Flag(
        "--data-dir",
        "QUICKPAY_DATA_DIR",
        DEFAULT_DATA_DIR,
        "the engine's state: write-ahead ledger, SQLite file, gateway simulators' books",
    ),
    "database_url": Flag(
        "--database-url",
        "QUICKPAY_DATABASE_URL",
        None,
        "sqlite:///PATH or postgresql://...",
        default_text=f"sqlite:///DATA_DIR/{SQLITE_FILE}",
    ),
    **{
        flag.removeprefix("--").replace("-", "_"): Flag(
            flag,
            variable,
            None,
            f"postgresql://... for {domain}; databases that differ commit together by"
            " two-phase commit",
            default_text="--database-url",
        )
        for flag, variable, domain in DOMAIN_URL_FLAGS
    },
    "nats_url": Flag(
        "--nats-url",
        "QUICKPAY_NATS_URL",
        None,
        "nats://HOST:PORT to publish settlement events to JetStream",
        default_text="none: events stay in the outbox for WatchSettlements",
    ),
    "subscriber_events": Flag(
        "--subscriber-events",
        "QUICKPAY_SUBSCRIBER_EVENTS",
        None,
        "NATS JetStream subject of subscriber changes to apply live (a durable consumer;"
        " needs --nats-url)",
        default_text="none: changes come only through UpsertSubscribers",
    ),
    "fraud_mode": Flag(
        "--fraud-mode",
        "QUICKPAY_FRAUD_MODE",
        "enforce",
        "enforce: fraud decisions decline payments; observe: score and report only",
        choices=FRAUD_MODES,
    ),
    "engine_config": Flag(
        "--engine-config",
        "QUICKPAY_ENGINE_CONFIG",
        None,
        "JSON file of validation rules: limits, method matrix, subscriber-assertion keys",
        default_text="the built-in rules",
    ),
    "queue_wait_max_ms": Flag(
        "--queue-wait-max-ms",
        "QUICKPAY_QUEUE_WAIT_MAX_MS",
        f"{QUEUE_WAIT_MAX_MS:g}",
        "a payment expected to wait longer than this in the settlement queue, or past its"
        " deadline, is refused RESOURCE_EXHAUSTED before any work; 0: refused only when"
        " the queue is full",
    ),
    "pending_calls_max": Flag(
        "--pending-calls-max",
        "QUICKPAY_PENDING_CALLS_MAX",
        str(PENDING_CALLS_MAX),
        "calls of one RPC method the transport holds before the server takes them; past"
        " it every new one is refused CANCELLED in grpc-core before any work (open"
        " streams do not count)",
    ),
    "pending_call_wait_max_s": Flag(
        "--pending-call-wait-max-s",
        "QUICKPAY_PENDING_CALL_WAIT_MAX_S",
        str(PENDING_CALL_WAIT_MAX_S),
        "whole seconds a call may wait in the transport before the server takes it;"
        " longer, it is cancelled before any work",
    ),
    "metrics_listen": Flag(
        "--metrics-listen",
        "QUICKPAY_METRICS_LISTEN",
        None,
        "HOST:PORT of the Prometheus /metrics and the /livez and /readyz probes (HTTP)",
        default_text="none: not served",
    ),
    "ledger_payments_max": Flag(
        "--ledger-payments-max",
        "QUICKPAY_LEDGER_PAYMENTS_MAX",
        None,
        "payments the ledger holds in its retention window; past it, RESOURCE_EXHAUSTED",
        default_text="what the data dir keeps, else 1,750,000 (a 4 GiB process)",
    ),
    "ledger_transfers_max": Flag(
        "--ledger-transfers-max",
        "QUICKPAY_LEDGER_TRANSFERS_MAX",
        None,
        "transfers the ledger holds (two per payment, one per refund)",
        default_text="what the data dir keeps, else 2.25 x --ledger-payments-max",
    ),
    "ledger_retention_s": Flag(
        "--ledger-retention-s",
        "QUICKPAY_LEDGER_RETENTION_S",
        None,
        "seconds the ledger keeps a finished payment before it forgets it",
        default_text="what the data dir keeps, else 86400",
    ),
    "gateways": Flag(
        "--gateways",
        "QUICKPAY_GATEWAYS",
        None,
        "gateway configuration file (TOML)",
        default_text="none: the bundled simulators, started as child processes",
    ),
}

# The settings of a store: where the SQLite file (and the two-phase log) is, or the
# PostgreSQL databases.
_STORE = ("data_dir", "database_url", "billing_url", "ar_url", "provisioning_url")

# What `serve` reads; `config show` shows the same, with where each came from.
_SERVE = (
    "listen",
    *_STORE,
    "gateways",
    "engine_config",
    "fraud_mode",
    "nats_url",
    "subscriber_events",
    "queue_wait_max_ms",
    "pending_calls_max",
    "pending_call_wait_max_s",
    "metrics_listen",
    "ledger_payments_max",
    "ledger_transfers_max",
    "ledger_retention_s",
)

# Which shared settings each command reads, by its words after `quickpay`: its --help
# lists these and no others. A command missing here fails `quickpay --help` at once
# (KeyError), and tests/test_cli.py checks the table against what is registered.
COMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    "serve": _SERVE,
    "config show": _SERVE,
    "doctor": (
        "listen",
        *_STORE,
        "gateways",
        "engine_config",
        "fraud_mode",
        "nats_url",
        "metrics_listen",
    ),
    "seed": ("data_dir",),
    "subscribers import": _STORE,
    "bench": ("listen", "data_dir"),
    "adjust": ("listen",),
    "verify": _STORE,
    "recover": (*_STORE, "gateways"),
    "db migrate": _STORE[1:],
    "audit verify": _STORE,
    "audit new-key": _STORE,
    "reconcile": _STORE,
    "wal verify": ("data_dir",),
    "wal inspect": ("data_dir",),
    "fraud simulate": (),
    "fraud train": (),
    "fraud eval": (),
    # The simulator's --listen is its own (no variable: QUICKPAY_LISTEN is the engine's).
    "gateway-sim": ("data_dir",),
}


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Adds the shared flags ``command`` reads (``COMMAND_FLAGS``), each defaulting to
    its variable, then to its built-in default."""
    env = os.environ
    group = parser.add_argument_group("settings")
    for name in COMMAND_FLAGS[command]:
        flag = FLAGS[name]
        group.add_argument(
            flag.flag,
            default=env.get(flag.variable, flag.default),
            choices=flag.choices,
            help=flag.help,
        )


def _value(args: argparse.Namespace, name: str) -> str | None:
    """A setting's value; the built-in default for a command that does not take it (its
    variable is not read: it may be set for another command)."""
    return getattr(args, name, FLAGS[name].default)


def settings_from(args: argparse.Namespace) -> Settings:
    """Validates the shared flags and fills in derived defaults."""
    listen = _value(args, "listen") or DEFAULT_LISTEN
    check_host_port("--listen", listen)
    metrics_listen = _value(args, "metrics_listen") or ""
    if metrics_listen:
        check_host_port("--metrics-listen", metrics_listen)
    data_dir = Path(_value(args, "data_dir") or DEFAULT_DATA_DIR)
    url = _value(args, "database_url") or f"sqlite:///{data_dir / SQLITE_FILE}"
    if not url.startswith(("sqlite:///", *PG_SCHEMES)):
        raise ConfigError(f"--database-url {url!r}: expected sqlite:///PATH or postgresql://...")
    domain_urls = {
        flag: _value(args, flag.removeprefix("--").replace("-", "_")) or ""
        for flag, _, _ in DOMAIN_URL_FLAGS
    }
    for flag, domain_url in domain_urls.items():
        if domain_url and not domain_url.startswith(PG_SCHEMES):
            raise ConfigError(f"{flag} {domain_url!r}: expected postgresql://...")
        if domain_url and not url.startswith(PG_SCHEMES):
            raise ConfigError(
                f"{flag} needs --database-url postgresql://... (the embedded SQLite file"
                " holds every domain)"
            )
    gateways = _value(args, "gateways")
    nats_url = _value(args, "nats_url") or None
    if nats_url and not nats_url.startswith(("nats://", "tls://")):
        raise ConfigError(f"--nats-url {nats_url!r}: expected nats://HOST:PORT")
    subscriber_events = _value(args, "subscriber_events") or None
    if subscriber_events is not None:
        if not _SUBJECT.fullmatch(subscriber_events):
            raise ConfigError(
                f"--subscriber-events {subscriber_events!r}: expected a NATS subject such as"
                " carrier.subscribers.changes (tokens of letters, digits, '_' and '-', '*'"
                " or a last '>', joined by dots)"
            )
        if not nats_url:
            raise ConfigError("--subscriber-events needs --nats-url: the changes come from NATS")
    fraud_mode = _value(args, "fraud_mode") or "enforce"
    if fraud_mode not in FRAUD_MODES:
        raise ConfigError(f"--fraud-mode {fraud_mode!r}: expected one of {', '.join(FRAUD_MODES)}")
    engine_config = _value(args, "engine_config")
    wait = _value(args, "queue_wait_max_ms")
    try:
        # A string from a flag or a variable, a number from the file (0 among them).
        queue_wait_max_ms = float("" if wait is None else wait)
    except ValueError:
        queue_wait_max_ms = math.nan
    if not 0 <= queue_wait_max_ms <= QUEUE_WAIT_MAX_MS_LIMIT:
        raise ConfigError(
            f"--queue-wait-max-ms {wait!r}: expected milliseconds, 0 to {QUEUE_WAIT_MAX_MS_LIMIT:g}"
        )
    return Settings(
        engine_config=Path(engine_config) if engine_config else None,
        fraud_mode=fraud_mode,
        listen=listen,
        data_dir=data_dir,
        database_url=url,
        gateways=Path(gateways) if gateways else None,
        nats_url=nats_url,
        billing_url=domain_urls["--billing-url"],
        ar_url=domain_urls["--ar-url"],
        provisioning_url=domain_urls["--provisioning-url"],
        queue_wait_max_ms=queue_wait_max_ms,
        pending_calls_max=_bounded(args, "pending_calls_max", PENDING_CALLS_MAX_LIMIT),
        pending_call_wait_max_s=_bounded(
            args, "pending_call_wait_max_s", PENDING_CALL_WAIT_MAX_S_LIMIT
        ),
        metrics_listen=metrics_listen,
        ledger_payments_max=_positive(args, "ledger_payments_max"),
        ledger_transfers_max=_positive(args, "ledger_transfers_max"),
        ledger_retention_s=_positive(args, "ledger_retention_s"),
        subscriber_events=subscriber_events,
    )


def _positive(args: argparse.Namespace, name: str) -> int | None:
    """A whole-number setting, None when not given; refused by its flag's name."""
    raw = _value(args, name)
    if raw is None or raw == "":
        return None
    flag = FLAGS[name].flag
    try:
        value = int(str(raw).replace("_", ""))
    except ValueError:
        raise ConfigError(f"{flag} {raw!r}: expected a whole number") from None
    if value <= 0:
        raise ConfigError(f"{flag} {raw!r}: expected a number above 0")
    return value


def _bounded(args: argparse.Namespace, name: str, limit: int) -> int:
    """A whole-number setting from 1 to ``limit`` (its built-in default when not given);
    refused by its flag's name."""
    flag = FLAGS[name]
    raw = _value(args, name)
    if raw is None or raw == "":
        raw = flag.default
    try:
        value = int(str(raw).replace("_", ""))
    except ValueError:
        value = 0
    if not 1 <= value <= limit:
        raise ConfigError(f"{flag.flag} {raw!r}: expected a whole number, 1 to {limit:,}")
    return value


def check_host_port(flag: str, value: str) -> None:
    """Refuses ``value`` unless it is HOST:PORT with a port from 0 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {value!r} must be HOST:PORT")
