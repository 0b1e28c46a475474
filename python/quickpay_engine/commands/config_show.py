"""`quickpay config show`: the settings `serve` would run with, and where each came from.

It takes the same flags, variables and `--config FILE.toml` as `serve`, checks them as
`serve` would (an unknown key or a bad value is refused by its name), and prints one line
per setting: its name, its value (secrets masked: a URL's password) and its source
(the flag, the variable, the file, or the default). It opens nothing.
"""

from __future__ import annotations

import argparse
import os

from quickpay_engine.commands import add_command, add_group
from quickpay_engine.config import FLAGS, settings_from
from quickpay_engine.config_file import flags_of, mask
from quickpay_engine.settlement.batcher import BatchSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "config", "the settings in force")
    parser = add_command(
        actions, "show", "print the settings serve would run with, and where each came from"
    )
    parser.set_defaults(run=run_show)


def _defaults() -> dict[str, object]:
    batching = BatchSettings()
    out: dict[str, object] = {
        name: flag.default_text or flag.default or "" for name, flag in FLAGS.items()
    }
    out.update(
        batch_max=batching.batch_max,
        batch_linger_ms=batching.linger_ms,
        batches_in_flight=batching.inflight_max,
        log_format="text",
    )
    return out


def run_show(args: argparse.Namespace) -> int:
    settings_from(args)  # refused here, by name, as serve would refuse it
    defaults = _defaults()
    sources: dict[str, str] = getattr(args, "sources", {})
    rows = []
    for name, _, variable in flags_of("config show"):
        source = sources.get(name, "default")
        if source == "default":
            value = defaults.get(name, "")
        elif source.startswith("variable"):
            value = os.environ.get(variable, "")
        else:
            value = getattr(args, name, "")
        rows.append((name, mask(name, value), source))
    width = max(len(n) for n, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  ({source})")
    return 0
