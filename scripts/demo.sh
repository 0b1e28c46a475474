#!/usr/bin/env bash
# `make demo`: seed subscribers into a fresh SQLite database in ./var/demo, start the
# server (which starts the three bundled gateway simulators as child processes), send a
# few thousand Pay calls over gRPC with a progress bar, print the summary and what the
# gateways captured, stop the server, and check the invariants and the audit trail.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quickpay=${QUICKPAY:-.venv/bin/quickpay}
# The demo's own directory, made anew each run, so it never meets a database of an
# older schema or touches one a `quickpay serve` keeps in ./var.
data_dir=${DEMO_DATA_DIR:-./var/demo}
count=${DEMO_PAYMENTS:-3000}
log="$data_dir/demo-server.log"

rm -rf "$data_dir"
mkdir -p "$data_dir"
"$quickpay" seed --subscribers 20000 --seed 1 --data-dir "$data_dir"
"$quickpay" subscribers import "$data_dir/subscribers.csv" --data-dir "$data_dir"

"$quickpay" serve --data-dir "$data_dir" --listen 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
    [ -n "$port" ] && break
    kill -0 $server 2>/dev/null || { cat "$log" >&2; echo "demo: server exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { cat "$log" >&2; echo "demo: server did not start" >&2; exit 1; }
echo "server up on 127.0.0.1:$port (log: $log)"

status=0
"$quickpay" bench --data-dir "$data_dir" --target "127.0.0.1:$port" --count "$count" || status=$?

kill -TERM $server
wait $server || { echo "demo: server did not stop cleanly" >&2; exit 1; }
trap - EXIT
echo "server drained and stopped"
# What the run did to the lines and at the gateways, read from the files it left.
"$(dirname "$quickpay")/python" - "$data_dir" <<'PY'
import sqlite3, sys
from pathlib import Path

data = Path(sys.argv[1])
db = sqlite3.connect(data / "quickpay.sqlite3")
restored = db.execute(
    "SELECT count(*) FROM provisioning_changes WHERE state_after = 1"
).fetchone()[0]
print(f"lines restored  {restored} (barred or suspended lines made ACTIVE by a payment)")
for books in sorted((data / "gateways").glob("*/ledger.sqlite3")):
    g = sqlite3.connect(books)
    rows = dict(g.execute("SELECT state, count(*) FROM payments GROUP BY state").fetchall())
    states = ", ".join(f"{k} {v}" for k, v in sorted(rows.items())) or "no payments (failover only)"
    print(f"gateway {books.parent.name:<8} {states}")
PY
"$quickpay" verify --data-dir "$data_dir"
"$quickpay" audit verify --data-dir "$data_dir"
exit $status
