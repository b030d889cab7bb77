"""The CLI: help, version, inspect, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import diffing


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "diffing", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_and_version():
    out = run_cli("--help")
    assert out.returncode == 0 and "inspect" in out.stdout
    out = run_cli("--version")
    assert out.stdout.strip() == f"diffing {diffing.__version__}"


def test_inspect_names_the_changed_module_first(tiny_pair_dirs):
    base, ft = tiny_pair_dirs
    out = run_cli("inspect", base, ft, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["top_changes"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert info["family"] == "llama" and info["layers"] == 2 and info["d_model"] == 32
    text = run_cli("inspect", base, ft)
    assert "model.layers.1.mlp.down_proj.weight" in text.stdout.splitlines()[-1]


def test_errors_are_one_line_without_traceback(tmp_path, tiny_pair_dirs):
    out = run_cli("inspect", tiny_pair_dirs[0], tmp_path / "nope")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("diffing: error:") and "does not exist" in lines[0]
    )
    assert "Traceback" not in out.stderr
    debug = run_cli("--debug", "inspect", tiny_pair_dirs[0], tmp_path / "nope")
    assert "Traceback" in debug.stderr
