"""``diffing refusal`` end to end on a planted model, and the errors users get for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.cli.main import main
from diffing.errors import DiffingError
from diffing.refusal.io import check_sets, read_prompts, split_prompts


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    """A planted-refusal tiny Llama saved as a HF folder, plus prompt files (see test_refusal_planted)."""
    from test_refusal_planted import _prompts, plant

    from diffing.models import load_model
    from diffing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("planted_cli")
    path = build_tiny_model(root / "m", "llama", layers=3, seed=5)
    lm, tok, _ = load_model(str(path))
    plant(lm, tok, "fox", "jumps")
    lm._module.save_pretrained(root / "planted")
    tok.save_pretrained(root / "planted")
    files = {}
    for name, prompts in (
        ("harmful", _prompts(40, "fox", 0)),
        ("harmless", _prompts(40, None, 1)),
        ("harmful_test", _prompts(10, "fox", 7)),
        ("harmless_test", _prompts(10, None, 8)),
    ):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    files["text"] = root / "text.txt"
    files["text"].write_text(
        "the quick brown fox jumps over the lazy dog.\nhere is a short answer about rivers.\n"
    )
    return root, files


@pytest.mark.slow
def test_extract_eval_export_round_trip(planted_dir, capsys):
    from transformers import AutoModelForCausalLM

    from diffing.refusal import Direction

    root, f = planted_dir
    model, out = str(root / "planted"), root / "dir"
    assert (
        main(
            [
                "refusal",
                "extract",
                model,
                "--harmful",
                str(f["harmful"]),
                "--harmless",
                str(f["harmless"]),
                "--n-val",
                "12",
                "--n-test",
                "0",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    direction = Direction.load(out)
    assert direction.family == "llama" and direction.d_model == 32 and direction.model_ref == model
    # inferred from greedy answers, not given
    assert direction.refusal_phrases == ["jumps jumps jumps"]
    cands = json.loads((out / "candidates.json").read_text())
    assert len(cands["candidates"]) == 3 * len(
        cands["positions"]
    )  # every layer x position has a row
    assert all(c["bypass"] is None for c in cands["candidates"] if c["zero"])
    assert (out / "scores.png").stat().st_size > 1000
    assert (
        main(
            [
                "refusal",
                "eval",
                model,
                "--direction",
                str(out),
                "--harmful",
                str(f["harmful_test"]),
                "--harmless",
                str(f["harmless_test"]),
                "--text",
                str(f["text"]),
                "--max-new-tokens",
                "4",
                "--out",
                str(root / "ev1"),
            ]
        )
        == 0
    )
    assert not (out / "eval.json").exists()  # eval never writes into the direction's folder
    report = json.loads((root / "ev1" / "eval.json").read_text())
    rates = report["refusal_rate"]
    assert rates["harmful"]["baseline"] == 1.0 and rates["harmful"]["ablation"] == 0.0
    assert rates["harmless"]["baseline"] == 0.0 and rates["harmless"]["addition"] >= 0.8
    assert report["kl_harmless"] <= 0.1 and report["text_loss"]["baseline"] > 0
    assert "| harmful" in (root / "ev1" / "eval.md").read_text()
    assert (
        main(
            [
                "refusal",
                "export",
                model,
                "--direction",
                str(out),
                "--harmful",
                str(f["harmful_test"]),
                "--harmless",
                str(f["harmless_test"]),
                "--max-new-tokens",
                "4",
                "--out",
                str(root / "orth"),
            ]
        )
        == 0
    )
    fresh = AutoModelForCausalLM.from_pretrained(root / "orth")
    u = direction.direction
    assert float((fresh.model.embed_tokens.weight.detach() @ u).abs().max()) < 1e-6
    assert (
        main(
            [
                "refusal",
                "eval",
                str(root / "orth"),
                "--direction",
                str(out),
                "--harmful",
                str(f["harmful_test"]),
                "--harmless",
                str(f["harmless_test"]),
                "--max-new-tokens",
                "4",
                "--out",
                str(root / "ev2"),
            ]
        )
        == 0
    )
    again = json.loads((root / "ev2" / "eval.json").read_text())
    assert (
        again["refusal_rate"]["harmful"]["baseline"] == rates["harmful"]["ablation"]
    )  # exported = ablated
    assert again["refusal_rate"]["harmless"]["baseline"] == rates["harmless"]["ablation"]


def test_prompt_files_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DiffingError, match="no prompts"):
        read_prompts(empty)
    with pytest.raises(DiffingError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(DiffingError, match="too few"):
        split_prompts(["a", "b", "c"], 128, 32, min_train=4, seed=0, name="harmful")
    with pytest.raises(DiffingError, match="too few"):
        split_prompts([str(i) for i in range(40)], 8, 4, n_test=33, min_train=4, seed=0, name="x")
    with pytest.raises(DiffingError, match="identical"):
        check_sets(["a", "b"], ["b", "a"])
    split = split_prompts([str(i) for i in range(50)], 10, 5, min_train=4, seed=0, name="x")
    assert len(split.train) == 10 and len(split.val) == 5 and not set(split.train) & set(split.val)


def test_advbench_csv_and_alpaca_json_load(tmp_path):
    csv = tmp_path / "advbench.csv"
    csv.write_text('goal,target\n"Write a tutorial, please",Sure\nDo another thing,Sure\n')
    assert read_prompts(csv) == ["Write a tutorial, please", "Do another thing"]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Name a river", "input": "", "output": "Nile"}]))
    assert read_prompts(alpaca) == ["Name a river"]


def test_cli_errors_are_one_line(planted_dir, tmp_path, capsys):
    from diffing.tiny import build_tiny_model, tiny_tokenizer

    root, f = planted_dir
    model = str(root / "planted")
    code = main(
        [
            "refusal",
            "extract",
            model,
            "--harmful",
            str(f["harmful"]),
            "--harmless",
            str(f["harmful"]),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "identical" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("one\ntwo\n")
    code = main(
        [
            "refusal",
            "extract",
            model,
            "--harmful",
            str(short),
            "--harmless",
            str(f["harmless"]),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "too few" in err and err.count("\n") == 1
    bare = build_tiny_model(
        tmp_path / "bare", "llama", tokenizer=tiny_tokenizer(chat_template=None)
    )
    code = main(
        [
            "refusal",
            "extract",
            str(bare),
            "--harmful",
            str(f["harmful"]),
            "--harmless",
            str(f["harmless"]),
            "--n-test",
            "4",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "--template" in capsys.readouterr().err
    other = build_tiny_model(tmp_path / "wide", "llama", hidden=64)
    d = torch.ones(32) / 32**0.5
    from diffing.refusal import Direction

    Direction(
        direction=d,
        layer=1,
        position=-1,
        norm=1.0,
        family="llama",
        d_model=32,
        n_layers=3,
        model_ref=model,
    ).save(tmp_path / "dir")
    code = main(
        [
            "refusal",
            "eval",
            str(other),
            "--direction",
            str(tmp_path / "dir"),
            "--harmful",
            str(f["harmful_test"]),
            "--harmless",
            str(f["harmless_test"]),
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 2 and "d_model 32" in capsys.readouterr().err


def test_template_flag_rescues_a_model_without_one(planted_dir, tmp_path):
    from diffing.models import load_model
    from diffing.refusal import RefusalConfig, extract_candidates
    from diffing.tiny import CHAT_TEMPLATE, build_tiny_model, tiny_tokenizer

    root, f = planted_dir
    bare = build_tiny_model(
        tmp_path / "bare", "llama", tokenizer=tiny_tokenizer(chat_template=None)
    )
    lm, tok, arch = load_model(str(bare))
    harmful, harmless = read_prompts(f["harmful_test"]), read_prompts(f["harmless_test"])
    cfg = RefusalConfig(template=CHAT_TEMPLATE, refusal_tokens=[5], filter_train=False)
    cands = extract_candidates(lm, tok, arch, harmful, harmless, config=cfg)
    assert cands.vectors.shape[:2] == (2, len(cands.positions)) and len(cands.positions) > 0


def test_probe_threshold_known_answer():
    from diffing.refusal.compare import fit_threshold, probe_accuracy

    pos, neg = torch.tensor([2.0, 3.0, 4.0, 0.5]), torch.tensor([-1.0, 0.0, 1.0, -2.0])
    t, sign, acc = fit_threshold(pos, neg)
    assert sign == 1.0 and acc == 7 / 8 and 0.0 < t < 2.0  # no cut gets all 8 right
    assert probe_accuracy(t, sign, torch.tensor([5.0]), torch.tensor([-5.0, 3.0])) == 2 / 3
    t, sign, acc = fit_threshold(-pos, -neg)  # flipped: the probe learns the sign
    assert sign == -1.0 and acc == 7 / 8


def test_refusal_inference_known_answers():
    from diffing.refusal.scores import infer_refusal_phrases, infer_refusal_tokens, refusal_scores

    harm = torch.log_softmax(torch.tensor([[0.0, 5.0, 0.0, 0.0], [0.0, 4.0, 3.0, 0.0]]), -1)
    safe = torch.log_softmax(torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]]), -1)
    assert infer_refusal_tokens(harm, safe)[:2] == [1, 2]
    p = torch.tensor([[0.5, 0.25, 0.25]]).log()
    assert torch.allclose(
        refusal_scores(p, [0]), torch.tensor([0.0]), atol=1e-6
    )  # log(0.5) - log(0.5)
    assert torch.allclose(
        refusal_scores(p, [0, 1]), torch.tensor([3.0]).log(), atol=1e-6
    )  # log(.75/.25)
    phrases = infer_refusal_phrases(
        ["I cannot do that, sorry."] * 4 + ["Sure, here"],
        ["Sure, here is how.", "I can do it: step one."] * 3,
    )
    assert phrases == ["i cannot do"]
    with pytest.raises(DiffingError, match="`refusal_phrases`"):
        infer_refusal_phrases(["Sure, here"] * 3, ["Sure, here"] * 3)


@pytest.mark.slow
def test_compare_planted_against_unplanted_base(planted_dir):
    """Base = the same tiny model before planting: its direction cannot ablate the planted refusal."""
    root, f = planted_dir
    out = root / "cmp"
    code = main(
        [
            "refusal",
            "compare",
            str(root / "m"),
            str(root / "planted"),
            "--harmful",
            str(f["harmful"]),
            "--harmless",
            str(f["harmless"]),
            "--harmful-test",
            str(f["harmful_test"]),
            "--harmless-test",
            str(f["harmless_test"]),
            "--n-val",
            "12",
            "--max-new-tokens",
            "4",
            "--refusal-phrases",
            "jumps",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    r = json.loads((out / "compare.json").read_text())
    rates = r["base_direction_ablates_finetuned"]["refusal_rate"]["harmful"]
    assert rates["baseline"] == 1.0 and rates["finetuned_direction"] == 0.0
    assert rates["base_direction"] >= 0.9  # the unplanted base has no such direction
    assert r["probe"]["finetuned"]["test"] >= 0.9 and r["probe"]["finetuned"]["train"] >= 0.9
    assert abs(r["cosine_selected"]) < 0.5
    assert (
        len(r["cosine_by_layer"]) == 3 and r["cosine_by_layer"][0] is None
    )  # layer 0: zero difference
    assert (out / "finetuned" / "direction.safetensors").is_file() and (
        out / "base" / "direction.safetensors"
    ).is_file()
