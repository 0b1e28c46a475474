#!/usr/bin/env python3
"""Known-vulnerable dependencies fail `make lint`.

Python: pip-audit (from .venv-audit) over requirements.lock, pinned versions as locked
(--no-deps), against PyPI's advisory data. Rust: `cargo audit` over Cargo.lock, against
the RustSec advisory database. An advisory fails the check unless
supply-chain-allowlist.toml lists it with a reason; an entry without a reason fails it
too.

A check that cannot run where it runs (the advisory data out of reach, the tool not
installed) is reported as SKIPPED, naming what is missing, and does not fail the
check: an unreachable server is not a vulnerable dependency. Exit 0 or 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / "supply-chain-allowlist.toml"
PIP_AUDIT = ROOT / ".venv-audit" / "bin" / "pip-audit"
# What pip-audit reads for each locked version; said when it is out of reach.
PYPI_VERSION_JSON = "https://pypi.org/pypi/NAME/VERSION/json"
RUSTSEC_DB = "https://github.com/RustSec/advisory-db"
TIMEOUT_S = 600


@dataclass(frozen=True)
class Verdict:
    """What one check found: problems fail it; skipped says what could not be checked."""

    problems: list[str]
    skipped: str = ""
    audited: int = 0


def load_allowlist(path: Path) -> tuple[dict[str, str], list[str]]:
    """Accepted advisory ids -> package, and the entries that are wrong."""
    data = tomllib.loads(path.read_text())
    accepted: dict[str, str] = {}
    wrong: list[str] = []
    for n, entry in enumerate(data.get("advisory", []), 1):
        ident = str(entry.get("id", "")).strip()
        if not ident or not str(entry.get("package", "")).strip():
            wrong.append(f"{path.name}: advisory {n} needs an id and a package")
            continue
        if len(str(entry.get("why", "")).strip()) < 10:
            wrong.append(f"{path.name}: {ident} says no reason (why = ...)")
            continue
        accepted[ident] = str(entry["package"])
    return accepted, wrong


def judge_pip_audit(report: dict, accepted: dict[str, str]) -> Verdict:
    """pip-audit's JSON report judged against the allowlist."""
    problems = []
    skipped = []
    audited = 0
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(dep["name"])
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            if ids & accepted.keys():
                continue
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
            problems.append(
                f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed}); upgrade it"
                f" in requirements.lock, or accept it in {ALLOWLIST.name} saying why"
            )
    said = ""
    if skipped:
        said = (
            f"{len(skipped)} of {len(skipped) + audited} Python dependencies not audited:"
            f" pip-audit could not read their advisory data ({PYPI_VERSION_JSON}), e.g."
            f" {', '.join(skipped[:3])}"
        )
    return Verdict(problems, said, audited)


def judge_cargo_audit(report: dict, accepted: dict[str, str]) -> Verdict:
    """`cargo audit --json`'s report judged against the allowlist."""
    problems = []
    for vuln in report.get("vulnerabilities", {}).get("list", []):
        advisory = vuln["advisory"]
        ids = {advisory["id"], *advisory.get("aliases", [])}
        if ids & accepted.keys():
            continue
        package = vuln["package"]
        patched = ", ".join(vuln.get("versions", {}).get("patched", [])) or "none"
        problems.append(
            f"{package['name']} {package['version']}: {advisory['id']} ({advisory['title']});"
            f" patched: {patched}. Upgrade it in Cargo.lock, or accept it in"
            f" {ALLOWLIST.name} saying why"
        )
    return Verdict(problems, audited=int(report.get("lockfile", {}).get("dependency-count", 0)))


def audit_python(accepted: dict[str, str]) -> Verdict:
    if not PIP_AUDIT.exists():
        return Verdict([], f"pip-audit is not installed in {PIP_AUDIT.parent.parent.name}")
    command = [
        str(PIP_AUDIT), "-r", str(ROOT / "requirements.lock"), "--no-deps", "--disable-pip",
        "--vulnerability-service", "pypi", "--format", "json", "--progress-spinner", "off",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Verdict([], f"pip-audit did not run through ({tail}): PyPI out of reach?")
    return judge_pip_audit(report, accepted)


def audit_rust(accepted: dict[str, str]) -> Verdict:
    cargo = shutil.which("cargo")
    if cargo is None:
        return Verdict([], "cargo is not on PATH")
    has_audit = subprocess.run(
        [cargo, "audit", "--version"], capture_output=True, text=True, timeout=60
    )
    if has_audit.returncode != 0:
        return Verdict([], "cargo-audit is not installed (cargo install cargo-audit --locked)")
    done = subprocess.run(
        [cargo, "audit", "--json", "--file", str(ROOT / "Cargo.lock")],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Verdict(
            [], f"cargo audit could not fetch the RustSec database ({RUSTSEC_DB}): {tail}"
        )
    return judge_cargo_audit(report, accepted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    accepted, wrong = load_allowlist(ALLOWLIST)
    failed = bool(wrong)
    for line in wrong:
        print(f"supply chain: {line}")
    for name, check in (("python", audit_python), ("rust", audit_rust)):
        verdict = check(accepted)
        for problem in verdict.problems:
            print(f"supply chain ({name}): VULNERABLE {problem}")
        if verdict.skipped:
            print(f"supply chain ({name}): SKIPPED {verdict.skipped}")
        if not verdict.problems and verdict.audited:
            print(f"supply chain ({name}): {verdict.audited} dependencies audited, none vulnerable")
        failed |= bool(verdict.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
