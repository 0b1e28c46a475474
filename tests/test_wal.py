"""`quickpay wal verify` / `wal inspect` and the bindings' offline readers: a good log,
a torn tail (reported, exit 0) and a flipped bit in the middle (exit 1, with where)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quickpay_engine import _engine
from quickpay_engine.cli import main
from quickpay_engine.errors import WalCorruption

S = 1_000_000_000


def make_log(directory: Path, records: int = 30) -> list[Path]:
    ledger = _engine.Ledger.open(str(directory), segment_bytes_max=4096)
    for i in range(records):
        pays = _engine.ids_array([i * 100 + j + 1 for j in range(16)])
        codes, _ = ledger.record_payment_states(i * S, pays, np.ones(16, np.uint8))
        assert codes.tolist() == [0] * 16
    ledger.close()
    segments = sorted(directory.glob("wal-*.log"))
    assert len(segments) >= 3
    return segments


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_and_inspect_a_good_log(tmp_path, capsys):
    make_log(tmp_path / "ledger")
    assert main(["wal", "verify", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "log intact: 30 records" in out
    assert main(["wal", "inspect", "--data-dir", str(tmp_path), "--from-seq", "29"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[1].split("\t")[0] == "29" and lines[1].split("\t")[5] == "payment_states"
    rows = _engine.wal_inspect(str(tmp_path / "ledger"))
    assert [r[0] for r in rows] == list(range(1, 31))
    assert all(r[6] == 16 and r[7] == 16 for r in rows)


def test_a_torn_tail_is_reported_but_not_corruption(tmp_path, capsys):
    segments = make_log(tmp_path)
    last = segments[-1]
    last.write_bytes(last.read_bytes()[:-7])
    before = last.read_bytes()
    assert main(["wal", "verify", "--wal-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "log intact: 29 records" in out and "torn tail" in out
    assert last.read_bytes() == before, "verify changes nothing"
    ledger = _engine.Ledger.open(str(tmp_path), segment_bytes_max=4096)
    assert ledger.recovery()["torn_tail"]["segment"] == last
    assert ledger.last_seq() == 29


def test_a_flipped_bit_in_a_middle_segment_exits_1_and_names_file_and_offset(tmp_path, capsys):
    segments = make_log(tmp_path)
    middle = segments[1]
    flip(middle, 100)
    assert main(["wal", "verify", "--wal-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT" in out and middle.name in out and "offset" in out
    with pytest.raises(WalCorruption, match=middle.name):
        _engine.Ledger.open(str(tmp_path), segment_bytes_max=4096)
    assert main(["wal", "inspect", "--wal-dir", str(tmp_path)]) == 1
    flip(middle, 100)
    assert main(["wal", "verify", "--wal-dir", str(tmp_path)]) == 0


def test_a_missing_log_directory_exits_2(tmp_path, capsys):
    assert main(["wal", "verify", "--wal-dir", str(tmp_path / "absent")]) == 2
    assert "no log directory" in capsys.readouterr().err
