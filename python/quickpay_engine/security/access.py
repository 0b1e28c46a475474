"""The access file: who the callers are, how each proves it, its roles and rate limits.

TOML, one table per caller under ``callers``; the table's name is the identity recorded
with the payments it sends and in the audit rows of its refunds and reconciliations::

    [callers.gw-node-1]
    roles = ["gateway"]
    cert_names = ["spiffe://carrier.example/gateway/node-1"]   # SAN URIs or DNS names
    token_sha256 = ["4d2c...e1"]        # SHA-256 (hex) of each bearer token it may use
    limits = { Pay = { per_s = 500, burst = 1000 } }

A caller is known by a name in its client certificate's subject alternative names (URI
or DNS) or by a bearer token (``authorization: Bearer TOKEN`` in the call's metadata),
whose SHA-256 the file keeps: the file reveals no token.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quickpay_engine.errors import ConfigError

GATEWAY, OPERATOR, PLATFORM = "gateway", "operator", "platform"
# The carrier's provisioning and billing systems: they change the subscriber base
# (UpsertSubscribers) and move balances (AdjustBalance).
PROVISIONING = "provisioning"
ROLES = (GATEWAY, OPERATOR, PLATFORM, PROVISIONING)

# Which roles may call each RPC. GetPayment: a gateway sees the payments it sent, an
# operator any payment. Health and reflection are not here: they stay open.
RPC_ROLES: dict[str, frozenset[str]] = {
    "Pay": frozenset({GATEWAY}),
    "PayStream": frozenset({GATEWAY}),
    "PayBatch": frozenset({GATEWAY}),
    "GetPayment": frozenset({GATEWAY, OPERATOR}),
    "Refund": frozenset({OPERATOR}),
    "Reconcile": frozenset({OPERATOR}),
    "WatchSettlements": frozenset({PLATFORM}),
    "AdjustBalance": frozenset({PROVISIONING}),
    "UpsertSubscribers": frozenset({PROVISIONING}),
}

# Bounds of the file, so a typo cannot make a bucket that never refills or a file that
# takes the server's memory: refused at start past them.
CALLERS_MAX = 10_000
NAMES_PER_CALLER_MAX = 64
RATE_PER_S_MAX = 1_000_000.0
BURST_MAX = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CALLER_KEYS = {"roles", "cert_names", "token_sha256", "limits"}


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``per_s`` calls a second on average, ``burst`` at once."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class Caller:
    """An identity and what it may do."""

    name: str
    roles: frozenset[str]
    limits: Mapping[str, RateLimit] = field(default_factory=dict)

    def may(self, rpc: str) -> bool:
        """True when one of its roles may call ``rpc``."""
        return not self.roles.isdisjoint(RPC_ROLES[rpc])

    @property
    def sees_every_payment(self) -> bool:
        """True for an operator; a gateway sees the payments it sent."""
        return OPERATOR in self.roles


# The caller of every call when the server has no access file (loopback only).
ANYONE = Caller("", frozenset(ROLES))


def token_hash(token: str) -> str:
    """The SHA-256 (hex) the access file keeps of a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessFile:
    """The parsed file: callers by certificate name and by token hash."""

    path: Path
    callers: Mapping[str, Caller]
    by_cert_name: Mapping[str, Caller]
    by_token_hash: Mapping[str, Caller]


def load_access_file(path: Path) -> AccessFile:
    """Reads and checks ``path``; ConfigError names the caller and key that is wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--auth-file {path}: {err}") from None
    unknown = set(data) - {"callers"}
    if unknown:
        raise ConfigError(f"--auth-file {path}: unknown table {sorted(unknown)[0]!r}")
    tables = data.get("callers", {})
    if not isinstance(tables, dict) or len(tables) > CALLERS_MAX:
        raise ConfigError(f"--auth-file {path}: [callers] must be at most {CALLERS_MAX} tables")
    callers: dict[str, Caller] = {}
    by_cert: dict[str, Caller] = {}
    by_token: dict[str, Caller] = {}
    for name, table in tables.items():
        where = f"--auth-file {path}: callers.{name}"
        caller, cert_names, tokens = _caller(name, table, where)
        callers[name] = caller
        for cert_name in cert_names:
            if cert_name in by_cert:
                raise ConfigError(f"{where}: cert name {cert_name!r} is also another caller's")
            by_cert[cert_name] = caller
        for digest in tokens:
            if digest in by_token:
                raise ConfigError(f"{where}: a token_sha256 is also another caller's")
            by_token[digest] = caller
    return AccessFile(path, callers, by_cert, by_token)


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}: expected a list of strings")
    if len(value) > NAMES_PER_CALLER_MAX:
        raise ConfigError(f"{where}.{key}: at most {NAMES_PER_CALLER_MAX}")
    return value


def _caller(name: str, table: Any, where: str) -> tuple[Caller, list[str], list[str]]:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: a caller's name is 1 to 128 of A-Z a-z 0-9 . _ : / @ -")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    if unknown := set(table) - _CALLER_KEYS:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    roles = _strings(table, "roles", where)
    for role in roles:
        if role not in ROLES:
            raise ConfigError(f"{where}.roles: {role!r} is not one of {', '.join(ROLES)}")
    cert_names = _strings(table, "cert_names", where)
    tokens = _strings(table, "token_sha256", where)
    for digest in tokens:
        if not _SHA256.fullmatch(digest):
            raise ConfigError(
                f"{where}.token_sha256: expected 64 lower-case hex digits (the token's SHA-256),"
                " never the token itself"
            )
    if not cert_names and not tokens:
        raise ConfigError(f"{where}: give cert_names or token_sha256: it cannot prove who it is")
    limits = table.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"{where}.limits: expected a table of RPC = {{ per_s, burst }}")
    parsed = {rpc: _limit(limit, f"{where}.limits.{rpc}") for rpc, limit in limits.items()}
    for rpc in parsed:
        if rpc not in RPC_ROLES:
            raise ConfigError(f"{where}.limits: {rpc!r} is not an RPC of quickpay.v1.Settlement")
    return Caller(name, frozenset(roles), parsed), cert_names, tokens


def _limit(value: Any, where: str) -> RateLimit:
    if not isinstance(value, dict) or set(value) != {"per_s", "burst"}:
        raise ConfigError(f"{where}: expected {{ per_s = N, burst = N }}")
    per_s, burst = value["per_s"], value["burst"]
    if isinstance(per_s, bool) or not isinstance(per_s, int | float):
        raise ConfigError(f"{where}.per_s: expected a number")
    if not 0 < per_s <= RATE_PER_S_MAX:
        raise ConfigError(f"{where}.per_s: expected above 0 and at most {RATE_PER_S_MAX:g}")
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= BURST_MAX:
        raise ConfigError(f"{where}.burst: expected a whole number from 1 to {BURST_MAX}")
    return RateLimit(float(per_s), burst)
