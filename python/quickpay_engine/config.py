"""Settings shared by every subcommand: flags with QUICKPAY_* environment fallbacks.

The flag names and their variables are fixed by DESIGN.md; scripts rely on them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:50051"
FRAUD_MODES = ("enforce", "observe")
DEFAULT_DATA_DIR = "./var"
SQLITE_FILE = "quickpay.sqlite3"
# The subdirectory of the data dir holding the engine's write-ahead ledger (its log
# segments and snapshots). Named once: `serve` writes it and every offline command
# (verify, recover, wal verify, wal inspect) reads it from --data-dir alone.
LEDGER_SUBDIR = "ledger"
PG_SCHEMES = ("postgresql://", "postgres://")
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


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --listen, --data-dir, --database-url and --gateways, each with its variable."""
    env = os.environ
    parser.add_argument(
        "--listen",
        default=env.get("QUICKPAY_LISTEN", DEFAULT_LISTEN),
        help=f"HOST:PORT to serve gRPC on (QUICKPAY_LISTEN, default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--data-dir",
        default=env.get("QUICKPAY_DATA_DIR", DEFAULT_DATA_DIR),
        help="write-ahead log and SQLite file (QUICKPAY_DATA_DIR, default ./var)",
    )
    parser.add_argument(
        "--database-url",
        default=env.get("QUICKPAY_DATABASE_URL"),
        help="sqlite:///PATH or postgresql://... (QUICKPAY_DATABASE_URL, "
        "default the SQLite file in the data dir)",
    )
    for flag, variable, domain in DOMAIN_URL_FLAGS:
        parser.add_argument(
            flag,
            default=env.get(variable),
            help=f"postgresql://... for {domain} ({variable}, default --database-url);"
            " databases that differ commit together by two-phase commit",
        )
    parser.add_argument(
        "--nats-url",
        default=env.get("QUICKPAY_NATS_URL"),
        help="nats://HOST:PORT to publish settlement events to JetStream (QUICKPAY_NATS_URL;"
        " none: events stay in the outbox for WatchSettlements)",
    )
    parser.add_argument(
        "--fraud-mode",
        choices=FRAUD_MODES,
        default=env.get("QUICKPAY_FRAUD_MODE", "enforce"),
        help="enforce: fraud decisions decline payments; observe: score and report only"
        " (QUICKPAY_FRAUD_MODE, default enforce)",
    )
    parser.add_argument(
        "--engine-config",
        default=env.get("QUICKPAY_ENGINE_CONFIG"),
        help="JSON file of validation rules: limits, method matrix, subscriber-assertion"
        " keys (QUICKPAY_ENGINE_CONFIG; none: the built-in defaults)",
    )
    parser.add_argument(
        "--gateways",
        default=env.get("QUICKPAY_GATEWAYS"),
        help="gateway configuration file (QUICKPAY_GATEWAYS; none: bundled simulators)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Validates the common flags and fills in derived defaults."""
    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {args.listen!r} must be HOST:PORT")
    data_dir = Path(args.data_dir)
    url = args.database_url or f"sqlite:///{data_dir / SQLITE_FILE}"
    if not url.startswith(("sqlite:///", *PG_SCHEMES)):
        raise ConfigError(f"--database-url {url!r}: expected sqlite:///PATH or postgresql://...")
    domain_urls = {
        flag: getattr(args, flag.removeprefix("--").replace("-", "_"), None) or ""
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
    gateways = Path(args.gateways) if args.gateways else None
    nats_url = getattr(args, "nats_url", None) or None
    if nats_url and not nats_url.startswith(("nats://", "tls://")):
        raise ConfigError(f"--nats-url {nats_url!r}: expected nats://HOST:PORT")
    fraud_mode = getattr(args, "fraud_mode", None) or "enforce"
    if fraud_mode not in FRAUD_MODES:
        raise ConfigError(f"--fraud-mode {fraud_mode!r}: expected one of {', '.join(FRAUD_MODES)}")
    engine_config = getattr(args, "engine_config", None)
    return Settings(
        engine_config=Path(engine_config) if engine_config else None,
        fraud_mode=fraud_mode,
        listen=args.listen,
        data_dir=data_dir,
        database_url=url,
        gateways=gateways,
        nats_url=nats_url,
        billing_url=domain_urls["--billing-url"],
        ar_url=domain_urls["--ar-url"],
        provisioning_url=domain_urls["--provisioning-url"],
    )
