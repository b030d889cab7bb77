"""Activation Difference Lens on a pair with a planted difference: a constant vector along one
token's unembedding, added to one block's output through its MLP output bias (GPT-2 has one)."""

from __future__ import annotations

import pytest
import torch

from diffing.stats import StatsConfig, compute_stats

TEXTS = ["the quick brown fox jumps over the lazy dog. a model reads text"] * 6


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """``(pair, token_id, v)``: the fine-tuned GPT-2 adds ``v`` (along token_id's unembedding) after block 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffing.models import ModelPair
    from diffing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("adl")
    base = build_tiny_model(root / "base", "gpt2", layers=3, hidden=64)
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    token_id = tok.convert_tokens_to_ids(tok.tokenize(" mountains"))[0]
    w = model.lm_head.weight[token_id].detach()
    v = (
        0.02 * w / w.norm()
    )  # small next to the residual norm (~0.3): unsteered text does not show it
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.bias += v
    model.save_pretrained(root / "ft")
    tok.save_pretrained(root / "ft")
    return ModelPair.load(str(base), str(root / "ft")), token_id, v


@pytest.mark.slow
def test_adl_recovers_planted_direction_and_steers(planted):
    pair, token_id, v = planted
    cfg = StatsConfig(steer_prompts=1, steer_tokens=8, weights=True)
    r = compute_stats(pair, texts=TEXTS, tokens=400, adl_layer=1, config=cfg)
    adl = r["adl"]
    assert adl["layer"] == 1 and adl["positions"] == [1, 2, 3, 4, 5]
    assert adl["diff_norm"] == pytest.approx(
        float(v.norm()), rel=1e-4
    )  # the mean difference is v itself
    assert (
        adl["promoted_tokens"][0]["id"] == token_id
    )  # read through the logit lens: the planted token
    assert adl["suppressed_tokens"][0]["score"] < adl["promoted_tokens"][0]["score"]
    # the only changed weight is the bias we edited; it has no rank (a vector)
    top = r["weights"]["modules"][0]
    assert top["name"] == "transformer.h.1.mlp.c_proj.bias" and top["effective_rank"] is None
    # activations: zero before block 1, exactly v at block 1
    layers = {row["layer"]: row for row in r["activations"]["layers"]}
    assert layers[0]["mean_diff_norm"] == 0.0 and layers[0]["cosine"] == pytest.approx(
        1.0, abs=1e-6
    )
    assert layers[1]["mean_diff_norm"] == pytest.approx(float(v.norm()), rel=1e-4)
    # Patchscope: the difference placed at the identity prompt's last position is read back as the token
    scope = adl["patchscope"]
    assert [p["norm"] for p in scope] == pytest.approx(
        [s * adl["mean_norm_finetuned"] for s in (0.5, 1.0, 2.0)]
    )
    assert scope[-1]["tokens"][0]["id"] == token_id
    # steering along the difference makes the fine-tuned model say the planted token
    ex = r["adl"]["steering"]["examples"][0]
    assert ex["steered"].count(" mountains") >= 3 > ex["unsteered"].count(" mountains")


def test_batched_steering_rows_equal_separate_generations(tiny_pair):
    """One batched generation gives the same unsteered and steered text as two separate ones."""
    from diffing.stats.adl import _generate, steer

    lm, tok = tiny_pair.finetuned, tiny_pair.tokenizer
    vector = torch.randn(tiny_pair.d_model, generator=torch.Generator().manual_seed(0))
    vector = 3.0 * vector / vector.norm()
    [got] = steer(tiny_pair, vector, 1, ["the quick brown fox"], scale=1.0, max_new_tokens=6)
    ids = torch.tensor([tok("the quick brown fox")["input_ids"]])
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = _generate(lm, tiny_pair.arch, ids, None, 1, **kw)[0, ids.shape[1] :].tolist()
    pushed = _generate(lm, tiny_pair.arch, ids, vector, 1, **kw)[0, ids.shape[1] :].tolist()
    assert got["unsteered"] == tok.decode(plain, skip_special_tokens=False)
    assert got["steered"] == tok.decode(pushed, skip_special_tokens=False)
    assert got["steered"] != got["unsteered"]  # the vector really changed the second row only
