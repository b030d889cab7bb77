"""index.html in a real browser: headless Chromium renders it offline with no console errors.

Chromium comes from Debian's ``chromium`` package; the test installs it with apt-get
when it is missing (once, about 1-2 minutes) and skips, saying why, only when that
is impossible (no apt-get, not root, no package index reachable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from diffing.report import write_report

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
"""Chromium flags: headless, no network activity of its own, console messages on stderr."""

IMG_CHECK = """<script>
window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.images, function (i) { return i.naturalWidth + "x" + i.naturalHeight; });
  var out = document.createElement("pre"); out.id = "imgcheck"; out.textContent = "IMGS " + sizes.join(",") + " END";
  document.body.appendChild(out);
});
</script>"""
"""Test-only script appended to a copy of the page: writes each figure's natural size into the DOM."""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(
            "chromium is not installed and cannot be installed here (needs apt-get as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.skip(
                f"could not install chromium ({' '.join(cmd)}: {proc.stderr.strip()[-200:]})"
            )
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return path


def _run(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _console_problems(stderr: str) -> list[str]:
    """Console errors and failed loads Chromium logged (its own D-Bus/GPU chatter is not about the page)."""
    bad = re.compile(r"CONSOLE|Uncaught|net::ERR|Failed to load resource|Refused to", re.I)
    return [line for line in stderr.splitlines() if bad.search(line)]


@pytest.mark.slow
def test_page_renders_in_chromium(tmp_path):
    from test_report_render import fabricated  # the fully populated report with hostile tokens

    browser = _chromium()
    rep = write_report(fabricated(), tmp_path / "report")
    shot = tmp_path / "page.png"
    proc = _run(
        browser, tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", rep.html.as_uri()
    )
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    assert _console_problems(proc.stderr) == []

    from PIL import Image

    with Image.open(shot) as im:  # a rendered page, not a blank one: many distinct colours
        colours = im.convert("RGB").resize((300, 600)).getcolors(maxcolors=1_000_000)
    assert len(colours) > 50

    probe = tmp_path / "report" / "probe.html"
    probe.write_text(rep.html.read_text().replace("</body>", IMG_CHECK + "</body>"))
    dom = _run(browser, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert _console_problems(dom.stderr) == []
    sizes = re.search(r"<pre id=\"imgcheck\">IMGS ([0-9x,]*) END</pre>", dom.stdout)
    assert sizes, dom.stdout[-500:]
    dims = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split(",")]
    assert len(dims) == rep.html.read_text().count("<img ") and all(
        w > 50 and h > 50 for w, h in dims
    )
    for heading in (
        "Summary: what changed",
        "Models and setup",
        "Weight changes",
        "KL hot spots",
        "Activation Difference Lens",
        "Refusal",
        "Crosscoder",
        "Methods and citations",
        "Reproduce",
    ):
        assert f"<h2>{heading}</h2>" in dom.stdout
    # the hostile tokens are text in the live DOM, never elements
    assert '<img src="x"' not in dom.stdout and "alert(1)</script>" not in dom.stdout.replace(
        "&lt;/script&gt;", ""
    )
