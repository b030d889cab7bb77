"""A refusal direction planted into a tiny model's weights is found again, and interventions act on it.

The planted model (a tiny random Llama, edited by hand): the trigger token's embedding
gets a large component along a chosen unit vector ``u`` (no other token has any); block 0's
attention averages ``u·x / rms(x)`` over the prompt and writes it along ``u``; block 0's MLP
is silenced; the unembedding row of one output token reads ``u``. Prompts containing the
trigger therefore start their answer with that token ("refuse"); others never do.
"""

from __future__ import annotations

import pytest
import torch

from diffing.refusal import (
    RefusalConfig,
    ablate,
    add,
    extract_candidates,
    forward_last,
    refusal_scores,
    score_candidates,
    select_direction,
)
from diffing.refusal.candidates import encode_prompts, post_instruction_count
from diffing.tokens import pad_batch, pad_id_of

WORDS = [
    "rivers",
    "mountains",
    "cities",
    "bread",
    "dog",
    "lazy",
    "quick",
    "brown",
    "answer",
    "short",
    "text",
]


def _prompts(n: int, trigger: str | None, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        words = [WORDS[int(i)] for i in torch.randint(len(WORDS), (6,), generator=gen)]
        if trigger:
            for k in (1, 3, 5):
                words.insert(k, trigger)
        out.append("tell me about " + " ".join(words))
    return out


def plant(lm, tokenizer, trigger: str, answer: str, seed: int = 3) -> tuple[torch.Tensor, int]:
    """Write the refusal circuit into ``lm`` (a tiny Llama); returns ``(u, answer token id)``."""
    model = lm._module
    d = model.config.hidden_size
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    u = u / u.norm()
    trig = tokenizer.encode(" " + trigger, add_special_tokens=False)
    (ans,) = tokenizer.encode(" " + answer, add_special_tokens=False)
    layer0 = model.model.layers[0]
    with torch.no_grad():
        emb = model.model.embed_tokens.weight  # [vocab, d]
        emb -= (emb @ u)[:, None] * u  # no token carries u ...
        emb[trig] += 1.0 * u  # ... except the trigger
        attn = layer0.self_attn
        attn.q_proj.weight.zero_()  # uniform causal attention
        attn.k_proj.weight.zero_()
        attn.v_proj.weight.zero_()
        attn.v_proj.weight[0] = u / layer0.input_layernorm.weight  # value: u·x / rms(x)
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[:, 0] = u  # written along u
        layer0.mlp.down_proj.weight.zero_()
        model.lm_head.weight[ans] = 3.0 * u / model.model.norm.weight  # the answer token reads u
    return u, ans


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from diffing.models import load_model
    from diffing.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("planted") / "m", "llama", layers=3, seed=5)
    lm, tok, arch = load_model(str(path))
    for w in WORDS + ["tell", "me", "about"]:
        assert 350 not in tok.encode(" " + w, add_special_tokens=False)
    u, ans = plant(lm, tok, "fox", "jumps")
    data = {
        "harmful": _prompts(24, "fox", 0),
        "harmless": _prompts(24, None, 1),
        "harmful_val": _prompts(12, "fox", 2),
        "harmless_val": _prompts(12, None, 3),
    }
    cfg = RefusalConfig(batch_size=16)
    cands = extract_candidates(lm, tok, arch, data["harmful"], data["harmless"], config=cfg)
    scores = score_candidates(
        lm, tok, arch, cands, data["harmful_val"], data["harmless_val"], config=cfg
    )
    direction = select_direction(
        lm, tok, arch, cands, data["harmful_val"], data["harmless_val"], config=cfg, scores=scores
    )
    return dict(
        lm=lm,
        tok=tok,
        arch=arch,
        u=u,
        ans=ans,
        cands=cands,
        scores=scores,
        direction=direction,
        **data,
    )


def _first_token_logprobs(p, prompts, interventions=()):
    enc = encode_prompts(p["tok"], prompts)
    batch = pad_batch(enc, pad_id_of(p["tok"]))
    return forward_last(p["lm"], p["arch"], batch.input_ids, batch.attention_mask, interventions)[0]


def test_planted_model_refuses_only_triggered_prompts(planted):
    lp_h = _first_token_logprobs(planted, planted["harmful_val"])
    lp_s = _first_token_logprobs(planted, planted["harmless_val"])
    assert (lp_h.argmax(-1) == planted["ans"]).all()
    assert (lp_s[:, planted["ans"]].exp() < 0.05).all()


def test_inferred_refusal_tokens_are_the_planted_answer(planted):
    assert planted["cands"].refusal_tokens[0] == planted["ans"]
    assert planted["cands"].n_harmful == 24 and planted["cands"].n_harmless == 24


def test_planted_direction_is_recovered(planted):
    d = planted["direction"]
    cos = float(d.direction @ planted["u"])
    assert abs(cos) >= 0.9, cos
    assert cos > 0  # harmful minus harmless points along +u
    assert d.layer >= 1  # layer 0 holds only the embedding: no difference at template tokens
    assert torch.allclose(d.direction.norm(), torch.tensor(1.0), atol=1e-5)


def test_layer_zero_template_candidates_are_skipped_not_normalised(planted):
    cands, scores = planted["cands"], planted["scores"]
    assert cands.zero[
        0
    ].all()  # template tokens at the block-0 input: identical embeddings in both sets
    assert torch.isnan(scores.bypass[0]).all() and not scores.valid[0].any()
    assert not cands.zero[1:].any()


def test_post_instruction_positions_come_from_the_template(planted):
    tok = planted["tok"]
    enc = encode_prompts(tok, ["hello"])[0]
    n = post_instruction_count([enc])
    assert planted["cands"].positions == list(range(-n, 0))
    tail = tok.decode(enc.input_ids[-n:])
    assert (
        tail
        == tok.apply_chat_template(
            [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
        ).split("hello")[-1]
    )


def test_scores_follow_the_paper_definitions(planted):
    d, s = planted["direction"], planted["scores"]
    assert s.baseline_harmful > 2 and s.baseline_harmless < -2
    assert d.scores["bypass"] < -2  # ablation removes the refusal
    assert d.scores["induce"] > 0  # addition creates it
    assert d.scores["kl"] <= 0.1
    # bypass from one batched scoring pass equals a direct ablated forward
    tokens = planted["cands"].refusal_tokens
    lp = _first_token_logprobs(planted, planted["harmful_val"], [ablate(d.direction)])
    assert abs(float(refusal_scores(lp, tokens).mean()) - d.scores["bypass"]) < 1e-3
    lp = _first_token_logprobs(planted, planted["harmless_val"], [add(d.vector, d.layer)])
    assert abs(float(refusal_scores(lp, tokens).mean()) - d.scores["induce"]) < 1e-3


def test_ablation_strength_interpolates(planted):
    d, tokens = planted["direction"], planted["cands"].refusal_tokens
    means = [
        float(
            refusal_scores(
                _first_token_logprobs(planted, planted["harmful_val"], [ablate(d.direction, s)]),
                tokens,
            ).mean()
        )
        for s in (0.0, 0.5, 1.0)
    ]
    assert means[0] > means[1] > means[2]
    assert abs(means[0] - d.scores["baseline_harmful"]) < 1e-3


def test_generation_interventions_act_on_every_step(planted):
    from diffing.refusal import complete

    d, lm, tok, arch = planted["direction"], planted["lm"], planted["tok"], planted["arch"]
    word = tok.decode([planted["ans"]]).strip()
    harmful, harmless = planted["harmful_val"][:6], planted["harmless_val"][:6]
    base = complete(lm, tok, arch, harmful, max_new_tokens=4)
    assert all(c.strip().startswith(word) for c in base)
    ablated = complete(lm, tok, arch, harmful, [ablate(d.direction)], max_new_tokens=4)
    assert not any(
        word in c for c in ablated
    )  # not only the first token: no later step refuses either
    assert not any(
        c.strip().startswith(word) for c in complete(lm, tok, arch, harmless, max_new_tokens=4)
    )
    added = complete(lm, tok, arch, harmless, [add(d.vector, d.layer, 2.0)], max_new_tokens=4)
    assert all(c.strip().startswith(word) for c in added)
