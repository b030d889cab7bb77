"""A quick look at a pair: family, shapes, tokenizer compatibility, and which weights moved."""

from __future__ import annotations

import torch

from diffing.weights import weight_changes


def _dtype_name(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).replace("torch.", "")


def inspect_pair(pair, *, top: int = 10) -> dict:
    """A JSON-ready summary of a loaded :class:`~diffing.models.ModelPair`."""
    base, ft = pair.hf("base"), pair.hf("finetuned")
    changes = weight_changes(pair)
    return {
        "base": pair.base_ref,
        "finetuned": pair.finetuned_ref,
        "family": pair.config.model_type,
        "layers": pair.n_layers,
        "d_model": pair.d_model,
        "vocab_size": len(pair.tokenizer),
        "parameters": {
            "base": sum(p.numel() for p in base.parameters()),
            "finetuned": sum(p.numel() for p in ft.parameters()),
        },
        "dtype": {"base": _dtype_name(base), "finetuned": _dtype_name(ft)},
        "tokenizer_compatible": True,
        "chat_template": bool(getattr(pair.tokenizer, "chat_template", None)),
        "adapter": pair.adapter.path if pair.adapter else None,
        "notes": list(pair.notes),
        "changed_parameters": len(changes),
        "top_changes": [
            {"name": c.name, "relative_change": c.relative_change} for c in changes[:top]
        ],
    }


def format_inspection(info: dict) -> str:
    """Human-readable lines for ``diffing inspect``."""
    lines = [
        f"base:          {info['base']}",
        f"fine-tuned:    {info['finetuned']}"
        + (f"  (adapter {info['adapter']})" if info["adapter"] else ""),
        f"family:        {info['family']}   layers: {info['layers']}   d_model: {info['d_model']}   vocab: {info['vocab_size']}",
        f"parameters:    base {info['parameters']['base']:,}   fine-tuned {info['parameters']['finetuned']:,}",
        f"dtype:         base {info['dtype']['base']}   fine-tuned {info['dtype']['finetuned']}",
        "tokenizers:    identical vocabulary and ids",
        f"chat template: {'yes' if info['chat_template'] else 'no'}",
    ]
    lines += [f"note:          {n}" for n in info["notes"]]
    lines.append(f"changed parameter tensors: {info['changed_parameters']}")
    for c in info["top_changes"]:
        lines.append(f"  {c['relative_change']:10.4g}  {c['name']}")
    return "\n".join(lines)
