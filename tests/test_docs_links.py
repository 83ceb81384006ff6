"""Every relative link and picture in the repository's Markdown resolves: the file exists and a #anchor names a
heading of it (GitHub's heading slugs). Docs move (README -> docs/, benchmarks/README.md); links must follow."""

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"```.*?```", flags=re.S)


def heading_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCED.sub("", path.read_text())
    return {heading_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def broken_links(markdown: Path) -> list[str]:
    text = FENCED.sub("", markdown.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        destination = (markdown.parent / file).resolve() if file else markdown.resolve()
        if not destination.exists():
            broken.append(f"{markdown.relative_to(REPO_ROOT)}: no file {target}")
        elif anchor and (destination.is_dir() or anchor not in anchors(destination)):
            broken.append(f"{markdown.relative_to(REPO_ROOT)}: no heading for {target}")
    return broken


def tracked_markdown() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    files = [REPO_ROOT / n for n in names.split()] if names.strip() else list(REPO_ROOT.glob("**/*.md"))
    # Run results and model cards written by commands are not documentation.
    return [f for f in files if f.exists() and "results" not in f.parts and "outputs" not in f.parts]


def test_the_checker_sees_a_broken_link(tmp_path, monkeypatch):
    page = REPO_ROOT / "docs" / "_probe_links.md"
    try:
        page.write_text("# Title\n\n[ok](#title) [bad](missing.md) [bad anchor](#nope)\n")
        assert len(broken_links(page)) == 2
    finally:
        page.unlink()


def test_every_relative_link_in_the_docs_resolves():
    pages = tracked_markdown()
    assert any(p.name == "README.md" and p.parent == REPO_ROOT for p in pages)
    broken = [line for page in pages for line in broken_links(page)]
    assert not broken, "\n".join(broken)
