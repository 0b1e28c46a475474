"""What every table generator in scripts/ does with its output: write it, or with
--check say whether the committed file is current (`make lint` runs the checks)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(target: Path, text: str, script: str) -> int:
    """Rewrites ``target`` with ``text``, or with --check returns 1 when it differs."""
    if "--check" in sys.argv[1:]:
        if target.read_text() != text:
            print(f"{target} is stale: rerun scripts/{script}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0
