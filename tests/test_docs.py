"""The documentation a clone ships: every link resolves inside the repository, none
points outside it, and the licence matches pyproject's."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
# The sibling folder a design file once lived in, which a clone does not have (spelled
# in two parts so this file does not match itself).
OUTSIDE = "../" + "shared"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_docs_exist_and_the_readme_links_each() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("architecture", "contract", "invariants", "operations"):
        assert (ROOT / "docs" / f"{name}.md").is_file()
        assert f"(docs/{name}.md)" in readme
    # The two set-up commands a newcomer runs.
    assert "\n    make demo    #" in readme and "\n    make test    #" in readme


def test_every_relative_link_resolves_inside_the_repository() -> None:
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT), (doc.name, target)
            assert path.exists(), (doc.name, target)


def test_nothing_tracked_points_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".md", ".py", ".rs", ".toml", ".sh", ".proto"} and path.is_file():
            assert OUTSIDE not in path.read_text(errors="replace"), name


def test_the_licence_is_the_apache_2_0_text_pyproject_names() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
