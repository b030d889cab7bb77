"""Weight orthogonalisation equals directional ablation, on every supported family."""

from __future__ import annotations

import copy

import pytest
import torch

from diffing.arch import FAMILIES
from diffing.refusal import Direction, ablate, forward_last, orthogonalize_model
from diffing.refusal.orthogonalize import export_orthogonalized

PRE_NORM = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2"]
POST_SUBLAYER_NORM = ["gemma2", "gemma3_text", "olmo2"]


def _direction(lm, r: torch.Tensor) -> Direction:
    cfg = lm._module.config
    from diffing.arch import d_model, num_layers

    return Direction(
        direction=r / r.norm(),
        layer=1,
        position=-1,
        norm=float(r.norm()),
        family=cfg.model_type,
        d_model=d_model(cfg),
        n_layers=num_layers(cfg),
        model_ref="tiny",
    )


@pytest.fixture(scope="module")
def ids():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 300, (2, 9), generator=gen)
    return ids, torch.ones_like(ids)


def test_families_are_all_covered():
    assert sorted(PRE_NORM + POST_SUBLAYER_NORM) == sorted(FAMILIES)


@pytest.mark.parametrize("family", PRE_NORM + POST_SUBLAYER_NORM)
def test_exported_model_matches_ablation(family, tmp_path, ids):
    from transformers import AutoModelForCausalLM

    from diffing.models import load_model
    from diffing.tiny import build_tiny_model

    lm, tok, arch = load_model(str(build_tiny_model(tmp_path / "m", family, seed=1)))
    r = torch.randn(lm._module.config.hidden_size, generator=torch.Generator().manual_seed(2))
    u = r / r.norm()
    input_ids, mask = ids
    ablated, _ = forward_last(lm, arch, input_ids, mask, [ablate(r)])  # [2, vocab] log-probs
    original = copy.deepcopy(lm._module)
    out = export_orthogonalized(
        copy.deepcopy(lm._module), tok, _direction(lm, r), tmp_path / "orth", source="tiny"
    )
    assert (out / "README.md").read_text().startswith("---")
    assert any(p.suffix == ".safetensors" for p in out.iterdir())
    fresh = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        res = fresh(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        orig_logits = original(input_ids=input_ids, attention_mask=mask).logits
    logprobs = torch.log_softmax(res.logits[:, -1].float(), -1)
    # the residual stream (every block input, and the last block's output before the final norm) has no r̂ part
    for h in res.hidden_states[:-1]:  # [2, 9, d]
        assert float((h @ u).abs().max()) <= 1e-5 * float(h.norm(dim=-1).max())
    if family in PRE_NORM:
        assert torch.allclose(logprobs, ablated, atol=1e-4), float((logprobs - ablated).abs().max())
    else:  # rms(x) changes when a component of x is removed: close, not equal (docs/methods.md section 4)
        assert float((logprobs - ablated).abs().max()) < 0.2
    assert not torch.allclose(res.logits, orig_logits, atol=1e-3)  # the edit did something
    # the unembedding is untouched, even where it was tied to the embedding
    assert torch.equal(
        fresh.get_output_embeddings().weight, original.get_output_embeddings().weight
    )


def test_tied_embeddings_are_untied_before_editing(tmp_path, ids):
    from transformers import AutoModelForCausalLM

    from diffing.models import load_model
    from diffing.tiny import build_tiny_model

    lm, tok, arch = load_model(str(build_tiny_model(tmp_path / "m", "gpt2")))
    model = lm._module
    assert (
        model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    )  # GPT-2 ties them
    unembed = model.lm_head.weight.detach().clone()
    r = torch.randn(model.config.n_embd)
    orthogonalize_model(model, r, arch)
    assert torch.equal(model.lm_head.weight, unembed)
    assert float((model.transformer.wte.weight.detach() @ (r / r.norm())).abs().max()) < 1e-6
    assert float((model.transformer.wpe.weight.detach() @ (r / r.norm())).abs().max()) < 1e-6
    model.save_pretrained(tmp_path / "o")
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path / "o")
    assert torch.equal(fresh.lm_head.weight, unembed)


def test_direction_from_another_model_is_refused(tmp_path):
    from diffing.errors import DiffingError
    from diffing.models import load_model
    from diffing.tiny import build_tiny_model

    lm, tok, _ = load_model(str(build_tiny_model(tmp_path / "m", "llama")))
    wide = Direction(
        direction=torch.ones(64) / 8,
        layer=1,
        position=-1,
        norm=1.0,
        family="llama",
        d_model=64,
        n_layers=2,
        model_ref="other",
    )
    with pytest.raises(DiffingError, match="d_model 64"):
        export_orthogonalized(lm._module, tok, wide, tmp_path / "x")
    other_family = Direction(
        direction=torch.ones(32) / 32**0.5,
        layer=1,
        position=-1,
        norm=1.0,
        family="qwen2",
        d_model=32,
        n_layers=2,
        model_ref="other",
    )
    with pytest.raises(DiffingError, match="qwen2"):
        export_orthogonalized(lm._module, tok, other_family, tmp_path / "y")
    wide.save(tmp_path / "d")
    loaded = Direction.load(tmp_path / "d")
    assert loaded.d_model == 64 and torch.equal(loaded.direction, wide.direction)
