"""Weight orthogonalisation: bake directional ablation into the weights (Arditi et al. 2024, section 4.1).

Every matrix that writes into the residual stream (token embedding, learned
positional embedding, each attention output projection and MLP down projection,
and their biases) gets ``W ← W − s·r̂ r̂ᵀ W`` along its output dimension. With the
default strength ``s = 1`` no write can carry a component along ``r̂``, and the
result equals hook-based ablation at every layer for pre-norm families (Llama,
Mistral, Qwen, Phi-3, GPT-2). ``0 < s < 1`` removes only that share of each write's
component; ``s = 2`` reflects it (each write's component along ``r̂`` changes sign).
``layers`` restricts the edit to the attention and MLP writes of the listed blocks
and then leaves the embeddings alone (they belong to no block); None edits every
block and the embeddings.

Where a norm sits between a sublayer and the residual stream (Gemma 2/3, OLMo2:
the write is ``γ ⊙ x / rms(x)``), the projection is orthogonalised against the unit
vector along ``γ ⊙ r̂`` instead, which makes the written vector exactly orthogonal
to ``r̂`` (docs/methods.md section 4); this is not bit-equal to hook ablation, because
removing a component of ``x`` changes ``rms(x)``. The norm's effective gain ``γ`` is
measured by running the norm module itself on a constant vector, so families that
store ``γ − 1`` (Gemma) need no special case.

Tied embeddings (Gemma, GPT-2) are untied first: editing the input embedding must
not change the unembedding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffing.arch import ArchSpec, get_module
from diffing.errors import DiffingError
from diffing.refusal.config import check_strength


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def norm_gain(norm: torch.nn.Module, width: int) -> torch.Tensor:
    """Effective elementwise gain ``γ`` ``[width]`` of an RMS-style norm, read off its output on a constant input."""
    import copy

    probe = copy.deepcopy(norm).float()
    c = 1e3  # large, so the norm's epsilon is negligible: rms(c·1) = c
    x = torch.full((1, 1, width), c, dtype=torch.float32, device=next(norm.parameters()).device)
    with torch.no_grad():
        return probe(x).reshape(width).float()


def _orth_rows(weight: torch.Tensor, unit: torch.Tensor, strength: float = 1.0) -> None:
    """In place, for a ``[n, d_model]`` matrix whose rows are written vectors: ``W ← W − s (W u) uᵀ``."""
    w = weight.data.float()
    u = unit.to(w.device)
    weight.data.copy_((w - strength * (w @ u)[:, None] * u[None, :]).to(weight.dtype))


def _orth_out(
    weight: torch.Tensor, unit: torch.Tensor, conv1d: bool, strength: float = 1.0
) -> None:
    """In place for a projection writing ``d_model`` outputs: ``nn.Linear`` ``[out, in]`` or ``Conv1D`` ``[in, out]``."""
    if conv1d:
        _orth_rows(weight, unit, strength)
    else:
        w = weight.data.float()
        u = unit.to(w.device)
        weight.data.copy_((w - strength * u[:, None] * (u @ w)[None, :]).to(weight.dtype))


def _orth_bias(bias: torch.Tensor | None, unit: torch.Tensor, strength: float = 1.0) -> None:
    if bias is not None:
        b = bias.data.float()
        u = unit.to(b.device)
        bias.data.copy_((b - strength * (b @ u) * u).to(bias.dtype))


def untie_embeddings(model: torch.nn.Module, arch: ArchSpec) -> bool:
    """Give the unembedding its own copy of the weight if it shares the embedding's; returns whether it did."""
    embed = get_module(model, arch.embed)
    unembed = get_module(model, arch.unembed)
    if unembed.weight.data_ptr() != embed.weight.data_ptr():
        return False
    unembed.weight = torch.nn.Parameter(embed.weight.detach().clone())
    for cfg in (model.config, getattr(model.config, "get_text_config", lambda: None)()):
        if cfg is not None and hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = False
    return True


@torch.no_grad()
def orthogonalize_model(
    model: torch.nn.Module,
    direction: torch.Tensor,
    arch: ArchSpec,
    *,
    strength: float = 1.0,
    layers: list[int] | None = None,
) -> torch.nn.Module:
    """Edit a Hugging Face causal LM in place: ``W ← W − s·r̂ r̂ᵀ W`` on every residual-stream write.

    With ``strength`` 1 (default) nothing it writes has a component along ``direction``.
    ``layers`` (block indices) restricts the edit to those blocks' attention and MLP writes
    and leaves the embeddings alone; None edits every block and the embeddings.
    ``model`` is the torch module (``lm._module`` for an nnsight model); returns it.
    """
    strength = check_strength(strength)
    r = torch.as_tensor(direction).float().flatten()
    if r.norm() == 0 or not torch.isfinite(r).all():
        raise DiffingError("cannot orthogonalise against a zero or non-finite direction")
    r = _unit(r)
    if any(p.is_meta for p in model.parameters()):
        raise DiffingError(
            "the model's weights are not here (a config-only model, as loaded for remote "
            "execution): load the checkpoint itself to write an orthogonalised copy"
        )
    embed = get_module(model, arch.embed)
    if embed.weight.shape[1] != r.numel():
        raise DiffingError(
            f"the direction has {r.numel()} dimensions but the model's d_model is {embed.weight.shape[1]}"
        )
    blocks = get_module(model, arch.layers)
    chosen = check_layers(layers, len(blocks))
    if layers is None:
        untie_embeddings(model, arch)
        # [vocab, d_model]; Gemma's sqrt(d) scale is a scalar, so this is enough
        _orth_rows(embed.weight, r, strength)
        if arch.pos_embed:  # [n_positions, d_model]
            _orth_rows(get_module(model, arch.pos_embed).weight, r, strength)
    d = r.numel()
    for k, block in enumerate(blocks):
        if k not in chosen:
            continue
        for proj_path, norm_path in (
            (arch.attn_out, arch.attn_out_norm),
            (arch.mlp_out, arch.mlp_out_norm),
        ):
            proj = get_module(block, proj_path)
            unit = r if norm_path is None else _unit(norm_gain(get_module(block, norm_path), d) * r)
            _orth_out(proj.weight, unit, arch.conv1d, strength)
            _orth_bias(getattr(proj, "bias", None), unit, strength)
    return model


def check_layers(layers: list[int] | None, n_layers: int) -> set[int]:
    """The block indices to edit (all for None), or a clear error for an empty or out-of-range list."""
    if layers is None:
        return set(range(n_layers))
    bad = [k for k in layers if not 0 <= int(k) < n_layers]
    if not layers or bad:
        raise DiffingError(
            f"`layers` {list(layers)} must name blocks 0..{n_layers - 1} of the model (at least one)",
            fields=("layers",),
        )
    return {int(k) for k in layers}


def check_out_dir(out_dir: str | Path, source: str | Path) -> None:
    """Refuse an output folder that is, or lies inside, the local model folder it is made from.

    Saving there would overwrite the user's original weights with the edited ones.
    """
    src = Path(str(source)).expanduser()
    if not str(source) or not src.is_dir():
        return
    out, src = Path(out_dir).expanduser().resolve(), src.resolve()
    if out == src or out.is_relative_to(src):
        raise DiffingError(
            f"`out` {str(out_dir)!r} is inside the input model folder {str(source)!r}; writing there would "
            "overwrite the original weights: give a new folder outside it",
            fields=("out",),
        )


def model_card(
    direction, source: str, strength: float = 1.0, layers: list[int] | None = None
) -> str:
    """README.md for an exported model: what was done, from what, and how to undo it (you can't: re-export)."""
    return f"""---
tags: [diffing, refusal-direction, orthogonalized]
---
# Orthogonalised copy of `{source}`

Produced by `diffing refusal export` (model-diffing). Every weight that writes into the
residual stream (token embedding, positional embedding if any, each attention output
projection and MLP down projection, and their biases) was projected off the refusal
direction `r̂`: `W ← W − s·r̂ r̂ᵀ W` (Arditi et al. 2024, arXiv 2406.11717, section 4.1).
For families with a norm after each sublayer (Gemma 2/3, OLMo2) the projections were
orthogonalised against `γ ⊙ r̂` instead, so the written vectors are orthogonal to `r̂`.
Tied embeddings were untied first, so the unembedding is unchanged.

- strength `s`: {strength:g}; blocks edited: {"all, and the embeddings" if layers is None else sorted(layers)}
- direction: layer {direction.layer} (input of that block), position {direction.position}, norm {direction.norm:.4g}
- extracted from: `{direction.model_ref}` ({direction.family}, d_model {direction.d_model})
- selection scores: {direction.scores}

This model should no longer refuse the requests the original refused. It is a research
artefact for studying what refusal fine-tuning changed; do not deploy it.
"""


def export_orthogonalized(
    model: torch.nn.Module,
    tokenizer,
    direction,
    out_dir: str | Path,
    *,
    source: str = "",
    strength: float = 1.0,
    layers: list[int] | None = None,
) -> Path:
    """Orthogonalise ``model`` in place against ``direction`` and save a HF folder (safetensors, tokenizer, card).

    ``out_dir`` may not be (or lie inside) ``source`` when that is a local folder.
    """
    from diffing.arch import arch_for

    check_out_dir(out_dir, source)
    strength = check_strength(strength)
    arch = arch_for(model.config)
    direction.check_model(model.config, what=source or "the model")
    orthogonalize_model(model, direction.direction, arch, strength=strength, layers=layers)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        model_card(direction, source or direction.model_ref, strength, layers)
    )
    return out
