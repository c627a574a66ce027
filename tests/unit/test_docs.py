"""Every relative link and anchor in README.md and docs/ resolves, so moving a section between
pages cannot leave a dead link behind. Anchors follow GitHub's rule: the heading's text in
lower case, punctuation dropped, spaces turned into '-', a repeated heading suffixed -1, -2."""

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_LINK = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a page (code blocks hold no headings)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def links_of(text: str) -> list[str]:
    """Link targets outside code blocks and code spans (where `](` is only text)."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _LINK.findall(prose)


def _anchors_of_file(page: Path) -> set[str]:
    return anchors_of(page.read_text(encoding="utf-8"))


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in links_of(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors_of_file(linked):
            dead.append(f"{target}: no heading with that anchor in {linked.name}")
    return dead


def test_slugs_follow_githubs_rule():
    assert slug("Basic Planner plans (`PWASYNC_SOURCE=planner`)") == (
        "basic-planner-plans-pwasync_sourceplanner"
    )
    assert slug("Inside Graph's limits, across all replicas (`dispatcher.py`)") == (
        "inside-graphs-limits-across-all-replicas-dispatcherpy"
    )
    assert anchors_of("# A\n\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_a_dead_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Here\n[ok](#here) [gone](#there) [file](missing.md) `[x](#code)`\n")
    assert [entry.split(":")[0] for entry in dead_links(page)] == ["#there", "missing.md"]


def test_every_relative_link_and_anchor_resolves():
    dead = {
        str(page.relative_to(ROOT)): found
        for page in markdown_files()
        if (found := dead_links(page))
    }
    assert dead == {}


def test_the_docs_pages_are_reachable_from_the_readme():
    readme = ROOT / "README.md"
    linked = {
        (readme.parent / target.partition("#")[0]).resolve()
        for target in links_of(readme.read_text(encoding="utf-8"))
        if target.startswith("docs/")
    }
    pages = set(markdown_files()) - {readme}
    assert pages - linked == set()
