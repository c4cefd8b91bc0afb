"""The documentation: README is a short front door, every relative link in the Markdown files
resolves (files and heading anchors), and the docs point only at files a package user has.
Pure file reading, no model or corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def _links(text: str) -> list[str]:
    text = CODE.sub("", FENCE.sub("", text))
    return LINK.findall(text)


def _anchors(md: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", md.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        slug = "".join(c for c in m.group(1).strip().lower() if c.isalnum() or c in " -_").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_a_front_door():
    assert (ROOT / "README.md").stat().st_size <= 12_500


def test_readme_holds_the_ci_test_command():
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path):
    bad = []
    for target in _links(md.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(target)
    assert not bad, f"{md.relative_to(ROOT)}: broken links {bad}"


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_planning_files(md: Path):
    text = md.read_text()
    assert "PAPERS.md" not in text and "DESIGN.md" not in text


def test_package_layout_names_every_module():
    """docs/README.md's package layout lists every module of src/omnisparse under its package."""
    text = (ROOT / "docs" / "README.md").read_text()
    layout = text[text.index("## Package layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    pkg = ROOT / "src" / "omnisparse"
    missing = [str(p.relative_to(pkg)) for p in sorted(pkg.glob("*/*.py"))
               if p.name != "__init__.py" and not re.search(rf"\b{re.escape(p.name)}\b", layout)]
    assert not missing, f"modules missing from the package layout in docs/README.md: {missing}"
