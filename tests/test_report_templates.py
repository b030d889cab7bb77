"""The page's jinja2 templates: autoescaping everywhere, the shipped style sheet, package loading,
and the same visible text as the f-string renderer they replaced."""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jinja2
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from diffing.report.html import css, environment
from diffing.report.markdown import render_markdown
from diffing.report.render import render_html

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).with_name("fixtures") / "report_before_templates.json"
EVIL = "<script>alert(1)</script>"


class _Text(HTMLParser):
    """The text nodes of a page outside <style> and <script>, each whitespace-normalised."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self.skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self.skip and data.split():
            self.parts.append(" ".join(data.split()))


def visible_text(page: str) -> str:
    """What a reader sees, whitespace-normalised (the same extraction that made the fixture)."""
    parser = _Text()
    parser.feed(page)
    parser.close()
    return " ".join(parser.parts)


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def _all_strings(value, path=()):
    """Every string value replaced by the hostile one, except the step statuses (so every section renders)."""
    if isinstance(value, dict):
        return {k: _all_strings(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_all_strings(v, path) for v in value]
    if isinstance(value, str) and not (path[:1] == ("sections",) and path[-1] == "status"):
        return EVIL
    return value


def test_every_template_is_autoescaped():
    env = environment()
    names = env.list_templates(filter_func=lambda n: n.endswith(".j2"))
    assert {"page.html.j2", "blocks.html.j2", "core.html.j2", "methods.html.j2"} <= set(names)
    assert all(env.autoescape(n) for n in names)
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"  # strings too


def test_hostile_strings_everywhere_stay_text():
    """A report whose every string is <script>: every section renders it, escaped, never as markup."""
    report = _all_strings(_fixture()["reports"]["chat"])
    page = render_html(report)
    assert "<script" not in page
    escaped = page.count("&lt;script&gt;alert(1)&lt;/script&gt;")
    assert escaped >= 150, escaped  # model text, tokens, contexts, labels, settings, findings
    for key in ("kl", "adl", "refusal", "crosscoder", "amplify", "diff_sae", "pca", "mining"):
        body = page.split(f'<section id="{key}">')[1].split("</section>")[0]
        assert "&lt;script&gt;" in body and 'class="skipped"' not in body, key
    # in attributes too: a finding's anchor and id, a figure caption's alt text
    assert 'href="&lt;script&gt;alert(1)&lt;/script&gt;"' in page


def test_page_inlines_the_shipped_css():
    shipped = resources.files("diffing.report").joinpath("templates", "report.css").read_text()
    assert css() == shipped and "td.num" in shipped
    page = render_html(_fixture()["reports"]["fabricated"])
    (inline,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert inline == shipped


def test_templates_come_from_the_package():
    """The loader reads the package's own folder (what a wheel installs), and pyproject ships all of it."""
    folder = resources.files("diffing.report").joinpath("templates")
    env = environment()
    assert isinstance(env.loader, jinja2.PackageLoader)
    for name in env.list_templates():
        path = Path(env.get_template(name).filename)
        assert (
            path.parent == Path(str(folder))
            and path.read_text() == folder.joinpath(name).read_text()
        )
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["diffing.report"]
    shipped = [f.name for f in folder.iterdir() if f.is_file()]
    assert shipped and all(
        any(fnmatch.fnmatch(f"templates/{n}", g) for g in globs) for n in shipped
    )
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("jinja2>=3") for d in deps)


@pytest.mark.parametrize("name", ["chat", "fabricated"])
def test_same_visible_text_as_before(name):
    """report.json files rendered by the f-string renderer: the page reads the same, report.md is identical."""
    fix = _fixture()
    report = fix["reports"][name]
    assert visible_text(render_html(copy.deepcopy(report))) == fix["text"][name]
    assert render_markdown(copy.deepcopy(report)) == fix["markdown"][name]


def test_number_filters_show_missing_and_broken_values():
    env = environment()
    out = env.from_string(
        "{{ a|num }} {{ b|num }} {{ c|num }} {{ d|num }} {{ e|num('NaN') }} {{ f|num }} {{ g|num }}"
        " | {{ a|pct }} {{ h|pct }} {{ b|pct }} | {{ t|tok }}"
    ).render(
        a=None, b=math.nan, c=-math.inf, d=12345.0, e=None, f=0.123456, g=True, h=0.0123, t="Ġx"
    )
    assert out == "- NaN -inf 12345 NaN 0.123 yes | n/a 1.2% n/a | &#39;␣x&#39;"  # quotes escaped
    assert (
        env.from_string("{{ missing.key|num }}").render() == "-"
    )  # an absent key reads as missing
    blocks = env.get_template("blocks.html.j2").module
    assert (
        str(blocks.cell(0.5)) == '<td class="num">0.5</td>'
        and str(blocks.cell(None)) == "<td></td>"
    )
    assert (
        str(blocks.stat(None)) == '<td class="num">NaN</td>'
        and str(blocks.cell(False)) == "<td>False</td>"
    )


@pytest.mark.slow
def test_an_installed_wheel_renders(tmp_path):
    """Build the wheel from a copy of the sources, unpack it, and render the page from it alone."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (src / "README.md").write_text((ROOT / "README.md").read_text())
    subprocess.run(["cp", "-r", str(ROOT / "diffing"), str(src / "diffing")], check=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import json, sys; from diffing.report.html import environment; "
        "from diffing.report.render import render_html; "
        "r = json.load(open(sys.argv[1]))['reports']['fabricated']; "
        "print(environment().get_template('page.html.j2').filename); print(render_html(r))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(FIXTURE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    where, page = out.stdout.split("\n", 1)
    assert Path(where).is_relative_to(site / "diffing" / "report" / "templates")
    assert visible_text(page) == _fixture()["text"]["fabricated"]
