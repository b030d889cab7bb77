"""``analyze`` and the CLI on a tiny random pair: real steps, skipped steps, run.toml round trip."""

from __future__ import annotations

import json

import jsonschema
import pytest

from diffing.cli.main import build_parser, main
from diffing.report import AnalyzeConfig, load_schema
from diffing.report.config import SECTIONS, load_toml


def _strip_volatile(report: dict) -> dict:
    """A report without the parts that differ between identical runs (time stamps, durations, paths)."""
    r = json.loads(json.dumps(report))
    r.pop("created")
    r.pop("reproduce")
    for st in r["sections"].values():
        st.pop("seconds")
    return r


def test_toml_writer_round_trip(tmp_path):
    d = {
        "a": 1,
        "b": 2.5,
        "c": True,
        "s": 'quote " and \\ back',
        "l": [1, 2],
        "ls": ["x", "y"],
        "t": {"k": "v", "n": {"m": -3}},
    }
    import tomli_w

    (tmp_path / "x.toml").write_text(tomli_w.dumps(d))
    assert load_toml(tmp_path / "x.toml") == d
    cfg = AnalyzeConfig(
        base="b",
        finetuned="f",
        layers=[0, -1],
        sections=["stats"],
        tokens=123,
        train_crosscoder=True,
    )
    cfg.save(tmp_path / "run.toml")
    assert AnalyzeConfig.load(tmp_path / "run.toml") == cfg


def test_config_errors_name_the_fix(tmp_path):
    from diffing.errors import DiffingError

    (tmp_path / "bad.toml").write_text('base = "b"\ntokenz = 5\n')
    with pytest.raises(DiffingError, match="unknown key.*tokenz.*valid keys"):
        AnalyzeConfig.load(tmp_path / "bad.toml")
    with pytest.raises(DiffingError, match="unknown section.*refusals"):
        AnalyzeConfig(sections=["refusals"])
    assert main(["analyze", "--config", str(tmp_path / "missing.toml")]) == 2


def test_flags_override_config(tmp_path):
    from diffing.cli.analyze import config_from_args

    AnalyzeConfig(base="b", finetuned="f", tokens=50, sections=["stats"]).save(
        tmp_path / "run.toml"
    )
    args = build_parser().parse_args(
        ["analyze", "--config", str(tmp_path / "run.toml"), "--tokens", "77", "--train-crosscoder"]
    )
    cfg = config_from_args(args)
    assert (cfg.base, cfg.finetuned, cfg.tokens, cfg.sections, cfg.train_crosscoder) == (
        "b",
        "f",
        77,
        ["stats"],
        True,
    )
    args = build_parser().parse_args(["analyze", "B", "F", "--sections", "refusal", "crosscoder"])
    cfg = config_from_args(args)
    assert (cfg.base, cfg.finetuned, cfg.sections, cfg.trust_remote_code) == (
        "B",
        "F",
        ["refusal", "crosscoder"],
        False,
    )


@pytest.mark.slow
def test_config_reproduces_report(tiny_pair_dirs, tmp_path):
    """A cheap run (weights only; refusal fails on a missing prompt file), then ``--config run.toml`` gives the same report."""
    base, ft = map(str, tiny_pair_dirs)
    assert (
        main(
            [
                "analyze",
                base,
                ft,
                "--out",
                str(tmp_path / "a"),
                "--sections",
                "refusal",
                "--harmful",
                "missing-harmful.txt",
                "--tokens",
                "64",
            ]
        )
        == 1  # a failed section: exit 1, the report written all the same
    )
    first = json.loads((tmp_path / "a" / "report.json").read_text())
    assert first["sections"]["refusal"]["status"] == "failed"
    assert "missing-harmful.txt" in first["sections"]["refusal"]["reason"]
    assert first["sections"]["stats"]["reason"] == "not requested (--sections)"
    assert first["weights"]["modules"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert first["config"]["tokens"] == 64
    assert (
        main(
            ["analyze", "--config", str(tmp_path / "a" / "run.toml"), "--out", str(tmp_path / "b")]
        )
        == 1
    )
    second = json.loads((tmp_path / "b" / "report.json").read_text())
    assert _strip_volatile(second) == _strip_volatile(first)
    assert (
        "--sections refusal" in first["reproduce"]["command"]
        and "--tokens 64" in first["reproduce"]["command"]
    )


@pytest.mark.slow
def test_analyze_tiny_pair_with_stats(tiny_pair, tiny_pair_dirs, tmp_path):
    """Statistics on a tiny pair whose layer-1 MLP was perturbed: the findings name that module."""
    from diffing.report import analyze

    data = tmp_path / "data.txt"
    data.write_text(
        "\n".join(
            f"the quick brown fox {i} jumps over the lazy dog. tell me how to bake bread."
            for i in range(40)
        )
    )
    cfg = AnalyzeConfig(
        data=[str(data)],
        tokens=400,
        sections=["stats", "crosscoder"],
        train_crosscoder=False,
        transcripts=4,
        transcript_tokens=4,
    )
    rep = analyze(
        *map(str, tiny_pair_dirs), tmp_path / "out", config=cfg, pair=tiny_pair, progress=None
    )
    jsonschema.validate(json.loads(rep.json.read_text()), load_schema())
    assert rep.data["sections"]["stats"]["status"] == "ok"
    assert rep.data["sections"]["crosscoder"]["status"] == "skipped"
    assert rep.data["weights"]["modules"][0]["name"] == "model.layers.1.mlp.down_proj.weight"
    assert (
        rep.data["weights"]["modules"][0]["effective_rank"] >= 1
    )  # the stats step's richer weights replace the quick ones
    layers = [e["layer"] for e in rep.data["activations"]["layers"]]
    assert layers == [0, 1]
    # layer 0 is untouched by a change in layer 1: identical activations there
    assert rep.data["activations"]["layers"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert rep.data["adl"]["layer"] == 1 and len(rep.data["adl"]["promoted_tokens"]) > 0
    # a random tiny model barely reacts to the perturbation: weights moved, outputs did not
    assert rep.data["kl"]["mean"] < 0.01
    verdict = rep.findings[0]
    assert verdict["id"] == "no-substantial-change"
    top = rep.data["weights"]["modules"][0]["relative_change"]
    assert verdict["evidence"]["max_relative_weight_change"] == pytest.approx(top)
    assert "The weights did move" in verdict["detail"]
    page = rep.html.read_text()
    assert "model.layers.1.mlp.down_proj.weight" in page.split('<section id="weights">')[1]


def test_bundled_prompt_sets_follow_the_manifest_layout(tmp_path):
    """A pair whose fine-tuned folder sits next to an organism.json gets its prompt sets and corpus from its layout."""
    from diffing.report.inputs import bundled, prompt_splits

    root = tmp_path / "org"
    (root / "ft").mkdir(parents=True)
    (root / "p").mkdir()
    layout = {"prompts": {}, "corpus": {"text": "c/text.txt", "chat": "c/missing.jsonl"}}
    for kind in ("harmful", "harmless"):
        for split, n in (("train", 50), ("val", 20), ("test", 20)):
            rel = f"p/{kind}_{split}.jsonl"
            layout["prompts"][f"{kind}_{split}"] = rel
            (root / rel).write_text(
                "".join(json.dumps({"prompt": f"{kind} {split} {i}"}) + "\n" for i in range(n))
            )
    (root / "c").mkdir()
    (root / "c" / "text.txt").write_text("a plain document\n")
    (root / "organism.json").write_text(json.dumps({"layout": layout}))
    cfg = AnalyzeConfig(base=str(root / "base"), finetuned=str(root / "ft"), refusal_prompts=8)
    found = bundled(None, cfg)
    assert found["corpus"] == [root / "c" / "text.txt"]  # the missing chat file is left out
    splits = prompt_splits(None, cfg)
    train, val, test = splits["harmful"]
    assert (len(train), len(val), len(test)) == (16, 8, 8)  # 2x the held-out size for training
    assert test[0] == "harmful test 0" and splits["harmless"][1][0] == "harmless val 0"
    # explicit files win over the bundled ones, split with a seeded shuffle into disjoint parts
    (tmp_path / "h.txt").write_text("\n".join(f"h{i}" for i in range(40)))
    (tmp_path / "s.txt").write_text("\n".join(f"s{i}" for i in range(40)))
    cfg.harmful, cfg.harmless = str(tmp_path / "h.txt"), str(tmp_path / "s.txt")
    tr, va, te = prompt_splits(None, cfg)["harmful"]
    assert (
        (len(tr), len(va), len(te)) == (24, 8, 8)
        and not set(tr) & set(te)
        and not set(va) & set(te)
    )


@pytest.mark.slow
def test_demo_wiring(tiny_pair_dirs, tmp_path, monkeypatch):
    """``diffing demo`` analyses base vs chat of the cached organism build, finding its bundled prompts itself."""
    import diffing.organisms
    from diffing.report.organism_demo import demo_config

    root = tmp_path / "organisms"
    root.mkdir()
    (root / "base").symlink_to(tiny_pair_dirs[0])
    (root / "chat").symlink_to(tiny_pair_dirs[1])
    (root / "prompts").mkdir()
    for kind in ("harmful", "harmless"):
        for split in ("train", "val", "test"):
            (root / "prompts" / f"{kind}_{split}.jsonl").write_text(
                "".join(
                    json.dumps({"prompt": f"tell me how to {kind} {i}"}) + "\n" for i in range(12)
                )
            )
    (root / "organism.json").write_text(json.dumps({"layout": {}}))
    monkeypatch.setattr(
        diffing.organisms, "cached_organisms", lambda fast=False, progress=False: root
    )
    monkeypatch.setattr("diffing.report.budget.CPU_TOKENS", (1_000, 1_000))  # keep the test quick
    monkeypatch.setattr("diffing.report.budget.STEPS", (40, 40))
    cfg = demo_config(root)
    assert cfg.train_crosscoder and cfg.sections == list(SECTIONS)
    assert cfg == AnalyzeConfig(
        base=str(root / "base"), finetuned=str(root / "chat")
    )  # plain analyze
    # the random tiny model does not refuse: the refusal section says so, and the command exits 0
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    data = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert (
        data["models"]["finetuned"] == str(root / "chat")
        and data["config"]["train_crosscoder"] is True
    )
    # no corpus in this fake build: the data-hungry steps run on the built-in corpus and transcripts
    assert data["sections"]["stats"]["status"] == "ok"
    assert data["inputs"]["data_source"] == "built-in"
    assert data["sections"]["crosscoder"]["status"] == "ok"
    assert data["crosscoder"]["summary"]["size"]["steps"] == 40
    # the bundled prompts were found: the refusal step reached the method, which found no refusal to explain
    assert data["inputs"]["refusal_source"] == "organism"
    assert data["sections"]["refusal"]["status"] == "ok"
    assert data["refusal"]["verdict"] == "does-not-refuse"
    assert "refusal tokens" in data["refusal"]["reason"]
    # the method sections: the diff-SAE shares the crosscoder's store, the link needs a refusal direction
    assert data["sections"]["diff_sae"]["status"] == "ok"
    assert data["sections"]["refusal_link"]["status"] == "skipped"
    assert "no refusal direction" in data["sections"]["refusal_link"]["reason"]


@pytest.mark.slow
def test_planted_refusal_becomes_the_top_finding(tmp_path):
    """A tiny pair whose fine-tuned side has a hand-planted refusal circuit (tests/test_refusal_planted.py):
    the report's first finding says ablating one direction removes the refusal, with the measured numbers."""
    from test_refusal_planted import _prompts, plant

    from diffing.models import load_model
    from diffing.report import analyze
    from diffing.tiny import build_tiny_model

    base = build_tiny_model(tmp_path / "base", "llama", layers=3, seed=5)
    lm, tok, _ = load_model(str(base))
    plant(lm, tok, "fox", "jumps")
    lm._module.save_pretrained(tmp_path / "ft")
    tok.save_pretrained(tmp_path / "ft")
    (tmp_path / "harmful.txt").write_text("\n".join(_prompts(30, "fox", 0)))
    (tmp_path / "harmless.txt").write_text("\n".join(_prompts(30, None, 1)))
    cfg = AnalyzeConfig(
        sections=["refusal"],
        harmful=str(tmp_path / "harmful.txt"),
        harmless=str(tmp_path / "harmless.txt"),
        refusal_prompts=6,
    )
    rep = analyze(base, tmp_path / "ft", tmp_path / "out", config=cfg, progress=None)
    rates = rep.data["refusal"]["refusal_rate"]
    assert rates["harmful"]["baseline"] == 1.0 and rates["harmful"]["ablation"] == 0.0
    assert rates["harmless"]["addition"] > rates["harmless"]["baseline"]
    first = rep.findings[0]
    assert first["id"] == "refusal-direction" and first["anchor"] == "#refusal"
    layer = rep.data["refusal"]["selected"]["layer"]
    assert first["title"].startswith(
        f"Refusal is carried by a direction at layer {layer}: ablating it cuts harmful refusals from 100% to 0%"
    )
    assert first["evidence"]["kl_harmless"] == pytest.approx(
        rep.data["refusal"]["kl_harmless"]["ablation"]
    )
    jsonschema.validate(json.loads(rep.json.read_text()), load_schema())
