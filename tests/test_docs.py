"""Docs stay true to the tree: every schema tag listed on one page, links and quoted paths resolve, protocol READMEs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"] + sorted((ROOT / "protocols").glob("*/README.md"))
SCHEMA_TAG = re.compile(r"fibrobench\.[a-z][a-z0-9_-]*/\d+")
LINK = re.compile(r"\]\(([^)#\s]+\.md)?(#[^)\s]+)?\)")
QUOTED_PATH = re.compile(r"`((?:bench|models|protocols|reports|tests|docs)/[\w./-]+\.(?:py|md|sh|yaml|json|j2|css))`")


def _code_schema_tags() -> set[str]:
    tags = set()
    for top in ("bench", "models", "protocols", "reports"):
        for path in (ROOT / top).rglob("*"):
            if path.suffix in (".py", ".yaml", ".j2"):
                tags.update(SCHEMA_TAG.findall(path.read_text()))
    return tags


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (except - and _), spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+)$", md.read_text(), re.M)}


def test_every_schema_tag_in_the_code_is_listed_on_the_schema_page():
    table = (ROOT / "docs" / "contracts.md").read_text().split("## Every file schema", 1)[1].split("\n## ", 1)[0]
    tags = _code_schema_tags()
    assert len(tags) >= 10  # the scan finds the tags at all
    missing = sorted(t for t in tags if f"`{t}`" not in table)
    assert not missing, f"add a row to docs/contracts.md 'Every file schema' for {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_quoted_paths_resolve(doc):
    text = doc.read_text()
    bad = []
    for target, anchor in LINK.findall(text):
        dest = (doc.parent / target) if target else doc
        if not dest.exists():
            bad.append(f"link to missing {target}")
        elif anchor and anchor[1:] not in _anchors(dest):
            bad.append(f"link to missing heading {target}{anchor}")
    bad += [f"`{p}` does not exist" for p in QUOTED_PATH.findall(text) if not (ROOT / p).exists()]
    assert not bad, bad


def test_slug_and_link_checks_can_fail(tmp_path):
    assert _slug("3. `fibrobench gate`") == "3-fibrobench-gate"
    md = tmp_path / "a.md"
    md.write_text("# Title here\nsee [x](#title-here), [y](#nope), [z](b.md)\n")
    links = LINK.findall(md.read_text())
    assert [a for _, a in links if a and a[1:] not in _anchors(md)] == ["#nope"]
    assert ("b.md", "") in links


def test_no_reference_to_a_design_file_outside_the_repository():
    hits = [str(p.relative_to(ROOT)) for top in ("bench", "models", "protocols", "reports", "docs", "tests")
            for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".sh")
            and p.name != "test_docs.py" and re.search(r"DESIGN\.md|\.\./shared/", p.read_text())]
    hits += ["README.md"] if re.search(r"DESIGN\.md|\.\./shared/", (ROOT / "README.md").read_text()) else []
    assert not hits, hits


def test_every_protocol_folder_has_a_readme():
    folders = sorted({p.parent for p in (ROOT / "protocols").glob("*/*.yaml")})
    assert folders, "no protocol folders found"
    assert not [str(f.relative_to(ROOT)) for f in folders if not (f / "README.md").is_file()]
