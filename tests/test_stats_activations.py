"""Activation and KL statistics: known answers on hand-made tensors and on a pair where one
module was perturbed by hand (zero difference before its layer, non-zero after)."""

from __future__ import annotations

import pytest
import torch

from diffing.errors import DiffingError
from diffing.stats import ActivationAccumulator, StatsConfig, compute_stats, token_kl
from diffing.tokens import ROLE_IDS

TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "a model reads text and predicts the next token.",
] * 4
CHATS = [
    [
        {"role": "user", "content": "tell me how to bake bread"},
        {"role": "assistant", "content": "here is a short answer"},
    ]
] * 4
CFG = StatsConfig(steer_prompts=0, weights=False)


def test_accumulator_matches_direct_computation():
    gen = torch.Generator().manual_seed(0)
    xb = torch.randn(2, 5, 8, generator=gen)  # [batch, seq, d]
    xf = xb + 0.3 * torch.randn(2, 5, 8, generator=gen)
    keep = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    roles = torch.full((2, 5), ROLE_IDS["user"], dtype=torch.int8)
    roles[1, 3:] = ROLE_IDS["assistant"]
    acc = ActivationAccumulator([0], 8)
    acc.update({0: xb}, {0: xf}, keep, roles)
    row = acc.result()[0]
    b, f = xb[keep], xf[keep]  # [7, d]
    assert row["tokens"] == 7
    assert row["mean_diff_norm"] == pytest.approx(float((f - b).mean(0).norm()), rel=1e-5)
    assert row["cosine"] == pytest.approx(
        float(torch.cosine_similarity(b, f, dim=-1).mean()), rel=1e-5
    )
    assert row["relative_norm_change"] == pytest.approx(
        float(((f - b).norm(dim=-1) / b.norm(dim=-1)).mean()), rel=1e-5
    )
    asst = roles[keep] == ROLE_IDS["assistant"]
    assert row["by_role"]["assistant"]["tokens"] == 2
    assert row["by_role"]["assistant"]["mean_diff_norm"] == pytest.approx(
        float((f - b)[asst].mean(0).norm()), rel=1e-5
    )


def test_token_kl_matches_definition():
    gen = torch.Generator().manual_seed(1)
    lf, lb = torch.randn(2, 3, 11, generator=gen), torch.randn(2, 3, 11, generator=gen)
    pf, pb = lf.softmax(-1), lb.softmax(-1)
    expected = (pf * (pf.log() - pb.log())).sum(-1)  # KL(p_f || p_b)
    assert torch.allclose(token_kl(lf, lb), expected, atol=1e-6)
    assert torch.equal(token_kl(lf, lf), torch.zeros(2, 3))


@pytest.fixture(scope="module")
def perturbed_pair(tmp_path_factory):
    """A 4-layer tiny Llama and a copy whose layer-2 MLP output weights were perturbed by hand."""
    from diffing.models import ModelPair
    from diffing.tiny import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("stats_pair")
    base = build_tiny_model(root / "base", "llama", layers=4)
    ft = perturb_model(base, root / "ft", modules=["layers.2.mlp.down_proj"], scale=0.5)
    return ModelPair.load(str(base), str(ft))


@pytest.mark.slow
def test_differences_are_zero_before_the_changed_layer_and_not_after(perturbed_pair):
    r = compute_stats(perturbed_pair, texts=TEXTS, chats=CHATS, tokens=300, config=CFG)
    rows = r["activations"]["layers"]
    assert [row["layer"] for row in rows] == [0, 1, 2, 3]
    for row in rows[:2]:
        assert row["mean_diff_norm"] == 0.0 and row["relative_norm_change"] == 0.0
        assert row["cosine"] == pytest.approx(1.0, abs=1e-6)
    for row in rows[2:]:
        assert row["relative_norm_change"] > 1e-3 and row["cosine"] < 1.0
        assert set(row["by_role"]) == {"text", "user", "assistant", "template"}
    assert (
        r["kl"]["mean"] > 0
        and r["kl"]["text"]["tokens"] + r["kl"]["chat"]["tokens"] == r["tokens"]["total"]
    )
    top = r["kl"]["top_contexts"]
    assert [c["kl"] for c in top] == sorted((c["kl"] for c in top), reverse=True)
    assert top[0]["kl"] == pytest.approx(r["kl"]["max"])
    assert all(len(c["finetuned_top"]) == 5 and len(c["base_top"]) == 5 for c in top)
    assert any(o["offset"] == 0 for o in r["kl"]["by_assistant_offset"])


def test_identical_models_give_zero_statistics(tiny_pair_dirs):
    from diffing.models import ModelPair

    pair = ModelPair.load(str(tiny_pair_dirs[0]), str(tiny_pair_dirs[0]))
    r = compute_stats(pair, texts=TEXTS, tokens=200, config=StatsConfig(steer_prompts=0))
    assert r["weights"]["modules"] == []
    assert all(row["mean_diff_norm"] == 0.0 for row in r["activations"]["layers"])
    assert (
        r["kl"]["max"] == 0.0 and r["adl"]["diff_norm"] == 0.0 and r["adl"]["promoted_tokens"] == []
    )


def test_bad_inputs_raise_user_errors(tiny_pair):
    with pytest.raises(DiffingError, match="positive"):
        compute_stats(tiny_pair, texts=TEXTS, tokens=0, config=CFG)
    with pytest.raises(DiffingError, match="no tokens"):
        compute_stats(tiny_pair, texts=["", " "], tokens=100, config=CFG)
    with pytest.raises(DiffingError, match="out of range"):
        compute_stats(tiny_pair, texts=TEXTS, tokens=100, layers=[5], config=CFG)
    with pytest.raises(DiffingError, match="out of range"):
        compute_stats(tiny_pair, texts=TEXTS, tokens=100, adl_layer=-3, config=CFG)
