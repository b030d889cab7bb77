"""No wrong answers: strict JSON, atomic writes, findings never drawn from NaN, checked CLI options.

Each test here failed before the fix it guards: bare ``NaN`` in report.json and
``inspect --json``, a "No substantial change" verdict over a NaN KL, ``--tokens 0``
or ``--strength nan`` accepted, tracebacks for ``--device cuda`` on a CPU machine,
a file given as ``--out``, or a data file that is not UTF-8.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from diffing.cli.main import build_parser, main
from diffing.errors import DiffingError
from diffing.io import atomic_path, dumps, json_default, write_json
from diffing.report.findings import compute_findings

PACKAGE = Path(__file__).resolve().parents[1] / "diffing"

HASH_ONLY = {"store/provenance.py"}
"""Files whose json.dumps feeds a hash and writes nothing (its bytes are part of every store's fingerprint)."""


def strict_load(text: str):
    """Parse JSON the way a browser or jq does: bare NaN/Infinity is an error."""

    def reject(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=reject)


# ---- diffing/io.py: strict JSON and atomic writes ------------------------------------------


def test_dumps_rejects_or_flags_non_finite():
    obj = {"kl": {"mean": float("nan")}, "layers": [{"cosine": 0.5}, {"cosine": float("inf")}]}
    with pytest.raises(DiffingError, match=r"kl\.mean and 1 more"):
        dumps(obj)
    out = strict_load(dumps(obj, non_finite="null"))
    assert out["kl"]["mean"] is None
    assert out["layers"][0]["cosine"] == 0.5 and out["layers"][1]["cosine"] is None
    assert out["non_finite"] == ["kl.mean", "layers[1].cosine"]
    assert "non_finite" not in obj  # the caller's dict is not changed


class _Rec(NamedTuple):
    a: int
    b: float


def test_one_converter_for_tensors_numpy_paths_dataclasses():
    import dataclasses

    import numpy as np

    @dataclasses.dataclass
    class Cfg:
        lr: float = 1e-3

    obj = {
        "t": torch.tensor([1.0, 2.0]),
        "np": np.float32(0.5),
        "arr": np.arange(3),
        "path": Path("/x/y"),
        "cfg": Cfg(),
        "rec": _Rec(1, 2.5),
    }
    out = strict_load(dumps(obj))
    assert out == {
        "t": [1.0, 2.0],
        "np": 0.5,
        "arr": [0, 1, 2],
        "path": "/x/y",
        "cfg": {"lr": 1e-3},
        "rec": {"a": 1, "b": 2.5},
    }
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json_default(object())


def test_write_json_is_atomic(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    assert strict_load(target.read_text()) == {"v": 1}
    with pytest.raises(DiffingError):  # fails while encoding: the old file stays whole
        write_json(target, {"v": float("nan")})
    assert strict_load(target.read_text()) == {"v": 1}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # fails after writing
        assert tmp.parent == target.parent and str(__import__("os").getpid()) in tmp.name
        tmp.write_text("{half")
        raise RuntimeError("crash")
    assert strict_load(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left


def test_no_copies_of_json_writers_outside_io():
    """Every JSON the package writes goes through diffing.io: no private encoders or rename dances."""
    offenders = []
    for f in sorted(PACKAGE.rglob("*.py")):
        if (f.name == "io.py" and f.parent == PACKAGE) or str(f.relative_to(PACKAGE)) in HASH_ONLY:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kws = {k.arg for k in node.keywords}
            if name in ("json.dump", "json.dumps") and kws & {"default", "allow_nan"}:
                offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {name} with {kws}")
            if name == "json.dump" or (
                name.endswith("write_text") and "json.dumps" in ast.unparse(node)
            ):
                offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno} writes JSON directly")
    assert not offenders, offenders


# ---- findings never drawn from a non-finite statistic ---------------------------------------


def _report(**sections) -> dict:
    base = {
        "weights": {"modules": [{"name": "mlp", "relative_change": 0.001, "delta_norm": 0.01}]},
        "activations": {"layers": [{"layer": 0, "cosine": 0.999}, {"layer": 1, "cosine": 0.998}]},
        "kl": {"mean": 0.01},
    }
    base.update(sections)
    return base


def test_healthy_control_still_says_no_change():
    found = compute_findings(_report())
    assert [f["id"] for f in found] == ["no-substantial-change"]


def test_nan_kl_is_a_broken_finding_not_no_change():
    found = compute_findings(_report(kl={"mean": float("nan")}))
    ids = [f["id"] for f in found]
    assert "no-substantial-change" not in ids
    assert ids[0] == "non-finite-kl"
    assert found[0]["title"].startswith("Statistic kl.mean is not finite (NaN)")
    assert "the model or data is broken" in found[0]["title"]
    assert found[0]["evidence"]["non_finite"] == ["kl.mean"]


def test_nan_activation_draws_no_activation_finding():
    layers = [{"layer": 0, "cosine": 0.5}, {"layer": 1, "cosine": float("nan")}]
    found = compute_findings(_report(activations={"layers": layers}, kl={"mean": 0.5}))
    ids = [f["id"] for f in found]
    assert ids[0] == "non-finite-activations" and "activations-peak" not in ids
    assert "kl-hot-role" in ids  # a finite section still reports
    assert "activations.layers[1].cosine" in found[0]["title"]


def test_non_finite_recorded_as_null_in_report_json_is_read_back():
    """A report.json written by the strict writer has null plus the path: still broken, not missing."""
    written = strict_load(dumps(_report(kl={"mean": float("inf")}), non_finite="null"))
    assert written["kl"]["mean"] is None and written["non_finite"] == ["kl.mean"]
    found = compute_findings(written)
    assert found[0]["id"] == "non-finite-kl"
    assert "not finite (NaN or infinite)" in found[0]["title"]
    assert all(f["id"] != "no-substantial-change" for f in found)


def test_infinite_relative_change_of_a_zero_base_tensor_is_not_broken():
    mods = [{"name": "new_bias", "relative_change": float("inf"), "delta_norm": 2.0}]
    found = compute_findings(_report(weights={"modules": mods}))
    assert [f["id"] for f in found] == ["no-substantial-change"]
    assert math.isfinite(found[0]["evidence"]["max_relative_weight_change"])


def test_documented_undefined_values_are_not_called_broken():
    """A dead latent's Latent Scaling ratio or a cosine with a zero vector is NaN by definition."""
    cc = {
        "latents": [{"index": 3, "delta": 0.5, "nu_error": float("nan")}],
        "summary": {"decoder_bias": {"constant_fraction": float("nan")}},
    }
    found = compute_findings(_report(crosscoder=cc))
    assert [f["id"] for f in found] == ["no-substantial-change"]
    bad = compute_findings(_report(crosscoder={"latents": [{"index": 3, "delta": float("nan")}]}))
    assert bad[0]["id"] == "non-finite-crosscoder"


def test_weight_stats_keep_a_nan_tensor():
    """A NaN delta is not an unchanged tensor: it stays in the ranking, and its change is NaN."""
    from diffing.stats.weights import rank_weight_stats

    w = torch.ones(4, 4)
    bad = torch.zeros(4, 4)
    bad[0, 0] = float("nan")
    stats = rank_weight_stats([("a", w, torch.full((4, 4), 0.1)), ("b", w, bad), ("c", w, 0 * w)])
    assert sorted(s.name for s in stats) == ["a", "b"]  # "c" is unchanged
    assert math.isnan(next(s for s in stats if s.name == "b").relative_change)


def test_write_report_is_strict_and_shows_non_finite(tmp_path):
    from diffing.report.config import AnalyzeConfig
    from diffing.report.pipeline import empty_report, write_report

    cfg = AnalyzeConfig()
    report = empty_report(cfg, {"base": "b", "finetuned": "f"})
    report.update(_report(kl={"mean": float("nan"), "tokens": 10}))
    rep = write_report(report, tmp_path, cfg, command="diffing analyze b f")
    data = strict_load(rep.json.read_text())
    assert data["kl"]["mean"] is None and "kl.mean" in data["non_finite"]
    assert data["findings"][0]["id"] == "non-finite-kl"
    assert all(f["id"] != "no-substantial-change" for f in data["findings"])
    md = (tmp_path / "report.md").read_text()
    assert "- `kl.mean`: NaN" in md
    html = (tmp_path / "index.html").read_text()
    assert "<code>kl.mean</code>: NaN" in html and "Non-finite statistics" in html


def test_inspect_json_with_a_nan_weight_is_strict(tmp_path, tiny_pair_dirs, capsys):
    from safetensors.torch import load_file, save_file

    from diffing.tiny import perturb_model

    base = tiny_pair_dirs[0]
    ft = perturb_model(base, tmp_path / "ft", modules=["layers.1.mlp.down_proj"], scale=0.5)
    (file,) = Path(ft).glob("*.safetensors")
    sd = load_file(str(file))
    (key,) = [k for k in sd if "layers.1.mlp.down_proj" in k]
    sd[key][0, 0] = float("nan")
    save_file(sd, str(file), metadata={"format": "pt"})
    rc = main(["inspect", str(base), str(ft), "--json"])
    out, err = capsys.readouterr()
    if rc == 2:  # loading refuses non-finite weights: a clear one-line error is right too
        assert "nan" in err.lower() or "non-finite" in err.lower(), err
        assert len(err.strip().splitlines()) == 1
        return
    assert rc == 0, err
    info = strict_load(out)
    assert info["top_changes"][0]["relative_change"] is None
    assert info["non_finite"] == ["top_changes[0].relative_change"]


# ---- every numeric CLI option is checked when parsed ----------------------------------------


def _actions(parser, path=()):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, (*path, name))
        else:
            yield path, a


def test_no_unchecked_numeric_options():
    bare = [
        (" ".join(p), a.option_strings)
        for p, a in _actions(build_parser())
        if a.type in (int, float)
    ]
    assert not bare, f"options with a bare int/float type (use diffing.cli.common types): {bare}"
    outs = [
        (" ".join(p), a.type)
        for p, a in _actions(build_parser())
        if "--out" in a.option_strings or a.dest == "out_dir"
    ]
    assert outs and all(t is not None and t.__name__ == "out_dir" for _, t in outs), outs
    devs = [
        (" ".join(p), a.type) for p, a in _actions(build_parser()) if "--device" in a.option_strings
    ]
    assert devs and all(t is not None and t.__name__ == "device" for _, t in devs), devs


BAD_OPTIONS = [
    (["harvest", "b", "f", "--tokens", "0"], "--tokens", "positive"),
    (["harvest", "b", "f", "--tokens", "1e400"], "--tokens", "positive"),
    (["harvest", "b", "f", "--batch-size", "0"], "--batch-size", "positive"),
    (["harvest", "b", "f", "--seq-len", "-3"], "--seq-len", "at least 2"),
    (["harvest", "b", "f", "--chat-fraction", "1.5"], "--chat-fraction", "between 0 and 1"),
    (["stats", "b", "f", "--tokens", "0"], "--tokens", "positive"),
    (["stats", "b", "f", "--layers", "x"], "--layers", "integer"),
    (["stats", "b", "f", "--steer-scale", "inf"], "--steer-scale", "finite"),
    (["analyze", "--tokens", "-5"], "--tokens", "positive"),
    (["analyze", "--crosscoder-latents", "0"], "--crosscoder-latents", "positive"),
    (["crosscoder", "train", "s", "--expansion", "0"], "--expansion", "positive"),
    (["crosscoder", "train", "s", "--lr", "-1"], "--lr", "positive"),
    (["crosscoder", "train", "s", "--lr", "nan"], "--lr", "finite"),
    (["crosscoder", "train", "s", "--batch-size", "0"], "--batch-size", "positive"),
    (["refusal", "eval", "m", "--strength", "nan"], "--strength", "finite"),
    (["refusal", "eval", "m", "--strength", "1e30"], "--strength", "between -100 and 100"),
    (["refusal", "extract", "m", "--max-layer-fraction", "2"], "--max-layer-fraction", "between"),
    (["inspect", "b", "f", "--top", "-1"], "--top", "0 or more"),
    (["inspect", "b", "f", "--device", "gpu"], "--device", "unknown device"),
]


@pytest.mark.parametrize("argv,flag,words", BAD_OPTIONS, ids=[" ".join(c[0]) for c in BAD_OPTIONS])
def test_bad_numeric_option_is_a_usage_error(argv, flag, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line: no usage block
    assert flag in err and words in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_usage_error(capsys):
    assert main(["inspect", "b", "f", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no usable CUDA GPU" in err and "--device cpu" in err


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv in (
        ["stats", "b", "f", "--out", str(afile)],
        ["harvest", "b", "f", "--out", str(afile / "sub")],
        ["crosscoder", "train", "s", "--out", str(afile)],
        ["refusal", "export", "m", "--out", str(afile)],
        ["organism", "build", str(afile)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert ("--out" in err or "OUT_DIR" in err) and "existing file" in err, err


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_invalid_utf8_data_is_a_one_line_error(tmp_path, tiny_pair_dirs, capsys, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b'{"text": "ok"}\n' + b'{"text": "\xff\xfe"}\n')
    base = str(tiny_pair_dirs[0])
    for argv in (
        ["harvest", base, base, "--layers", "0", "--data", str(bad), "--tokens", "64"],
        ["stats", base, base, "--data", str(bad), "--tokens", "64", "--no-weights"],
    ):
        rc = main([*argv, "--out", str(tmp_path / argv[0])])
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert len(err.splitlines()) == 1 and "internal error" not in err
        assert str(bad) in err and "not UTF-8" in err


def test_commands_named_in_messages_have_the_flags_they_name():
    """`diffing CMD ... --flag` in any message or help names a flag that CMD really has."""
    parser = build_parser()

    def options_of(words: list[str]) -> set[str] | None:
        node = parser
        for w in words:
            sp = next((a for a in node._actions if isinstance(a, argparse._SubParsersAction)), None)
            if sp is None or w not in sp.choices:
                break
            node = sp.choices[w]
        if node is parser:
            return None
        return {o for a in node._actions for o in a.option_strings}

    bad = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for m in re.finditer(r"`diffing ([^`]+)`", f.read_text()):
            words = m.group(1).split()
            opts = options_of([w for w in words if not w.startswith("-")][:2])
            if opts is None:
                continue
            bad += [
                f"{f.name}: {m.group(0)}" for w in words if w.startswith("--") and w not in opts
            ]
    assert not bad, bad
