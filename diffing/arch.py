"""Where things live in each supported model family.

Every method that reaches into a model (tracing a layer, patching the residual
stream, reading the unembedding, orthogonalising weights) asks this table instead
of hard-coding module paths. Adding a family is one :class:`ArchSpec` entry in
:data:`FAMILIES` plus a tiny-config test in ``tests/test_arch.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffing.errors import DiffingError


@dataclass(frozen=True)
class ArchSpec:
    """Module paths (relative to the ``*ForCausalLM`` model) of one model family."""

    layers: str
    """The ``ModuleList`` of decoder blocks; block k's output is the residual stream after block k."""
    embed: str
    """Token embedding."""
    final_norm: str
    """Norm applied to the last residual stream before the unembedding."""
    unembed: str = "lm_head"
    """Linear map from the final residual stream to vocabulary logits."""
    attn_out: str = "self_attn.o_proj"
    """Attention output projection, relative to a block (writes into the residual stream)."""
    mlp_out: str = "mlp.down_proj"
    """MLP down projection, relative to a block (writes into the residual stream)."""
    pos_embed: str | None = None
    """Learned positional embedding, if the family has one (GPT-2)."""
    attn_out_norm: str | None = None
    """Norm applied to the attention output before it joins the residual stream (Gemma 2/3, OLMo2)."""
    mlp_out_norm: str | None = None
    """Norm applied to the MLP output before it joins the residual stream (Gemma 2/3, OLMo2)."""
    conv1d: bool = False
    """Projections are ``Conv1D`` with weight ``[in, out]`` instead of ``nn.Linear``'s ``[out, in]``."""
    layer_returns_tuple: bool = False
    """Whether a block returns a tuple whose first element is the hidden state (older transformers)."""
    embed_scale: bool = False
    """Embeddings are multiplied by sqrt(d_model) inside the model (Gemma)."""


_PRE_NORM = ArchSpec(layers="model.layers", embed="model.embed_tokens", final_norm="model.norm")
_POST_SUBLAYER_NORM = ArchSpec(
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn_out_norm="post_attention_layernorm",
    mlp_out_norm="post_feedforward_layernorm",
)

FAMILIES: dict[str, ArchSpec] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "phi3": _PRE_NORM,
    "gemma2": ArchSpec(**{**_POST_SUBLAYER_NORM.__dict__, "embed_scale": True}),
    "gemma3_text": ArchSpec(**{**_POST_SUBLAYER_NORM.__dict__, "embed_scale": True}),
    "olmo2": _POST_SUBLAYER_NORM,
    "gpt2": ArchSpec(
        layers="transformer.h",
        embed="transformer.wte",
        pos_embed="transformer.wpe",
        final_norm="transformer.ln_f",
        attn_out="attn.c_proj",
        mlp_out="mlp.c_proj",
        conv1d=True,
    ),
}
"""Supported families, keyed by ``config.model_type``."""


def arch_for(config) -> ArchSpec:
    """The :class:`ArchSpec` of a transformers config, or a clear error for unknown families."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise DiffingError(
        f"model family {model_type!r} is not supported yet; supported: {', '.join(sorted(FAMILIES))}. "
        "To add one, add an ArchSpec entry for it to diffing/arch.py:FAMILIES (module paths of its "
        "layers, embedding, final norm, unembedding and output projections) and a tiny-config test."
    )


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at a dotted ``path`` (``model.layers``) of a torch module or nnsight Envoy."""
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def num_layers(config) -> int:
    """Number of decoder blocks."""
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


def d_model(config) -> int:
    """Width of the residual stream."""
    return int(getattr(config, "hidden_size", None) or config.n_embd)
