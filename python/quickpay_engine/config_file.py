"""One configuration file: `--config FILE.toml` (`QUICKPAY_CONFIG`).

The file holds, by the same names, every setting a flag or a `QUICKPAY_*` variable sets:
flat keys, named as the flag without its dashes (`data_dir` for `--data-dir`, its
variable `QUICKPAY_DATA_DIR`). A flag beats its variable, and the variable beats the
file; what none of them sets takes its built-in default.

One settings model (pydantic-settings) reads the file and the variables: an unknown
key, or a value of the wrong kind, is refused with its name before anything is opened.
What each command reads is still `config.COMMAND_FLAGS`: a key the command does not take
is checked, and then left alone.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from quickpay_engine.commands.serve import BATCHES_IN_FLIGHT_MAX, LINGER_MS_MAX, SALE_BATCH_MAX
from quickpay_engine.config import PENDING_CALL_WAIT_MAX_S_LIMIT, PENDING_CALLS_MAX_LIMIT
from quickpay_engine.errors import ConfigError
from quickpay_engine.settlement.admission import QUEUE_WAIT_MAX_MS_LIMIT

CONFIG_FLAG = "--config"
CONFIG_VARIABLE = "QUICKPAY_CONFIG"
# Settings whose value is a secret, or may carry one (a URL's password): masked by
# `quickpay config show`.
SECRET_KEYS = ("database_url", "billing_url", "ar_url", "provisioning_url", "nats_url")

# The numbers' bounds are their flags' (config.py, commands/serve.py): the file refuses,
# by its key, what the flag refuses. (The ledger's, PositiveInt here, are checked by
# ledger_limits.py whichever the source.)
QueueWaitMs = Annotated[float, Field(ge=0, le=QUEUE_WAIT_MAX_MS_LIMIT)]
PendingCalls = Annotated[int, Field(ge=1, le=PENDING_CALLS_MAX_LIMIT)]
PendingWaitS = Annotated[int, Field(ge=1, le=PENDING_CALL_WAIT_MAX_S_LIMIT)]
BatchMax = Annotated[int, Field(ge=1, le=SALE_BATCH_MAX)]
LingerMs = Annotated[float, Field(ge=0, le=LINGER_MS_MAX)]
InFlight = Annotated[int, Field(ge=1, le=BATCHES_IN_FLIGHT_MAX)]


class FileSettings(BaseSettings):
    """Every setting the file may hold; None: not set there."""

    model_config = SettingsConfigDict(env_prefix="QUICKPAY_", extra="forbid")

    listen: str | None = None
    data_dir: str | None = None
    database_url: str | None = None
    billing_url: str | None = None
    ar_url: str | None = None
    provisioning_url: str | None = None
    nats_url: str | None = None
    subscriber_events: str | None = None
    fraud_mode: Literal["enforce", "observe"] | None = None
    engine_config: str | None = None
    gateways: str | None = None
    metrics_listen: str | None = None
    queue_wait_max_ms: QueueWaitMs | None = None
    pending_calls_max: PendingCalls | None = None
    pending_call_wait_max_s: PendingWaitS | None = None
    ledger_payments_max: PositiveInt | None = None
    ledger_transfers_max: PositiveInt | None = None
    ledger_retention_s: PositiveInt | None = None
    batch_max: BatchMax | None = None
    batch_linger_ms: LingerMs | None = None
    batches_in_flight: InFlight | None = None
    # serve's security paths (security/settings.py); not --insecure, which is said where
    # serve is started (EXTRA_FLAGS below).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_file: Path | None = None
    log_format: Literal["text", "json"] | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file only: the variables and the flags are layered over it by the CLI,
        # which knows which command reads which (config.COMMAND_FLAGS).
        return (init_settings,)


def config_path(args: argparse.Namespace) -> Path | None:
    """The file ``--config`` names, else ``QUICKPAY_CONFIG``; None for neither."""
    value = getattr(args, "config", None) or os.environ.get(CONFIG_VARIABLE)
    return Path(value) if value else None


# The settings each command takes beyond config.COMMAND_FLAGS (its own flags, and the
# global ones): (name, flag, variable).
EXTRA_FLAGS: dict[str, list[tuple[str, str, str]]] = {
    "serve": [
        ("batch_max", "--batch-max", "QUICKPAY_BATCH_MAX"),
        ("batch_linger_ms", "--batch-linger-ms", "QUICKPAY_BATCH_LINGER_MS"),
        ("batches_in_flight", "--batches-in-flight", "QUICKPAY_BATCHES_IN_FLIGHT"),
        # The port's protection (security/settings.py); --insecure is not taken from a
        # file: opening an exposed port without TLS is said where serve is started.
        ("tls_cert", "--tls-cert", "QUICKPAY_TLS_CERT"),
        ("tls_key", "--tls-key", "QUICKPAY_TLS_KEY"),
        ("tls_client_ca", "--tls-client-ca", "QUICKPAY_TLS_CLIENT_CA"),
        ("auth_file", "--auth-file", "QUICKPAY_AUTH_FILE"),
    ],
}
# `config show` shows what serve would run with.
EXTRA_FLAGS["config show"] = EXTRA_FLAGS["serve"]
GLOBAL_FLAGS = [("log_format", "--log-format", "QUICKPAY_LOG_FORMAT")]


def flags_of(command: str) -> list[tuple[str, str, str]]:
    """(name, flag, variable) of every setting ``command`` reads."""
    from quickpay_engine.config import COMMAND_FLAGS, FLAGS

    shared = [(n, FLAGS[n].flag, FLAGS[n].variable) for n in COMMAND_FLAGS.get(command, ())]
    return [*GLOBAL_FLAGS, *shared, *EXTRA_FLAGS.get(command, [])]


def apply(args: argparse.Namespace, argv: list[str], command: str) -> dict[str, str]:
    """Fills in, from the configuration file, each setting of ``command`` that neither
    its flag nor its variable set. Returns where each setting came from: {name: "flag
    --x", "variable QUICKPAY_X", "file PATH" or "default"}."""
    path = config_path(args)
    values = load(path) if path is not None else {}
    sources: dict[str, str] = {}
    for name, flag, variable in flags_of(command):
        if given_on_command_line(argv, flag):
            sources[name] = f"flag {flag}"
        elif os.environ.get(variable):
            sources[name] = f"variable {variable}"
        elif name in values:
            setattr(args, name, values[name])
            sources[name] = f"file {path}"
        else:
            sources[name] = "default"
    return sources


def load(path: Path) -> dict[str, Any]:
    """The settings ``path`` sets, checked by the model: {name: value}."""
    if not path.is_file():
        raise ConfigError(f"{CONFIG_FLAG} {path}: no such file")
    try:
        raw = TomlConfigSettingsSource(FileSettings, toml_file=path)()
    except Exception as err:  # tomllib's error names the line and column
        raise ConfigError(f"{CONFIG_FLAG} {path}: not TOML ({err})") from None
    try:
        model = FileSettings(**raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"{CONFIG_FLAG} {path}: {'; '.join(problems)}") from None
    return {k: v for k, v in model.model_dump().items() if v is not None}


def given_on_command_line(argv: list[str], flag: str) -> bool:
    """Whether ``flag`` appears in ``argv`` (as ``--flag VALUE`` or ``--flag=VALUE``)."""
    return any(t == flag or t.startswith(flag + "=") for t in argv)


def mask(key: str, value: object) -> str:
    """``value`` as `config show` prints it: secrets masked."""
    text = str(value)
    if key in SECRET_KEYS:
        # scheme://user:password@host -> scheme://user:****@host
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1****@", text)
    return text
