"""`quickpay serve`'s security flags: TLS files, the access file, and --insecure.

Secure by default: beyond loopback the server needs TLS and an access file, unless
--insecure says otherwise (and then every start logs a warning).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from quickpay_engine.errors import ConfigError
from quickpay_engine.security.tls import TlsFiles

# (flag, variable, what): each a path, its variable read when the flag is not given.
PATH_FLAGS = (
    ("--tls-cert", "QUICKPAY_TLS_CERT", "PEM certificate chain of the gRPC port: serve TLS"),
    ("--tls-key", "QUICKPAY_TLS_KEY", "PEM private key of --tls-cert"),
    ("--tls-client-ca", "QUICKPAY_TLS_CLIENT_CA",
     "PEM CA certificates: clients must present a certificate one of them signed (mTLS)"),
    ("--auth-file", "QUICKPAY_AUTH_FILE",
     "TOML file of callers: identities, hashed tokens, roles and rate limits"),
)  # fmt: skip
INSECURE_VARIABLE = "QUICKPAY_INSECURE"
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SecuritySettings:
    """How the gRPC port is protected. The default (no TLS, no access file) is only
    allowed on loopback."""

    tls: TlsFiles | None = None
    auth_file: Path | None = None
    # Beyond loopback without TLS or without an access file: allowed only with this.
    insecure: bool = False


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    """Adds serve's --tls-cert, --tls-key, --tls-client-ca, --auth-file and --insecure."""
    group = parser.add_argument_group("security")
    env = os.environ
    for flag, variable, what in PATH_FLAGS:
        group.add_argument(
            flag, type=Path, default=env.get(variable) or None, help=f"{what} ({variable})"
        )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=env.get(INSECURE_VARIABLE, "").lower() in _TRUE,
        help="allow a non-loopback address without TLS or without --auth-file; a warning is"
        f" logged at every start ({INSECURE_VARIABLE}=1)",
    )


def security_from(args: argparse.Namespace) -> SecuritySettings:
    """The flags checked together: --tls-cert and --tls-key go in pairs, a client CA
    needs them."""
    cert, key, ca = args.tls_cert, args.tls_key, args.tls_client_ca
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if ca is not None and cert is None:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS first")
    tls = TlsFiles(cert, key, ca) if cert is not None else None
    return SecuritySettings(tls=tls, auth_file=args.auth_file, insecure=args.insecure)


def is_loopback(listen: str) -> bool:
    """True when HOST of HOST:PORT is a loopback address or "localhost"."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(listen: str, security: SecuritySettings) -> list[str]:
    """Refuses (ConfigError) a non-loopback address without TLS or an access file unless
    --insecure; returns the warnings to log at start."""
    if is_loopback(listen):
        return []
    missing = []
    if security.tls is None:
        missing.append("TLS (--tls-cert, --tls-key)")
    if security.auth_file is None:
        missing.append("access file (--auth-file)")
    if not missing:
        return []
    if not security.insecure:
        raise ConfigError(
            f"--listen {listen} is not a loopback address and the server has no"
            f" {' and no '.join(missing)}: anyone who reaches the port could call every"
            " RPC in the clear. Give them, or --insecure to accept that"
        )
    return [
        f"INSECURE: listening on {listen} with no {' and no '.join(missing)} (--insecure):"
        " anyone who reaches the port may call, and calls and tokens may cross the network"
        " in the clear"
    ]
