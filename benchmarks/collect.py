"""Assemble docs/benchmarks.md from the per-method sections in docs/benchmarks/*.md.

``python -m benchmarks.collect > docs/benchmarks.md``. Each engineer writes one
section file (results plus the command that produced them); this script puts them
in one page, in file-name order, under a common header. It measures nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

SECTIONS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
"""Folder of the per-method section files."""

HEADER = """# Benchmarks

<!-- Assembled by `python -m benchmarks.collect > docs/benchmarks.md` from docs/benchmarks/*.md;
     edit the section files, not this page. -->

Performance targets of each method, measured by the scripts in `benchmarks/`
(`python -m benchmarks.NAME`), each ratio measured side by side in one run.
The build machines are shared (2 CPU cores, several jobs at once): absolute
numbers are noisy; the ratios are what the targets are stated in.
"""


def _headings(text: str) -> list[tuple[int, int]]:
    """``(line index, level)`` of each Markdown heading outside code fences."""
    out, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            out.append((i, len(line) - len(line.lstrip("#"))))
    return out


def _demote(text: str) -> str:
    """Shift the headings so the file's top level becomes ``##`` (a section under the page title)."""
    heads = _headings(text)
    shift = 2 - min(level for _, level in heads)
    lines = text.splitlines()
    for i, level in heads:
        lines[i] = "#" * max(1, level + shift) + lines[i][level:]
    return "\n".join(lines)


def collect(folder: Path = SECTIONS) -> str:
    """The assembled page: the header, a table of contents, then every section file."""
    files = sorted(folder.glob("*.md"))
    parts = [HEADER]
    if not files:
        return HEADER + "\nNo benchmark sections yet.\n"
    parts.append("\n".join(f"- [{f.stem}](benchmarks/{f.name})" for f in files) + "\n")
    for f in files:
        text = f.read_text().strip()
        if not _headings(text):
            parts.append(f"## {f.stem}\n")
        else:
            text = _demote(text)
        parts.append(text + "\n")
    return "\n".join(parts)


def main() -> int:
    """Print the page to stdout."""
    sys.stdout.write(collect())
    return 0


if __name__ == "__main__":
    sys.exit(main())
