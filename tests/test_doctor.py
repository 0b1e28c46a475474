"""`quickpay doctor`: every check ok on a good setup; each broken part named, exit 1."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from pg_support import unavailable
from quickpay_engine.cli import main
from quickpay_engine.commands import doctor


def run_doctor(capsys, *flags: str) -> tuple[int, str]:
    code = main(["doctor", *flags])
    return code, capsys.readouterr().out


def session_gateways() -> Path:
    return Path(os.environ["QUICKPAY_TEST_SESSION_GATEWAYS"])


def test_a_good_setup_passes_every_check(data_dir: Path, capsys) -> None:
    code, out = run_doctor(
        capsys, "--data-dir", str(data_dir), "--gateways", str(session_gateways())
    )
    assert code == 0, out
    for name in (
        "settings",
        "database sqlite",
        "disk",
        "clock",
        "gateway acq-a",
        "gateway wallet-x",
    ):
        assert re.search(rf"^(ok  |warn)  {name}: ", out, re.M), (name, out)
    assert "FAIL" not in out
    assert out.rstrip().endswith("everything checked is ok")


def test_a_gateway_that_does_not_answer_is_named(data_dir: Path, tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    text = session_gateways().read_text()
    acq_a = re.search(r'name = "acq-a"\nurl = "([^"]+)"', text)
    assert acq_a
    gateways = tmp_path / "gateways.toml"
    gateways.write_text(text.replace(acq_a.group(1), f"http://127.0.0.1:{dead}"))
    code, out = run_doctor(capsys, "--data-dir", str(data_dir), "--gateways", str(gateways))
    assert code == 1
    assert re.search(r"^FAIL  gateway acq-a: ", out, re.M), out
    assert re.search(r"^ok    gateway acq-b: ", out, re.M), out
    assert "1 problem(s): gateway acq-a" in out


def test_bad_engine_rules_fail_the_settings_check(data_dir: Path, tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"daily_count_max": "many"}')
    code, out = run_doctor(
        capsys, "--data-dir", str(data_dir), "--engine-config", str(rules),
        "--gateways", str(session_gateways()),
    )  # fmt: skip
    assert code == 1
    assert re.search(r"^FAIL  settings: --engine-config .*rules.json", out, re.M), out


def test_too_little_disk_is_named(data_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "DISK_FREE_MIN_BYTES", 1 << 62)
    code, out = run_doctor(
        capsys, "--data-dir", str(data_dir), "--gateways", str(session_gateways())
    )
    assert code == 1
    assert re.search(r"^FAIL  disk: only .* GiB free", out, re.M), out


def test_a_database_that_cannot_be_reached_is_named(tmp_path: Path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    url = f"postgresql://quickpay@127.0.0.1:{dead}/nowhere"
    code, out = run_doctor(capsys, "--data-dir", str(tmp_path), "--database-url", url)
    assert code == 1
    assert re.search(r"^FAIL  database billing\+ar\+provisioning: ", out, re.M), out


@pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "PostgreSQL reachable")
def test_two_phase_databases_report_max_prepared_transactions(
    module_databases: list[str], tmp_path: Path, capsys
) -> None:
    urls = module_databases
    code, out = run_doctor(
        capsys, "--data-dir", str(tmp_path), "--database-url", urls[0],
        "--billing-url", urls[0], "--ar-url", urls[1], "--provisioning-url", urls[2],
    )  # fmt: skip
    assert re.search(r"^ok    database billing: .*max_prepared_transactions \d+", out, re.M), out
    assert re.search(r"^ok    clock vs database: ", out, re.M), out
    assert code == 0, out
