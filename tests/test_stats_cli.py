"""``diffing stats`` end to end on a tiny pair: stats.json holds every documented field, figures
are PNGs, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffing.cli.main import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "stats.md"


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats_data")
    (root / "text.txt").write_text(
        "the quick brown fox jumps over the lazy dog.\n\na model reads text.\n" * 3
    )
    chat = {
        "messages": [
            {"role": "user", "content": "tell me how to bake bread"},
            {"role": "assistant", "content": "here is a short answer"},
        ]
    }
    (root / "chat.jsonl").write_text(
        (json.dumps(chat) + "\n") * 3 + json.dumps({"text": "rivers and cities"}) + "\n"
    )
    return root / "text.txt", root / "chat.jsonl"


def _keys(obj, prefix=""):
    """Dotted paths of every key in a JSON object (lists: their first element)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else k
            yield path
            yield from _keys(v, path)
    elif isinstance(obj, list) and obj:
        yield from _keys(obj[0], prefix)


@pytest.mark.slow
def test_cli_writes_documented_stats_and_figures(tiny_pair_dirs, data_files, tmp_path, capsys):
    base, ft = tiny_pair_dirs
    out = tmp_path / "out"
    args = [
        "stats",
        str(base),
        str(ft),
        "--out",
        str(out),
        "--data",
        str(data_files[0]),
        "--data",
        str(data_files[1]),
        "--tokens",
        "400",
        "--steer-prompts",
        "1",
        "--weights-from-files",
    ]
    assert main(args) == 0
    assert "model.layers.1.mlp.down_proj.weight" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["weights"]["modules"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert {"name", "relative_change", "effective_rank"} <= set(stats["weights"]["modules"][0])
    layer = stats["activations"]["layers"][1]
    assert {"layer", "mean_diff_norm", "cosine", "relative_norm_change", "by_role"} <= set(layer)
    assert stats["activations"]["layers"][0]["mean_diff_norm"] == 0.0 < layer["mean_diff_norm"]
    kl = stats["kl"]
    assert kl["text"]["tokens"] > 0 and kl["chat"]["tokens"] > 0 and kl["top_contexts"]
    assert set(kl["by_role"]) == {"text", "user", "assistant", "template"}
    assert stats["adl"]["layer"] == 1 and len(stats["adl"]["promoted_tokens"]) == 20
    assert stats["adl"]["steering"]["examples"][0]["steered"]
    for name in stats["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every field written is documented in docs/stats.md (as `name` in backquotes)
    documented = set(re.findall(r"`([a-z_0-9.]+)`", DOCS.read_text()))
    leaves = {
        k.split(".")[-1]
        for k in _keys(stats)
        if not k.startswith(("config.", "kl.by_role.", "figures."))
    }
    leaves -= {
        "text",
        "user",
        "assistant",
        "template",
        "system",
    }  # role names, documented as a group
    assert leaves <= documented, f"undocumented stats.json fields: {sorted(leaves - documented)}"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tokens", "0"], "--tokens must be a positive"),
        (["--layers", "7"], "layer 7 is out of range"),
        (["--adl-layer", "2"], "layer 2 is out of range"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_pair_dirs, data_files, tmp_path, capsys, extra, message):
    base, ft = tiny_pair_dirs
    args = [
        "stats",
        str(base),
        str(ft),
        "--out",
        str(tmp_path),
        "--data",
        str(data_files[0]),
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_empty_data_and_mismatched_architecture(tiny_pair_dirs, tmp_path, capsys):
    from diffing.tiny import build_tiny_model

    base, ft = tiny_pair_dirs
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert main(["stats", str(base), str(ft), "--out", str(tmp_path), "--data", str(empty)]) == 2
    assert "no tokens" in capsys.readouterr().err
    assert main(["stats", str(base), str(ft), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    gpt2 = build_tiny_model(tmp_path / "gpt2", "gpt2")
    assert main(["stats", str(base), str(gpt2), "--out", str(tmp_path), "--data", str(empty)]) == 2
    assert "architecture" in capsys.readouterr().err
