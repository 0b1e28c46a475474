"""scripts/audit_deps.py's verdicts (what `make lint` fails on), from reports in the
shapes pip-audit and cargo-audit print: a known-vulnerable dependency fails unless the
allowlist accepts it with a reason; advisory data out of reach is SKIPPED, not a failure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "scripts" / "audit_deps.py")
assert _spec is not None and _spec.loader is not None
audit_deps = importlib.util.module_from_spec(_spec)
sys.modules["audit_deps"] = audit_deps  # its dataclasses look their module up there
_spec.loader.exec_module(audit_deps)

PIP_REPORT = {
    "dependencies": [
        {"name": "grpcio", "version": "1.85.3", "vulns": []},
        {
            "name": "requests",
            "version": "2.5.0",
            "vulns": [
                {
                    "id": "PYSEC-2015-17",
                    "fix_versions": ["2.6.0"],
                    "aliases": ["CVE-2015-2296"],
                    "description": "session fixation",
                }
            ],
        },
        {"name": "local-thing", "skip_reason": "Dependency not found on PyPI"},
    ],
    "fixes": [],
}
CARGO_REPORT = {
    "lockfile": {"dependency-count": 212},
    "vulnerabilities": {
        "found": True,
        "count": 1,
        "list": [
            {
                "advisory": {
                    "id": "RUSTSEC-2023-0052",
                    "title": "webpki: CPU denial of service in certificate path building",
                    "aliases": ["GHSA-8qv2-5vq6-g2g7"],
                },
                "versions": {"patched": [">=0.22.2"], "unaffected": []},
                "package": {"name": "webpki", "version": "0.22.0"},
            }
        ],
    },
}


def test_a_known_vulnerable_python_dependency_fails() -> None:
    verdict = audit_deps.judge_pip_audit(PIP_REPORT, {})
    (problem,) = verdict.problems
    assert problem.startswith("requests 2.5.0: PYSEC-2015-17 (fixed in 2.6.0)")
    assert verdict.audited == 2
    assert "1 of 3 Python dependencies not audited" in verdict.skipped


def test_a_known_vulnerable_rust_dependency_fails() -> None:
    verdict = audit_deps.judge_cargo_audit(CARGO_REPORT, {})
    (problem,) = verdict.problems
    assert problem.startswith("webpki 0.22.0: RUSTSEC-2023-0052")
    assert verdict.audited == 212


@pytest.mark.parametrize("ident", ["PYSEC-2015-17", "CVE-2015-2296"])
def test_an_advisory_the_allowlist_accepts_passes_by_id_or_alias(ident: str) -> None:
    assert audit_deps.judge_pip_audit(PIP_REPORT, {ident: "requests"}).problems == []
    assert (
        audit_deps.judge_cargo_audit(CARGO_REPORT, {"GHSA-8qv2-5vq6-g2g7": "webpki"}).problems == []
    )


def test_every_allowlist_entry_must_say_why(tmp_path: Path) -> None:
    path = tmp_path / "allow.toml"
    path.write_text(
        '[[advisory]]\nid = "PYSEC-2015-17"\npackage = "requests"\nwhy = "not used for sessions;'
        ' replaced by 2026-12"\n'
        '[[advisory]]\nid = "RUSTSEC-2023-0052"\npackage = "webpki"\n'
        '[[advisory]]\nid = "CVE-1"\nwhy = "no package named"\n'
    )
    accepted, wrong = audit_deps.load_allowlist(path)
    assert accepted == {"PYSEC-2015-17": "requests"}
    assert wrong == [
        "allow.toml: RUSTSEC-2023-0052 says no reason (why = ...)",
        "allow.toml: advisory 3 needs an id and a package",
    ]


def test_the_shipped_allowlist_loads_and_every_entry_says_why() -> None:
    _, wrong = audit_deps.load_allowlist(audit_deps.ALLOWLIST)
    assert wrong == []


def test_data_out_of_reach_is_skipped_not_failed() -> None:
    report = {"dependencies": [{"name": n, "skip_reason": "not found"} for n in ("a", "b")]}
    verdict = audit_deps.judge_pip_audit(report, {})
    assert verdict.problems == [] and verdict.audited == 0
    assert verdict.skipped.startswith("2 of 2 Python dependencies not audited")
    assert "https://pypi.org/pypi/NAME/VERSION/json" in verdict.skipped
