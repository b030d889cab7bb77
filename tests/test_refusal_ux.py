"""What ``diffing refusal`` tells the user: held-out refusal rates, measuring a model on its own,
export with strength/layers and a check of the written copy, one split rule, safe output folders.

End-to-end numbers come from the fast ``chat`` organism, which refuses its synthetic harmful
requests; its refusal phrase is inferred (or taken from the direction), never given here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import random
import shutil

import pytest
import torch

from diffing.cli.main import main
from diffing.errors import DiffingError
from diffing.refusal.io import split_prompts, split_set


def _run(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with its stdout captured (usable from module-scoped fixtures)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


# ---------------------------------------------------------------- the one split rule


def test_split_rule_known_answer():
    prompts = [f"p{i}" for i in range(128)]
    order = list(prompts)
    random.Random(7).shuffle(order)
    s = split_prompts(prompts, 128, 32, n_test=32, min_train=4, seed=7, name="x")
    # held-out sets first, in shuffled order; the train set gets what is left (64, not 128)
    assert s.test == order[:32] and s.val == order[32:64] and s.train == order[64:]
    assert s.counts() == "64/32/32"
    s = split_prompts(prompts, 50, 32, n_test=32, min_train=4, seed=7, name="x")
    assert s.train == order[64:114]  # at most n_train
    # without a test set the rule is the old train/val one: val first, then train
    s = split_prompts(prompts, 10, 5, min_train=4, seed=7, name="x")
    assert s.val == order[:5] and s.train == order[5:15] and s.test == []
    with pytest.raises(DiffingError, match="too few to hold out 32 for test and 32"):
        split_prompts(prompts[:67], 128, 32, n_test=32, min_train=4, seed=0, name="harmful")
    with pytest.raises(DiffingError, match="n_val is -1"):
        split_prompts(prompts, 10, -1, min_train=4, seed=0, name="x")


def test_split_set_uses_given_held_out_files_whole():
    from diffing.refusal import RefusalConfig

    prompts = [f"p{i}" for i in range(100)]
    cfg = RefusalConfig(n_train=128, n_val=32, n_test=32)
    s = split_set(prompts, cfg, "harmful", val=["v1", "v2"])
    assert s.val == ["v1", "v2"] and len(s.test) == 32 and len(s.train) == 68
    s = split_set(prompts, cfg, "harmful", val=["v"], test=["t"])
    assert s.val == ["v"] and s.test == ["t"] and sorted(s.train) == sorted(prompts)


def test_n_train_help_says_what_happens():
    from diffing.cli.main import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["refusal"]
    extract = sub._subparsers._group_actions[0].choices["extract"]
    (action,) = [a for a in extract._actions if "--n-train" in a.option_strings]
    # the help states the rule and the defaults it applies (n_test + n_val held out first)
    assert "fewer than n_test + n_val + min_train" in action.help and "printed" in action.help
    helps = {a.dest: a.help for a in extract._actions}
    assert "(default: 128)" in helps["n_train"]
    assert "(default: 32)" in helps["n_val"] and "(default: 32)" in helps["n_test"]


# ---------------------------------------------------------------- strength and layers (tiny model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama folder, prompt files, and a saved direction for it."""
    from diffing.refusal import Direction
    from diffing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("ux_tiny")
    path = build_tiny_model(root / "m", "llama", layers=3, seed=3)
    u = torch.randn(32, generator=torch.Generator().manual_seed(0))
    Direction(
        direction=u / u.norm(),
        layer=1,
        position=-1,
        norm=2.0,
        family="llama",
        d_model=32,
        n_layers=3,
        model_ref=str(path),
        refusal_phrases=["xyz"],
    ).save(root / "dir")
    for name, words in (("harmful", "burn the"), ("harmless", "paint the")):
        (root / f"{name}.txt").write_text("".join(f"{words} thing {i}\n" for i in range(6)))
    return root, path


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def test_orthogonalize_strength_and_layers_known_answers(tiny):
    from diffing.arch import arch_for
    from diffing.refusal import Direction, orthogonalize_model

    root, path = tiny
    u = Direction.load(root / "dir").direction
    ref = _hf(path)
    arch = arch_for(ref.config)

    def writes(m):  # component along u of the embedding rows and of each block's o_proj / down_proj
        return (
            m.model.embed_tokens.weight.detach() @ u,  # [vocab]
            [u @ b.self_attn.o_proj.weight.detach() for b in m.model.layers],  # [d_model] each
            [u @ b.mlp.down_proj.weight.detach() for b in m.model.layers],
        )

    e0, o0, d0 = writes(ref)
    for s, factor in ((0.5, 0.5), (2.0, -1.0), (1.0, 0.0)):  # W <- W - s u u^T W
        e, o, d = writes(orthogonalize_model(_hf(path), u, arch, strength=s))
        assert torch.allclose(e, factor * e0, atol=1e-5)
        for k in range(3):
            assert torch.allclose(o[k], factor * o0[k], atol=1e-5)
            assert torch.allclose(d[k], factor * d0[k], atol=1e-5)
    e, o, d = writes(orthogonalize_model(_hf(path), u, arch, layers=[1]))
    assert torch.equal(e, e0) and torch.equal(o[0], o0[0]) and torch.equal(d[2], d0[2])
    assert o[1].abs().max() < 1e-5 and d[1].abs().max() < 1e-5 and o0[1].abs().max() > 1e-3
    with pytest.raises(DiffingError, match="blocks 0..2"):
        orthogonalize_model(_hf(path), u, arch, layers=[3])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e30])
def test_strength_must_be_finite_in_the_python_api(tiny, bad):
    from diffing.arch import arch_for
    from diffing.refusal import Direction, ablate, add, orthogonalize_model
    from diffing.refusal.evaluation import interventions_for

    root, path = tiny
    d = Direction.load(root / "dir")
    with pytest.raises(DiffingError, match="finite"):
        ablate(d.direction, bad)
    with pytest.raises(DiffingError, match="finite"):
        add(d.vector, 1, bad)
    with pytest.raises(DiffingError, match="finite"):
        interventions_for(d, bad)
    model = _hf(path)
    before = model.model.embed_tokens.weight.detach().clone()
    with pytest.raises(DiffingError, match="finite"):
        orthogonalize_model(model, d.direction, arch_for(model.config), strength=bad)
    assert torch.equal(model.model.embed_tokens.weight, before)  # refused before any edit


def test_strength_must_be_finite_on_the_cli(tiny, tmp_path, capsys):
    root, path = tiny
    common = ["--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt")]
    for cmd in (
        ["eval", str(path), "--direction", str(root / "dir"), "--out", str(tmp_path / "e")],
        ["export", str(path), "--direction", str(root / "dir"), "--out", str(tmp_path / "x")],
    ):
        assert main(["refusal", *cmd, *common, "--strength", "nan"]) == 2
        err = capsys.readouterr().err
        assert "--strength" in err and "finite" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "e").exists()


def _digest(folder) -> dict:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def test_export_never_writes_over_the_input_model(tiny, tmp_path, capsys):
    from diffing.refusal import Direction, export_orthogonalized

    root, path = tiny
    model = tmp_path / "model"
    shutil.copytree(path, model)
    before = _digest(model)
    common = ["--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt")]
    for out in (model, model / "sub", model / "sub" / ".."):
        argv = [
            "refusal",
            "export",
            str(model),
            "--direction",
            str(root / "dir"),
            "--out",
            str(out),
        ]
        assert main(argv + common) == 2
        assert "overwrite the original weights" in capsys.readouterr().err
    assert _digest(model) == before and not (model / "sub").exists()
    with pytest.raises(DiffingError, match="inside the input model folder"):
        export_orthogonalized(
            _hf(model), None, Direction.load(root / "dir"), model, source=str(model)
        )
    assert _digest(model) == before


def test_export_cli_strength_and_layers_are_applied_and_recorded(tiny, tmp_path, capsys):
    from diffing.refusal import Direction

    root, path = tiny
    u = Direction.load(root / "dir").direction
    out = tmp_path / "half"
    argv = ["refusal", "export", str(path), "--direction", str(root / "dir"), "--out", str(out)]
    argv += ["--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt")]
    assert main(argv + ["--strength", "0.5", "--layers", "1", "--max-new-tokens", "3"]) == 0
    exp = json.loads((out / "export.json").read_text())
    assert exp["strength"] == 0.5 and exp["layers"] == [1]
    assert exp["check"]["refusal_phrases"] == ["xyz"]  # the direction's, not inferred
    assert exp["check"]["kl_harmless"] > 0  # the edit changed the model ...
    orig, new = _hf(path), _hf(out)
    assert torch.equal(new.model.embed_tokens.weight, orig.model.embed_tokens.weight)
    assert torch.equal(
        new.model.layers[0].mlp.down_proj.weight, orig.model.layers[0].mlp.down_proj.weight
    )
    w0, w1 = (
        orig.model.layers[1].self_attn.o_proj.weight,
        new.model.layers[1].self_attn.o_proj.weight,
    )
    assert torch.allclose(
        u @ w1, 0.5 * (u @ w0), atol=1e-5
    )  # ... as W - 0.5 u u^T W in block 1 only
    assert "strength 0.5, blocks [1]" in capsys.readouterr().out


def test_eval_output_folder_rules(tiny, capsys):
    root, path = tiny
    common = ["--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt")]
    before = sorted(p.name for p in (root / "dir").iterdir())
    argv = ["refusal", "eval", str(path), "--direction", str(root / "dir"), *common]
    assert main(argv + ["--out", str(root / "dir")]) == 2
    err = capsys.readouterr().err  # refused before anything runs: the folder is an input
    assert "is an input of this run" in err or "is the direction's folder" in err
    assert sorted(p.name for p in (root / "dir").iterdir()) == before
    assert main(argv) == 2  # --out is required: no silent default folder
    assert "--out" in capsys.readouterr().err
    assert main(argv + ["--reference", str(path), "--out", str(root / "e")]) == 2
    assert "give one of them" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end on the chat organism


@pytest.fixture(scope="module")
def chat_runs(organisms, tmp_path_factory):
    """extract, export (with its check) and two separate evals of the chat organism, via the CLI."""
    root = tmp_path_factory.mktemp("ux_chat")
    prompts, chat = organisms / "prompts", str(organisms / "chat")
    train = ["--harmful", str(prompts / "harmful_train.jsonl")]
    train += ["--harmless", str(prompts / "harmless_train.jsonl")]
    test = ["--harmful", str(prompts / "harmful_test.jsonl")]
    test += ["--harmless", str(prompts / "harmless_test.jsonl"), "--limit", "40"]
    fast = ["--max-new-tokens", "10"]
    runs = {}
    runs["extract"] = _run(["refusal", "extract", chat, *train, *fast, "--out", str(root / "dir")])
    phrases = json.loads((root / "dir" / "selected.json").read_text())["refusal_phrases"]
    runs["export"] = _run(
        ["refusal", "export", chat, "--direction", str(root / "dir"), *test, *fast]
        + ["--out", str(root / "orth")]
    )
    runs["eval_exported"] = _run(
        ["refusal", "eval", str(root / "orth"), "--reference", chat, *test, *fast]
        + ["--refusal-phrases", *phrases, "--text", str(organisms / "corpus" / "text.txt")]
        + ["--out", str(root / "ev_orth")]
    )
    runs["eval_chat"] = _run(
        ["refusal", "eval", chat, *test, *fast, "--out", str(root / "ev_chat")]
    )
    return root, runs, phrases


@pytest.mark.slow
def test_extract_prints_held_out_refusal_rates(chat_runs, organisms):
    root, runs, _ = chat_runs
    code, out = runs["extract"]
    assert code == 0
    # 256 lines per file: 32 test + 32 val held out, 128 train (n_train) of the 192 left
    assert "prompts (train/val/test): harmful 128/32/32, harmless 128/32/32 (seed 0)" in out
    ev = json.loads((root / "dir" / "test_eval.json").read_text())
    rate = ev["refusal_rate"]
    assert ev["n_prompts"] == {"harmful": 32, "harmless": 32}
    assert rate["harmful"]["baseline"] >= 0.9 and rate["harmful"]["ablation"] <= 0.1
    assert rate["harmless"]["baseline"] <= 0.1 and rate["harmless"]["addition"] >= 0.8
    assert 0 <= ev["kl_harmless"] <= 0.1
    h = rate["harmful"]
    assert (
        f"test harmful (32 prompts) refusal rate: baseline {h['baseline']:.0%}, "
        f"ablated {h['ablation']:.0%}, added {h['addition']:.0%}" in out
    )
    assert f"test KL on harmless prompts (baseline || ablated): {ev['kl_harmless']:.4f}" in out
    # the test prompts are the split's held-out ones, never train or validation prompts
    from diffing.refusal import RefusalConfig, read_prompts

    split = split_set(
        read_prompts(organisms / "prompts" / "harmful_train.jsonl"), RefusalConfig(), "harmful"
    )
    shown = {e["prompt"] for e in ev["examples"] if e["set"] == "harmful"}
    assert shown and shown <= set(split.test) and not shown & set(split.train + split.val)


@pytest.mark.slow
def test_export_check_matches_a_separate_eval(chat_runs):
    root, runs, phrases = chat_runs
    assert runs["export"][0] == 0 and runs["eval_exported"][0] == 0
    exp = json.loads((root / "orth" / "export.json").read_text())
    assert exp["strength"] == 1.0 and exp["layers"] is None
    check = exp["check"]
    assert check["refusal_phrases"] == phrases and check["n_prompts"] == {
        "harmful": 40,
        "harmless": 40,
    }
    assert check["reference_refusal_rate"]["harmful"] >= 0.9  # the original refuses ...
    assert check["refusal_rate"]["harmful"] <= 0.1  # ... the reloaded export does not
    assert check["refusal_rate"]["harmless"] <= 0.1 and 0 < check["kl_harmless"] <= 0.1
    ev = json.loads((root / "ev_orth" / "eval.json").read_text())
    assert ev["refusal_rate"] == check["refusal_rate"]
    assert ev["reference_refusal_rate"] == check["reference_refusal_rate"]
    assert ev["kl_harmless"] == pytest.approx(check["kl_harmless"], abs=1e-6)
    loss = ev["text_loss"]  # the reference's and the model's plain-text loss, both measured
    assert loss["reference"] > 0 and loss["model"] > 0
    assert loss["change"] == pytest.approx(loss["model"] - loss["reference"])
    assert abs(loss["relative_change"]) < 0.2  # removing refusal barely touches plain text
    assert "Plain-text loss:" in (root / "ev_orth" / "eval.md").read_text()
    out = runs["export"][1]
    assert f"harmful (40 prompts) refusal rate: {check['refusal_rate']['harmful']:.0%}" in out
    assert (
        f"KL to the original on harmless prompts (first token): {check['kl_harmless']:.4f}" in out
    )


@pytest.mark.slow
def test_eval_measures_a_model_on_its_own(chat_runs, organisms):
    root, runs, _ = chat_runs
    assert runs["eval_chat"][0] == 0
    ev = json.loads((root / "ev_chat" / "eval.json").read_text())
    planted = json.loads((organisms / "organism.json").read_text())["variants"]["chat"]["planted"]
    # the phrase comes from the model's own answers (compared here with the organism's ground truth)
    assert ev["refusal_phrases_from"] == "model"
    (phrase,) = ev["refusal_phrases"]
    assert phrase.lower() in planted["refusal_phrase"].lower()
    assert ev["refusal_rate"]["harmful"] >= 0.9 and ev["refusal_rate"]["harmless"] <= 0.1
    assert ev["reference"] is None and ev["kl_harmless"] is None
    assert ev["refusal_score"]["harmful"] > 0 > ev["refusal_score"]["harmless"]


@pytest.mark.slow
def test_eval_of_a_model_that_no_longer_refuses_asks_for_a_reference(chat_runs, organisms, capsys):
    root, _, _ = chat_runs
    prompts = organisms / "prompts"
    argv = ["refusal", "eval", str(root / "orth"), "--harmful", str(prompts / "harmful_test.jsonl")]
    argv += ["--harmless", str(prompts / "harmless_test.jsonl"), "--limit", "20"]
    assert main(argv + ["--max-new-tokens", "10", "--out", str(root / "ev_none")]) == 2
    err = capsys.readouterr().err
    assert "could not infer a refusal phrase" in err and "--reference" in err
    assert err.count("\n") == 1
