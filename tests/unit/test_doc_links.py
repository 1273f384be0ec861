"""Every relative link in README.md and docs/ leads somewhere: a file that exists, and for a
``#anchor`` a heading of that page (GitHub's slugs), so moving a section can not strand a link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target "title") and ![alt](target); the text may hold one level of [brackets].
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> Iterator[str]:
    """The page's lines outside fenced code blocks (a ``# comment`` in a shell block is no
    heading, and a link-like string in code is no link)."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text lower-cased, punctuation dropped
    (letters, digits, ``_``, ``-`` and spaces stay), each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML renders as nothing
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (a repeated slug gets ``-1``, ``-2``...,
    as on GitHub) and explicit ``<a name>``/``<a id>`` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text()):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> Iterator[str]:
    """Every link target written on a page, outside code (a link's text may wrap)."""
    lines = list(prose_lines(page.read_text()))
    for line in lines:
        yield from REFERENCE_LINK.findall(line)
    yield from INLINE_LINK.findall("\n".join(INLINE_CODE.sub("", line) for line in lines))


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The page's relative links that lead to no file (or out of ``root``), or to no heading of
    the page they name."""
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif not linked.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif anchor and linked.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not markdown")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.relative_to(root)}")
    return broken


def test_github_slugs_drop_punctuation_and_keep_underscores() -> None:
    assert github_slug("Rounding: once, toward zero, remainder to `rounding`") == (
        "rounding-once-toward-zero-remainder-to-rounding"
    )
    assert (
        github_slug("What the hardening cost (2026-12-01)") == "what-the-hardening-cost-2026-12-01"
    )
    assert github_slug("`ledger_apply_batch`") == "ledger_apply_batch"
    assert github_slug("Four eyes: pending adjustments") == "four-eyes-pending-adjustments"


def test_a_missing_file_and_a_missing_heading_are_both_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Real heading\n\n```sh\n# not a heading\n[not](a-link.md)\n```\n\n"
        "[ok](#real-heading) [self](page.md#title) [gone](gone.md) [nowhere](#not-a-heading)\n"
        "`[in code](also-not-a-link.md)` [web](https://example.com/x#y) [a wrapped\n"
        "link](#wrapped)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "gone.md: no such file",
        "#not-a-heading: no heading with that anchor in page.md",
        "#wrapped: no heading with that anchor in page.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_indexes_every_doc() -> None:
    # The README orients; a page it does not link is a page nobody finds.
    readme = ROOT / "README.md"
    linked = {
        (readme.parent / target.partition("#")[0]).resolve()
        for target in links(readme)
        if not EXTERNAL.match(target)
    }
    unlinked = [str(page.relative_to(ROOT)) for page in PAGES[1:] if page.resolve() not in linked]
    assert unlinked == []
