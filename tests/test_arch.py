"""Every supported family loads through ModelPair and traces exactly like Hugging Face."""

from __future__ import annotations

import pytest
import torch

from diffing.arch import FAMILIES, arch_for, get_module
from diffing.errors import DiffingError
from diffing.models import ModelPair
from diffing.tiny import build_tiny_model, perturb_model
from diffing.tracing import trace_pair

TEXTS = [
    "the quick brown fox jumps",
    [{"role": "user", "content": "tell me"}, {"role": "assistant", "content": "here is"}],
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_traces_like_hf(tmp_path, family):
    base = build_tiny_model(tmp_path / "b", family)
    ft = perturb_model(base, tmp_path / "f", modules=["layers.1.", "h.1."])
    pair = ModelPair.load(str(base), str(ft))
    assert pair.config.model_type == family and pair.n_layers == 2
    acts = trace_pair(pair, TEXTS, [0, 1])
    for which, saved in (("base", acts.base), ("finetuned", acts.finetuned)):
        model = pair.hf(which)
        captured = {}
        hook = get_module(model, pair.arch.layers)[1].register_forward_hook(
            lambda m, i, o, captured=captured: captured.setdefault(
                "last", o[0] if isinstance(o, tuple) else o
            )
        )
        hs = model(
            input_ids=acts.input_ids, attention_mask=acts.attention_mask, output_hidden_states=True
        ).hidden_states
        hook.remove()
        real = acts.attention_mask.bool()
        torch.testing.assert_close(saved[0][real], hs[1][real], atol=1e-5, rtol=0)
        torch.testing.assert_close(saved[1][real], captured["last"][real], atol=1e-5, rtol=0)
    # only block 1 was perturbed: layer 0 identical, layer 1 different
    assert torch.equal(acts.base[0], acts.finetuned[0])
    assert (acts.base[1] - acts.finetuned[1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_arch_paths_resolve(tmp_path, family):
    from transformers import AutoModelForCausalLM

    from diffing.tiny import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config(family, 300))
    spec = arch_for(model.config)
    block = get_module(model, spec.layers)[0]
    for path in (spec.embed, spec.final_norm, spec.unembed) + (
        (spec.pos_embed,) if spec.pos_embed else ()
    ):
        assert isinstance(get_module(model, path), torch.nn.Module)
    for rel in (
        spec.attn_out,
        spec.mlp_out,
    ):  # both write d_model-wide vectors into the residual stream
        weight = get_module(block, rel).weight
        assert weight.shape[1 if spec.conv1d else 0] == model.config.hidden_size
    for norm in (spec.attn_out_norm, spec.mlp_out_norm):
        if norm:
            assert get_module(block, norm).weight.shape == (model.config.hidden_size,)


def test_unknown_family_error_names_supported():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(DiffingError, match=r"'mamba' is not supported.*llama.*add an ArchSpec"):
        arch_for(Cfg())
