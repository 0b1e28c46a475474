#!/usr/bin/env bash
# Fuzz the write-ahead log's decoder and replay for DURATION seconds per target
# (default 60). CI runs it briefly; `make fuzz` calls it. Needs the nightly toolchain
# (rustup toolchain install nightly); installs cargo-fuzz when it is missing.
# Corpus and crash artifacts stay in fuzz/corpus and fuzz/artifacts (git-ignored);
# a crash makes the script exit non-zero with the reproducer's path in the output.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-60}"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
for target in wal_decode wal_replay; do
    echo "== fuzz $target for ${DURATION}s"
    # -rss_limit_mb bounds memory; -max_len keeps inputs near a real record's size.
    cargo +nightly fuzz run "$target" -- \
        -max_total_time="$DURATION" -rss_limit_mb=2048 -max_len=65536
done
