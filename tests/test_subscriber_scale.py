"""The subscriber base at scale, in `make test`: 200,000 seeded subscribers imported and
served, every one in the engine's table, within the memory budget per subscriber
(issue #24: at most 200 bytes each, the table and everything else serve holds for
them). Memory is compared by RSS against a serve on an empty base: a difference, not a
timing, so the verdict does not depend on the machine's load. benches/subscriber_scale.py
measures the same at 1 and 10 million, with times (benches/RESULTS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

from subscriber_scale import import_file, run, serve_ready

SUBSCRIBERS = 200_000
BYTES_PER_SUBSCRIBER_MAX = 200


@pytest.mark.timeout(900)
def test_200k_subscribers_start_within_the_memory_budget(tmp_path: Path) -> None:
    from quickpay_engine.store import SqliteStore

    csv = tmp_path / "subscribers.csv"
    run([sys.executable, "-m", "quickpay_engine.cli", "seed", "--subscribers",
         str(SUBSCRIBERS), "--seed", "11", "--out", str(csv)])  # fmt: skip
    loaded, empty = tmp_path / "loaded", tmp_path / "empty"
    loaded.mkdir()
    empty.mkdir()
    import_file(csv, loaded)
    store = SqliteStore(loaded / "quickpay.sqlite3")
    try:
        (count,) = store._db.execute("SELECT count(*) FROM subscribers").fetchone()
    finally:
        store.close()
    assert count == SUBSCRIBERS
    _, empty_rss = serve_ready(empty)
    _, rss = serve_ready(loaded)
    log = (loaded / "serve-bench.log").read_text()
    assert f"{SUBSCRIBERS} subscribers loaded into the engine" in log, log
    per_subscriber = (rss - empty_rss) / SUBSCRIBERS
    print(
        f"serve RSS {rss >> 20} MiB over {empty_rss >> 20} MiB empty: {per_subscriber:.0f} B each"
    )
    assert per_subscriber <= BYTES_PER_SUBSCRIBER_MAX, per_subscriber
