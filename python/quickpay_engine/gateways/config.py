"""The gateways file (--gateways FILE, QUICKPAY_GATEWAYS): TOML, parsed and checked here.

See default_gateways.toml for the format, with every key explained. Unknown keys are
refused, so a misspelt setting fails at start instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quickpay_engine.domain import MethodKind
from quickpay_engine.errors import ConfigError
from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.types import METHOD_BY_NAME

DEFAULT_FILE = Path(__file__).with_name("default_gateways.toml")
# A router holds at most this many gateways; each has its own pool and breaker.
GATEWAYS_MAX = 32


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a gateway's circuit breaker opens and how it recovers."""

    failure_threshold: int = 5
    open_ms: int = 5_000
    half_open_max_calls: int = 1


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One gateway: where it is, what it takes, how long to wait for it.

    ``url`` is empty for a bundled simulator not started yet; the supervisor fills it
    in. ``simulator`` is that simulator's fault model, or None for an external gateway.
    """

    name: str
    url: str
    methods: frozenset[MethodKind]
    currencies: frozenset[str]
    timeout_ms: int = 2_000
    lookup_timeout_ms: int = 1_000
    pool_max: int = 64
    breaker: BreakerSettings = BreakerSettings()
    simulator: FaultModel | None = None

    def takes(self, method: MethodKind, currency: str) -> bool:
        """Whether this gateway is configured for the method and currency."""
        return method in self.methods and currency in self.currencies


@dataclass(frozen=True, slots=True)
class GatewaysConfig:
    """Every gateway, in failover order."""

    gateways: tuple[GatewayConfig, ...]

    def with_urls(self, urls: dict[str, str]) -> GatewaysConfig:
        """A copy with the given gateways' URLs filled in (the supervisor's result)."""
        return GatewaysConfig(
            tuple(
                dataclasses.replace(g, url=urls[g.name]) if g.name in urls else g
                for g in self.gateways
            )
        )


def load_config(path: Path | None) -> GatewaysConfig:
    """Reads a gateways file; None reads the bundled default."""
    path = path or DEFAULT_FILE
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--gateways {path}: {err}") from None
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"--gateways {path}: {err}") from None


def parse_config(data: dict[str, Any]) -> GatewaysConfig:
    """Checks and converts a parsed gateways file."""
    _only(data, {"defaults", "gateway"}, "top level")
    defaults = dict(data.get("defaults", {}))
    _only(defaults, {"timeout_ms", "lookup_timeout_ms", "pool_max", "breaker"}, "[defaults]")
    entries = data.get("gateway", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError("at least one [[gateway]] is required")
    if len(entries) > GATEWAYS_MAX:
        raise ConfigError(f"at most {GATEWAYS_MAX} gateways")
    gateways = tuple(_gateway(entry, defaults) for entry in entries)
    names = [g.name for g in gateways]
    if len(set(names)) != len(names):
        raise ConfigError("gateway names must be unique")
    return GatewaysConfig(gateways)


def _gateway(entry: dict[str, Any], defaults: dict[str, Any]) -> GatewayConfig:
    keys = {"name", "url", "methods", "currencies", "timeout_ms", "lookup_timeout_ms",
            "pool_max", "breaker", "simulator"}  # fmt: skip
    _only(entry, keys, "[[gateway]]")
    name = entry.get("name")
    if not isinstance(name, str) or not name.replace("-", "").isalnum():
        raise ConfigError("gateway name must be letters, digits and dashes")
    where = f"gateway {name!r}"
    methods = entry.get("methods", [])
    bad = [m for m in methods if m not in METHOD_BY_NAME]
    if not methods or bad:
        raise ConfigError(f"{where}: methods must be some of {sorted(METHOD_BY_NAME)}")
    currencies = entry.get("currencies", [])
    if not currencies or not all(isinstance(c, str) and len(c) == 3 for c in currencies):
        raise ConfigError(f"{where}: currencies must be ISO 4217 alpha codes")
    url = entry.get("url", "")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: url must be http:// or https://")
    sim = entry.get("simulator")
    if not url and sim is None:
        raise ConfigError(f"{where}: needs a url, or a [gateway.simulator] table")
    try:
        model = FaultModel.from_dict(sim) if sim is not None else None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: simulator: {err}") from None
    breaker_table = {**defaults.get("breaker", {}), **entry.get("breaker", {})}
    _only(breaker_table, set(BreakerSettings.__dataclass_fields__), f"{where}: breaker")
    breaker = BreakerSettings(**breaker_table)
    numbers = {
        k: int(entry.get(k, defaults.get(k, GatewayConfig.__dataclass_fields__[k].default)))
        for k in ("timeout_ms", "lookup_timeout_ms", "pool_max")
    }
    if min(numbers.values()) <= 0 or min(dataclasses.astuple(breaker)) <= 0:
        raise ConfigError(f"{where}: timeouts, pool_max and breaker settings must be positive")
    return GatewayConfig(
        name=name,
        url=url.rstrip("/"),
        methods=frozenset(METHOD_BY_NAME[m] for m in methods),
        currencies=frozenset(currencies),
        breaker=breaker,
        simulator=model if not url else None,
        **numbers,
    )


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
