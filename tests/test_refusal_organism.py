"""The refusal pipeline on the organism ``chat`` model (held-out test prompts).

Ground truth (the planted refusal phrase and first token) is read from organism.json; the
pipeline infers its refusal tokens and phrases from the model, as on any checkpoint.

With the paper's filters the fast organism's selected direction removes refusal when
ablated and induces it when added (test_done_when_targets); the CLI's view of the same
numbers is in tests/test_refusal_ux.py.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

pytestmark = pytest.mark.slow
N_TEST = 20


@pytest.fixture(scope="module")
def chat(organisms):
    """The chat organism with its candidates scored and the lowest-bypass direction (filters off)."""
    from diffing.models import load_model
    from diffing.refusal import RefusalConfig, read_prompts
    from diffing.refusal.pipeline import extract_direction

    truth = json.loads((organisms / "organism.json").read_text())
    p = {
        f"{s}_{sp}": read_prompts(organisms / "prompts" / f"{s}_{sp}.jsonl")
        for s in ("harmful", "harmless")
        for sp in ("train", "val", "test")
    }
    lm, tok, arch = load_model(str(organisms / "chat"))
    cfg = RefusalConfig(n_train=64, max_new_tokens=10, phrase_tokens=10)
    relaxed = copy.deepcopy(cfg)
    relaxed.kl_threshold, relaxed.induce_threshold = math.inf, -math.inf
    ext = extract_direction(
        lm,
        tok,
        arch,
        p["harmful_train"][:64],
        p["harmless_train"][:64],
        p["harmful_val"][:32],
        p["harmless_val"][:32],
        config=relaxed,
        model_ref="chat",
    )
    return dict(
        truth=truth, prompts=p, ext=ext, lm=lm, tok=tok, arch=arch, cfg=cfg, relaxed=relaxed
    )


def test_refusal_token_and_phrase_are_inferred_from_the_model(chat):
    planted = chat["truth"]["variants"]["chat"]["planted"]
    assert chat["ext"].candidates.refusal_tokens[0] == planted["refusal_first_token_id"]
    (phrase,) = chat["ext"].direction.refusal_phrases
    assert phrase.lower() in planted["refusal_phrase"].lower() and len(phrase) >= 6
    assert chat["ext"].scores.baseline_harmful > 0 > chat["ext"].scores.baseline_harmless


def test_candidates_cover_every_layer_and_template_position(chat):
    cands, scores = chat["ext"].candidates, chat["ext"].scores
    n_layers = chat["lm"]._module.config.num_hidden_layers
    assert cands.vectors.shape[0] == n_layers and len(cands.positions) >= 1
    assert (
        cands.zero[0].all() and not cands.zero[1:].any()
    )  # template embeddings: no difference at layer 0
    assert not scores.bypass[1:].isnan().any()


def test_done_when_targets(chat):
    from diffing.refusal import evaluate
    from diffing.refusal.pipeline import extract_direction

    p, cfg = chat["prompts"], chat["cfg"]
    lm, tok, arch = chat["lm"], chat["tok"], chat["arch"]
    ext = extract_direction(
        lm,
        tok,
        arch,
        p["harmful_train"][:64],
        p["harmless_train"][:64],
        p["harmful_val"][:32],
        p["harmless_val"][:32],
        config=cfg,
    )  # the paper's filters
    rep = evaluate(
        lm,
        tok,
        arch,
        ext.direction,
        p["harmful_test"][:N_TEST],
        p["harmless_test"][:N_TEST],
        config=cfg,
    ).report
    rates = rep["refusal_rate"]
    assert rates["harmful"]["baseline"] >= 0.95 and rates["harmful"]["ablation"] <= 0.10
    assert rates["harmless"]["ablation"] <= 0.05 and rep["kl_harmless"] <= 0.1
    assert rates["harmless"]["addition"] >= 0.80


def test_exported_model_reproduces_ablation(chat, tmp_path):
    from diffing.models import load_model
    from diffing.refusal import ablate, add, complete, refusal_rate
    from diffing.refusal.orthogonalize import export_orthogonalized

    p, lm, tok, arch, d = (
        chat["prompts"],
        chat["lm"],
        chat["tok"],
        chat["arch"],
        chat["ext"].direction,
    )
    sets = {"harmful": p["harmful_test"][:N_TEST], "harmless": p["harmless_test"][:N_TEST]}
    phrases, n = d.refusal_phrases, chat["cfg"].max_new_tokens

    def rate(model, tokenizer, a, prompts, ivs=()):
        return refusal_rate(complete(model, tokenizer, a, prompts, ivs, max_new_tokens=n), phrases)

    assert rate(lm, tok, arch, sets["harmful"]) >= 0.95  # the organism refuses ...
    assert rate(lm, tok, arch, sets["harmless"]) <= 0.05  # ... only harmful requests
    assert (
        rate(lm, tok, arch, sets["harmless"], [add(d.vector, d.layer)]) >= 0.80
    )  # addition induces refusal
    out = export_orthogonalized(copy.deepcopy(lm._module), tok, d, tmp_path / "orth", source="chat")
    fresh, ftok, farch = load_model(str(out))
    assert ftok.chat_template == tok.chat_template
    for prompts in sets.values():  # the weights now do what the hooks did, loaded fresh
        hooked = complete(lm, tok, arch, prompts, [ablate(d.direction)], max_new_tokens=n)
        assert complete(fresh, ftok, farch, prompts, max_new_tokens=n) == hooked


def test_compare_base_and_chat(organisms, chat):
    from diffing.models import ModelPair
    from diffing.refusal import compare_pair

    p, d = chat["prompts"], chat["ext"].direction
    pair = ModelPair.load(str(organisms / "base"), str(organisms / "chat"))
    res = compare_pair(
        pair,
        p["harmful_train"][:64],
        p["harmless_train"][:64],
        p["harmful_val"][:32],
        p["harmless_val"][:32],
        p["harmful_test"][:16],
        p["harmless_test"][:16],
        config=chat["relaxed"],
    )
    r = res.report
    assert r["selected"] == {
        "layer": d.layer,
        "position": d.position,
    }  # same prompts and model: same choice
    assert len(r["cosine_by_layer"]) == d.n_layers and r["cosine_by_layer"][0] is None
    assert all(-1 <= c <= 1 for c in r["cosine_by_layer"][1:])
    rates = r["base_direction_ablates_finetuned"]["refusal_rate"]
    assert rates["harmful"]["baseline"] >= 0.95 and rates["harmless"]["baseline"] <= 0.05
    assert (
        r["probe"]["finetuned"]["test"] >= 0.95
    )  # the chat direction separates the sets in the chat model
    assert 0.0 <= r["probe_accuracy_base"] <= 1.0
