"""Every relative link in the project's Markdown points at something that exists.

The docs link figures to the JSON and plots they came from (``experiments/PERFORMANCE.md``
alone holds ~30 such links) and to each other's sections. A result file renamed, a section
retitled or a link written before its file was committed leaves a dead link that nothing
else notices. Checked here, for every Markdown file under the repository (virtual
environments and caches left out): each ``[text](target)`` that is not a web or mail address
names an existing file or folder, relative to the file it is written in; a ``#anchor`` names
a heading of its target Markdown file, spelled as GitHub derives it (lower case, spaces to
hyphens, punctuation dropped). In CI, on a clean clone, an existing file is a committed one.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def markdown_files(root: Path = ROOT) -> list[Path]:
    return sorted(
        p for p in root.rglob("*.md") if not SKIP_DIRS.intersection(p.relative_to(root).parts)
    )


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: inline code marks and link syntax dropped, lower case,
    punctuation other than hyphens and underscores removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def dead_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose target (or heading) does not exist, each as
    ``"target: why"``; code blocks are left out (their brackets are code, not links)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    dead = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        where, _, fragment = target.partition("#")
        file = (path.parent / where).resolve() if where else path
        if not file.exists():
            dead.append(f"{target}: no such file or folder")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            dead.append(f"{target}: no heading #{fragment} in {file.name}")
    return dead


FILES = markdown_files()


def test_the_docs_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "CONTRIBUTING.md", "experiments/PERFORMANCE.md"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    assert not dead_links(path), f"{path.relative_to(ROOT)}: dead links {dead_links(path)}"


def test_a_dead_link_and_a_wrong_anchor_are_found(tmp_path):
    (tmp_path / "there.md").write_text("# A `code` heading, with: punctuation\n\ntext\n")
    (tmp_path / "data").mkdir()
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](there.md) [ok](data/) [ok](there.md#a-code-heading-with-punctuation) "
        "[web](https://example.org/x) [self](#local)\n\n## Local\n\n"
        "[gone](results/missing.json) [bad](there.md#no-such-heading)\n\n"
        "```\n[not a link](nowhere.md)\n```\n"
    )
    assert dead_links(doc) == [
        "results/missing.json: no such file or folder",
        "there.md#no-such-heading: no heading #no-such-heading in there.md",
    ]
