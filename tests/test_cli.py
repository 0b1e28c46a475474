"""The `quickpay` command line: each subcommand's --help lists the shared flags it
reads and no others, each with its QUICKPAY_* variable and default; `--version`."""

from __future__ import annotations

import argparse

import pytest

from quickpay_engine.cli import build_parser, main
from quickpay_engine.config import COMMAND_FLAGS, FLAGS, settings_from

SHARED = {flag.flag for flag in FLAGS.values()}


def _leaves(parser: argparse.ArgumentParser, words: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every runnable command under ``parser`` by its words after `quickpay`."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return {words.strip(): parser}
    found = {}
    for name, child in subparsers[0].choices.items():
        found |= _leaves(child, f"{words} {name}")
    return found


COMMANDS = _leaves(build_parser())


def test_the_flag_table_names_every_command_and_no_other() -> None:
    assert set(COMMANDS) == set(COMMAND_FLAGS)


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_a_command_help_lists_the_shared_flags_it_reads_and_no_others(command, capsys) -> None:
    parser = COMMANDS[command]
    offered = {o for a in parser._actions for o in a.option_strings if o in SHARED}
    # gateway-sim has a --listen of its own, without the engine's variable, and so has
    # subscribers import (the server to send the file to: given, never from a variable).
    own_listen = command in ("gateway-sim", "subscribers import")
    offered -= {"--listen"} if own_listen else set()
    assert offered == {FLAGS[name].flag for name in COMMAND_FLAGS[command]}
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in COMMAND_FLAGS[command]:
        flag = FLAGS[name]
        assert flag.flag in text and f"({flag.variable}, default " in text, (command, flag)
        assert f"default {flag.default_text or flag.default})" in text, (command, flag)
    for flag in SHARED - offered:
        assert f"{flag} " not in text or (own_listen and flag == "--listen"), (command, flag)


def test_wal_verify_offers_the_data_dir_and_not_the_server_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["wal", "verify", "--help"])
    text = capsys.readouterr().out
    assert "--data-dir" in text and "QUICKPAY_DATA_DIR" in text
    for flag in ("--listen", "--fraud-mode", "--gateways", "--database-url", "--nats-url"):
        assert flag not in text
    with pytest.raises(SystemExit) as done:
        main(["wal", "verify", "--listen", "127.0.0.1:1"])
    assert done.value.code == 2, "a flag the command does not read is refused"


def test_variables_set_the_flags_a_command_reads_and_no_others(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("QUICKPAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUICKPAY_LISTEN", "not an address")
    settings = settings_from(build_parser().parse_args(["wal", "verify"]))
    assert settings.data_dir == tmp_path
    assert settings.ledger_dir == tmp_path / "ledger"
    # serve reads QUICKPAY_LISTEN and refuses this one by name.
    with pytest.raises(Exception, match="--listen 'not an address'"):
        settings_from(build_parser().parse_args(["serve"]))


def test_version_names_the_package_the_engine_and_the_contract(capsys) -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    package = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    engine = tomllib.loads((root / "engine" / "Cargo.toml").read_text())["package"]["version"]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"quickpay-engine {package}",
        f"engine {engine}",
        "contract quickpay.v1",
    ]
