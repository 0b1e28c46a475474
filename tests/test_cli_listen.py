"""`quickpay serve` listens where its flag, its variable or its default says (issue #20,
item 4): another subcommand's defaults must not leak into it through the shared flags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from conftest import GATEWAYS_VAR
from quickpay_engine.cli import build_parser
from quickpay_engine.config import DEFAULT_LISTEN

STARTUP_TIMEOUT_S = 30


def test_the_default_listen_address_is_the_documented_one() -> None:
    assert DEFAULT_LISTEN == "127.0.0.1:50051"


def test_serve_takes_its_default_and_the_variable_not_the_simulators(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QUICKPAY_LISTEN", raising=False)
    parser = build_parser()
    assert parser.parse_args(["serve"]).listen == "127.0.0.1:50051"
    assert not hasattr(parser.parse_args(["verify"]), "listen"), "verify listens nowhere"
    assert parser.parse_args(["gateway-sim"]).listen == "127.0.0.1:0"
    assert parser.parse_args(["serve", "--listen", "127.0.0.1:7"]).listen == "127.0.0.1:7"

    monkeypatch.setenv("QUICKPAY_LISTEN", "127.0.0.1:6123")
    parser = build_parser()
    assert parser.parse_args(["serve"]).listen == "127.0.0.1:6123"
    # The engine's variable is not the simulator's address.
    assert parser.parse_args(["gateway-sim"]).listen == "127.0.0.1:0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _serve_and_read_address(data_dir: Path, env: dict[str, str]) -> str:
    """Starts `quickpay serve` with no --listen; returns the address it reports."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "serve", "--data-dir", str(data_dir),
        "--gateways", os.environ[GATEWAYS_VAR], "--fraud-mode", "observe",
        stdout=asyncio.subprocess.PIPE,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), STARTUP_TIMEOUT_S)
    return line.decode().strip()


async def test_serve_with_no_flag_binds_the_default_address(data_dir: Path) -> None:
    if _port_taken(50051):
        pytest.skip("127.0.0.1:50051 is in use on this machine")
    env = {k: v for k, v in os.environ.items() if k != "QUICKPAY_LISTEN"}
    assert await _serve_and_read_address(data_dir, env) == "listening on 127.0.0.1:50051"


async def test_serve_with_no_flag_obeys_quickpay_listen(data_dir: Path) -> None:
    port = _free_port()
    env = {**os.environ, "QUICKPAY_LISTEN": f"127.0.0.1:{port}"}
    assert await _serve_and_read_address(data_dir, env) == f"listening on 127.0.0.1:{port}"
