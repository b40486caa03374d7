"""The README stays a short user manual, and every relative link in it and in docs/ leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 350
# [text](target) or ![alt](target), the target up to the first space or closing parenthesis (a title may follow).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "#", "mailto:")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a Markdown link is really a link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(prose(text)) if not t.lower().startswith(EXTERNAL)]


def test_the_link_pattern_finds_relative_links_and_skips_the_rest() -> None:
    text = ("[a](docs/a.md) ![b](img.png) [c](https://x.org) [d](#top) [e](mailto:a@b.c) [f](g.md#part)\n"
            "`[h](not-a-link.md)`\n```\n[i](in-a-fence.md)\n```\n")
    assert relative_links(text) == ["docs/a.md", "img.png", "g.md#part"]


def test_the_readme_is_at_most_350_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_the_readme_names_no_tmp_path() -> None:
    text = README.read_text(encoding="utf-8")
    found = [line for line in text.splitlines() if "/tmp" in line]
    assert not found, found


def test_the_docs_exist() -> None:
    assert DOCS.is_dir()
    assert len(markdown_files()) > 1


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part = target.split("#", 1)[0]
        if not file_part:
            continue
        if not (path.parent / file_part).resolve().exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"
