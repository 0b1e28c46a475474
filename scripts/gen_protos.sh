#!/usr/bin/env bash
# Regenerates the Python gRPC code from protos/ into python/quickpay_engine/api/gen.
# The output is committed; `scripts/gen_protos.sh --check` fails when it is stale.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-"$root/.venv/bin/python"}
out="$root/python/quickpay_engine/api/gen"
check=0
[ "${1:-}" = "--check" ] && check=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m grpc_tools.protoc -I"$root/protos" \
    --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" \
    "$root"/protos/quickpay/v1/*.proto
# The generated stubs import `quickpay.v1`; inside our package that is
# `quickpay_engine.api.gen.quickpay.v1`.
find "$work" -name '*.py' -exec sed -i \
    's/^from quickpay\.v1 import/from quickpay_engine.api.gen.quickpay.v1 import/' {} +
touch "$work/__init__.py" "$work/quickpay/__init__.py" "$work/quickpay/v1/__init__.py"

if [ "$check" = 1 ]; then
    if ! diff -r -x __pycache__ "$work" "$out" >/dev/null; then
        diff -r -x __pycache__ "$work" "$out" | head -20
        echo "generated protobuf code is stale: run scripts/gen_protos.sh" >&2
        exit 1
    fi
    echo "generated protobuf code is current"
else
    rm -rf "$out"
    cp -r "$work" "$out"
    echo "wrote $out"
fi
