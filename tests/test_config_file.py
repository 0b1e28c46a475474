"""`--config FILE.toml`: flag > variable > file > default, refused by name, shown masked."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from quickpay_engine.cli import main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quickpay.toml"
    path.write_text(text)
    return path


def show(capsys, *argv: str) -> dict[str, tuple[str, str]]:
    assert main([*argv]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        name, rest = line.split(None, 1)
        value, _, source = rest.rpartition("  (")
        rows[name] = (value, source.rstrip(")"))
    return rows


def test_a_flag_beats_its_variable_which_beats_the_file(tmp_path, capsys, monkeypatch) -> None:
    config = write(
        tmp_path,
        'listen = "127.0.0.1:7001"\ndata_dir = "/from/file"\nbatch_max = 256\n'
        'fraud_mode = "observe"\n',
    )
    monkeypatch.setenv("QUICKPAY_DATA_DIR", "/from/variable")
    monkeypatch.setenv("QUICKPAY_FRAUD_MODE", "enforce")
    rows = show(capsys, "--config", str(config), "config", "show", "--listen", "127.0.0.1:7002")
    assert rows["listen"] == ("127.0.0.1:7002", "flag --listen")
    assert rows["data_dir"] == ("/from/variable", "variable QUICKPAY_DATA_DIR")
    assert rows["fraud_mode"] == ("enforce", "variable QUICKPAY_FRAUD_MODE")
    assert rows["batch_max"] == ("256", f"file {config}")
    assert rows["batches_in_flight"] == ("8", "default")


def test_quickpay_config_names_the_file_and_secrets_are_masked(
    tmp_path, capsys, monkeypatch
) -> None:
    config = write(tmp_path, 'database_url = "postgresql://qp:s3cret@db:5432/billing"\n')
    monkeypatch.setenv("QUICKPAY_CONFIG", str(config))
    monkeypatch.setenv("QUICKPAY_NATS_URL", "nats://relay:hunter2@nats:4222")
    rows = show(capsys, "config", "show")
    assert rows["database_url"] == ("postgresql://qp:****@db:5432/billing", f"file {config}")
    assert rows["nats_url"][0] == "nats://relay:****@nats:4222"
    assert "s3cret" not in str(rows) and "hunter2" not in str(rows)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('listn = "127.0.0.1:1"\n', "unknown key 'listn'"),
        ('batch_max = "many"\n', "batch_max: Input should be a valid integer"),
        ("batch_max = 0\n", "batch_max: Input should be greater than or equal to 1"),
        ('fraud_mode = "maybe"\n', "fraud_mode: Input should be 'enforce' or 'observe'"),
        ("listen = \n", "not TOML"),
    ],
)
def test_a_bad_file_is_refused_by_name_before_anything_opens(
    tmp_path, capsys, text: str, said: str
) -> None:
    config = write(tmp_path, text)
    data_dir = tmp_path / "never-made"
    code = main(["--config", str(config), "serve", "--data-dir", str(data_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert said in err and str(config) in err
    assert not data_dir.exists()


def test_a_missing_file_is_refused(tmp_path, capsys) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "config", "show"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_command_still_refuses_a_flag_it_does_not_read(tmp_path, capsys) -> None:
    config = write(tmp_path, 'listen = "127.0.0.1:7001"\n')  # serve's; wal verify ignores it
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "wal", "verify", "--listen", "127.0.0.1:1"])
    assert exit_.value.code == 2
    assert main(["--config", str(config), "wal", "verify", "--data-dir", str(tmp_path)]) == 2
    assert "no log directory" in capsys.readouterr().err


async def test_serve_runs_on_what_the_file_says(data_dir: Path, tmp_path: Path) -> None:
    gateways = os.environ["QUICKPAY_TEST_SESSION_GATEWAYS"]
    config = write(
        tmp_path,
        f'listen = "127.0.0.1:0"\ndata_dir = "{data_dir}"\ngateways = "{gateways}"\n'
        'fraud_mode = "observe"\nlog_format = "json"\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKPAY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quickpay_engine.cli", "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "QUICKPAY_CONFIG": str(config)},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.startswith(b"listening on 127.0.0.1:"), line
    process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert err.startswith(b"{"), err[:200]  # log_format from the file
    assert str(data_dir).encode() in err


def test_the_shipped_settings_files_pass_the_model(tmp_path: Path) -> None:
    import yaml

    from quickpay_engine.config_file import load

    root = Path(__file__).resolve().parent.parent
    assert load(root / "deploy" / "docker" / "quickpay.toml")["metrics_listen"] == "0.0.0.0:9464"
    manifests = list(
        yaml.safe_load_all((root / "deploy" / "kubernetes" / "quickpay-sidecar.yaml").read_text())
    )
    (config_map,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    mounted = tmp_path / "quickpay.toml"
    mounted.write_text(config_map["data"]["quickpay.toml"])
    assert load(mounted)["gateways"] == "/etc/quickpay/gateways.toml"


def test_every_setting_serve_reads_can_be_set_in_the_file() -> None:
    """The model holds a key for each setting serve (and config show) takes from the
    file: a key missing there would be refused as unknown."""
    from quickpay_engine.config_file import FileSettings, flags_of

    assert {name for name, _, _ in flags_of("serve")} <= set(FileSettings.model_fields)


def test_serve_settings_from_the_file_take_effect(tmp_path, capsys, monkeypatch) -> None:
    """queue_wait_max_ms, the transport's bounds, the batching and the TLS paths as the
    file says, 0 (admission by count only; no linger) included."""
    from quickpay_engine.cli import build_parser
    from quickpay_engine.commands.serve import batching_from
    from quickpay_engine.config import settings_from
    from quickpay_engine.config_file import apply

    monkeypatch.delenv("QUICKPAY_QUEUE_WAIT_MAX_MS")  # the suite's own (conftest.py)
    config = write(
        tmp_path,
        "queue_wait_max_ms = 0\npending_calls_max = 64\npending_call_wait_max_s = 9\n"
        'batch_linger_ms = 0\ntls_cert = "/etc/quickpay/tls.pem"\n',
    )
    argv = ["--config", str(config), "serve"]
    args = build_parser().parse_args(argv)
    apply(args, argv, "serve")
    settings = settings_from(args)
    assert settings.queue_wait_max_ms == 0
    assert (settings.pending_calls_max, settings.pending_call_wait_max_s) == (64, 9)
    assert batching_from(args).linger_ms == 0
    assert args.tls_cert == Path("/etc/quickpay/tls.pem")
    rows = show(capsys, "--config", str(config), "config", "show")
    for key, value in [
        ("queue_wait_max_ms", "0.0"),
        ("pending_calls_max", "64"),
        ("pending_call_wait_max_s", "9"),
        ("batch_linger_ms", "0.0"),
        ("tls_cert", "/etc/quickpay/tls.pem"),
    ]:
        assert rows[key] == (value, f"file {config}"), key


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("queue_wait_max_ms = -1\n", "queue_wait_max_ms: Input should be greater than or equal to 0"),
        ("queue_wait_max_ms = 60001\n", "queue_wait_max_ms: Input should be less than or equal to 60000"),
        ('queue_wait_max_ms = "soon"\n', "queue_wait_max_ms: Input should be a valid number"),
        ("pending_calls_max = 100001\n", "pending_calls_max: Input should be less than or equal to 100000"),
        ("pending_call_wait_max_s = 0\n", "pending_call_wait_max_s: Input should be greater than or equal to 1"),
        ("batch_max = 4097\n", "batch_max: Input should be less than or equal to 4096"),
        ("batches_in_flight = 65\n", "batches_in_flight: Input should be less than or equal to 64"),
        ("insecure = true\n", "unknown key 'insecure'"),
    ],
)  # fmt: skip
def test_a_serve_setting_out_of_its_flags_bounds_is_refused_by_its_key(
    tmp_path, capsys, text: str, said: str
) -> None:
    config = write(tmp_path, text)
    data_dir = tmp_path / "never-made"
    assert main(["--config", str(config), "serve", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert said in err and str(config) in err, err
    assert not data_dir.exists()
