#!/usr/bin/env bash
# Re-resolves pyproject.toml's runtime and dev dependencies in a scratch venv and
# writes the exact versions to requirements.lock (what `make` installs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
reqs=$(python3 - "$root/pyproject.toml" <<'PY'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(data["dependencies"] + data["optional-dependencies"]["dev"]))
PY
)
"$work/venv/bin/pip" install -q $reqs
{
    echo "# The locked Python environment: every runtime and dev dependency of pyproject.toml"
    echo "# at the exact version CI uses. Regenerate with scripts/lock.sh after changing"
    echo "# dependencies in pyproject.toml."
    "$work/venv/bin/pip" freeze
} > "$root/requirements.lock"
echo "wrote $root/requirements.lock"
