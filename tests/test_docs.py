"""The generated references (docs/cli.md, docs/api.md) are current, and the hand-written pages do not rot.

docs/cli.md and docs/api.md are generated from the parser and the packages' ``__all__``:
these tests regenerate them and fail when a command, flag or public function was added or
changed without regenerating (``python -m diffing.cli.docgen > docs/cli.md``,
``python -m diffing.cli.docgen api > docs/api.md``). The getting-started and scaling pages
are checked for commands and flags that do not exist and links that lead nowhere.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # benchmarks/, experiments/ live at the root

import pytest

from diffing.cli.docgen import _subparsers, generate
from diffing.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OWN_PAGES = ["index.md", "getting-started.md", "scaling.md", "cli.md", "api.md"]
"""Pages whose links and commands this file checks (other pages belong to the method owners)."""


def _all_parsers(parser=None, path=("diffing",)):
    """``(command path, parser)`` for the top-level parser and every (sub-)command."""
    parser = parser or build_parser()
    yield path, parser
    for name, _help, sub in _subparsers(parser):
        yield from _all_parsers(sub, (*path, name))


def test_cli_reference_is_current():
    text = (DOCS / "cli.md").read_text()
    assert text == generate(), (
        "docs/cli.md is out of date: a command or flag changed. "
        "Regenerate it: python -m diffing.cli.docgen > docs/cli.md"
    )


def test_cli_reference_names_every_command_and_flag():
    text = (DOCS / "cli.md").read_text()
    missing = []
    for path, parser in _all_parsers():
        if f"## `{' '.join(path)}`" not in text:
            missing.append(" ".join(path))
        for action in parser._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help") and f"`{opt}`" not in text:
                    missing.append(f"{' '.join(path)} {opt}")
    assert not missing, f"docs/cli.md lacks: {missing}"


def test_cli_reference_changes_when_a_flag_is_added():
    """The currency check above really catches a new flag and a new command."""
    parser = build_parser()
    before = generate(parser)
    first_name, _h, first = _subparsers(parser)[0]
    first.add_argument("--brand-new-flag", type=int, default=3, help="a flag nobody documented")
    after = generate(parser)
    assert after != before
    assert "`--brand-new-flag` `BRAND_NEW_FLAG` | a flag nobody documented | `3` |" in after
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub_action.add_parser("brand-new-command", help="undocumented")
    assert "## `diffing brand-new-command`" in generate(parser)
    assert "## `diffing brand-new-command`" not in before


def test_cli_reference_is_deterministic_and_terminal_independent(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = generate()
    monkeypatch.setenv("COLUMNS", "250")
    assert generate() == narrow


def test_api_reference_is_current():
    from diffing.cli.apidoc import generate_api

    assert (DOCS / "api.md").read_text() == generate_api(), (
        "docs/api.md is out of date: a public function, class or docstring changed. "
        "Regenerate it: python -m diffing.cli.docgen api > docs/api.md"
    )


def test_api_reference_lists_every_public_name():
    import importlib

    from diffing.cli.apidoc import PACKAGES

    text = (DOCS / "api.md").read_text()
    missing = []
    for modname, _what in PACKAGES:
        try:
            module = importlib.import_module(modname)
        except ImportError:
            continue
        for name in getattr(module, "__all__", []):
            if not re.search(rf"`{re.escape(name)}[`(]", text):
                missing.append(f"{modname}.{name}")
    assert not missing, f"docs/api.md lacks {missing}"


def _code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, with backslash continuations joined and comments dropped."""
    lines, fenced, buf = [], False, ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        line = raw.split("  #")[0].rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    return lines


def _diffing_invocations(line: str) -> list[list[str]]:
    """Argument lists following ``diffing`` / ``-m diffing`` in a shell line."""
    try:
        words = shlex.split(line.replace("$(which diffing)", "diffing"))
    except ValueError:
        return []
    out = []
    for i, w in enumerate(words):
        if w == "diffing" and (i == 0 or words[i - 1] in ("-m", "&&", ";") or "=" in words[i - 1]):
            out.append(words[i + 1 :])
    return out


GUIDES = ["getting-started.md", "scaling.md"] + [
    f"../experiments/{p.parent.name}/README.md"
    for p in sorted((ROOT / "experiments").glob("*/config.toml"))
]


@pytest.mark.parametrize("page", GUIDES)
def test_commands_and_flags_in_guides_exist(page):
    parsers = {path[1:]: p for path, p in _all_parsers()}
    problems = []
    for line in _code_lines((DOCS / page).read_text()):
        for args in _diffing_invocations(line):
            cmd: tuple = ()
            while args and (*cmd, args[0]) in parsers:
                cmd, args = (*cmd, args[0]), args[1:]
            if not cmd:
                if args and args[0] not in ("--help", "--debug"):
                    problems.append(f"unknown command in: {line}")
                continue
            known = {o for a in parsers[cmd]._actions for o in a.option_strings}
            problems += [
                f"{' '.join(cmd)} has no {w}"
                for w in args
                if w.startswith("--") and w.split("=")[0] not in known
            ]
    assert not problems, f"{page}: {problems}"


@pytest.mark.parametrize("page", OWN_PAGES)
def test_relative_links_resolve(page):
    text = (DOCS / page).read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (DOCS / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"docs/{page} links to missing files: {broken}"


def test_benchmarks_collect_assembles_sections_in_order(tmp_path):
    from benchmarks.collect import collect

    (tmp_path / "b_stats.md").write_text(
        "# Stats\n\n```bash\n# a shell comment\n```\n## Result\nratio 1.5x\n"
    )
    (tmp_path / "a_harvest.md").write_text("throughput 2.0x\n")
    page = collect(tmp_path)
    assert page.startswith("# Benchmarks")
    assert page.index("## a_harvest") < page.index("## Stats") < page.index("### Result")
    assert "\n# a shell comment\n" in page  # code fences are left alone
    assert "ratio 1.5x" in page and "throughput 2.0x" in page


def test_benchmarks_page_is_current():
    from benchmarks.collect import collect

    assert (DOCS / "benchmarks.md").read_text() == collect(), (
        "docs/benchmarks.md is out of date with docs/benchmarks/*.md. "
        "Regenerate it: python -m benchmarks.collect > docs/benchmarks.md"
    )
