"""Paired tracing: run the same tokens through both models and read the residual stream.

Layer ``k`` is the output of decoder block ``k`` (Hugging Face's
``output_hidden_states[k + 1]``). Each forward stops right after the deepest
requested block unless logits are asked for, which is what makes harvesting
cheaper than a full forward (measured in docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec, get_module
from diffing.remote import remote_mode
from diffing.tokens import Batch, encode, pad_batch, pad_id_of


class Traced(NamedTuple):
    """What one traced forward pass returned."""

    layers: dict[int, torch.Tensor]
    """Layer index -> residual stream ``[batch, seq, d_model]``."""
    logits: torch.Tensor | None
    """``[batch, seq, vocab]`` next-token logits when requested, else None."""


class PairedActivations(NamedTuple):
    """Both models' residual streams on the same tokens."""

    base: dict[int, torch.Tensor]
    """Layer -> base residual stream ``[batch, seq, d_model]``."""
    finetuned: dict[int, torch.Tensor]
    """Layer -> fine-tuned residual stream ``[batch, seq, d_model]``."""
    input_ids: torch.Tensor
    """``[batch, seq]`` token ids both models read."""
    attention_mask: torch.Tensor
    """``[batch, seq]`` 1 for real tokens."""
    roles: torch.Tensor
    """``[batch, seq]`` role ids (see ``diffing.tokens.ROLES``)."""
    base_logits: torch.Tensor | None = None
    """``[batch, seq, vocab]`` base logits when requested."""
    finetuned_logits: torch.Tensor | None = None
    """``[batch, seq, vocab]`` fine-tuned logits when requested."""


@torch.no_grad()
def trace_model(
    lm,
    arch: ArchSpec,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
    *,
    logits: bool = False,
    remote: bool | str | None = None,
) -> Traced:
    """Residual streams of one nnsight model at ``layers`` (and its logits if asked), on given ids.

    ``remote``: run the trace with nnsight's remote execution (True: on NDIF; ``"local"``:
    serialised and run here exactly as NDIF would, which is how the remote path is tested);
    None follows the model's own mode (:func:`diffing.remote.set_remote`).
    """
    remote = remote_mode(lm) if remote is None else remote
    device = torch.device("cpu") if remote is True else next(lm._module.parameters()).device
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    blocks = get_module(lm, arch.layers)
    as_tuple = bool(arch.layer_returns_tuple)  # a plain bool: the block below may run on NDIF,
    order = sorted(layers)  # where no diffing function or class exists
    # Only values created and saved inside the block come back from a remote run (a dict
    # filled from outside would stay on the server), so the layers leave as one stacked tensor.
    with lm.trace(inputs, **({"remote": remote} if remote else {})) as tracer:
        outs = []
        for layer in order:
            out = blocks[layer].output
            outs.append(out[0] if as_tuple or isinstance(out, tuple) else out)
        stacked = torch.stack(outs).save()  # [n_layers, batch, seq, d_model]
        if logits:
            out_logits = lm.output.logits.save()
        else:
            tracer.stop()
    stacked = _materialise(stacked)
    acts = {layer: stacked[i] for i, layer in enumerate(order)}
    return Traced(acts, _materialise(out_logits) if logits else None)


class _Stop(Exception):
    """Raised by the deepest block's hook to end a forward early."""


@torch.no_grad()
def forward_layers(
    model: torch.nn.Module,
    arch: ArchSpec,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layers: Sequence[int],
    *,
    logits: bool = False,
) -> Traced:
    """Residual streams of a local Hugging Face model at ``layers`` (and its logits if asked).

    The same values as :func:`trace_model` for a local model, with plain forward hooks
    instead of an nnsight trace: no graph to build per call and nothing that waits for
    the device, so a caller can queue both models' forwards back to back. Without
    ``logits`` the forward stops after the deepest requested block. ``attention_mask``
    None means every position is a real token (the fast, mask-free attention path).
    Layers are ``[batch, seq, d_model]``, logits ``[batch, seq, vocab]``.
    """
    blocks = get_module(model, arch.layers)
    order = sorted(layers)
    acts: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(_module, _args, output):
            acts[layer] = output[0] if isinstance(output, tuple) else output
            if layer == order[-1] and not logits:
                raise _Stop

        return hook

    device = next(model.parameters()).device
    handles = [blocks[k].register_forward_hook(hook_for(k)) for k in order]
    out = None
    try:
        kwargs = {"input_ids": input_ids.to(device, non_blocking=True), "use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(device, non_blocking=True)
        out = model(**kwargs)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    layers_out = {k: acts[k].detach() for k in order}
    return Traced(layers_out, out.logits.detach() if logits else None)


def residual_output(lm, arch: ArchSpec, layer: int):
    """Inside an open trace of ``lm``: the residual stream leaving block ``layer`` ``[batch, seq, d_model]``
    (a tensor that can be read, saved or edited in place)."""
    out = get_module(lm, arch.layers)[layer].output
    return out[0] if arch.layer_returns_tuple or isinstance(out, tuple) else out


def _materialise(value) -> torch.Tensor:
    value = getattr(value, "value", value)
    return value.detach()


def encode_batch(
    tokenizer, items: Sequence, *, max_length: int | None = None, template: str | None = None
) -> Batch:
    """Tokenize texts and/or conversations (with roles) into one right-padded batch."""
    return pad_batch(
        [encode(tokenizer, it, max_length=max_length, template=template) for it in items],
        pad_id_of(tokenizer),
    )


def trace_pair(
    pair,
    items: Sequence | Batch,
    layers: Sequence[int],
    *,
    logits: bool = False,
    max_length: int | None = None,
) -> PairedActivations:
    """Run texts or conversations (or a pre-built :class:`Batch`) through both models.

    Both models read exactly the same ids; each forward stops after the deepest
    requested layer unless ``logits`` is set.
    """
    batch = (
        items
        if isinstance(items, Batch)
        else encode_batch(pair.tokenizer, items, max_length=max_length)
    )
    layers = pair.check_layers(layers)
    b, f = (
        trace_model(
            lm,
            pair.arch,
            batch.input_ids,
            batch.attention_mask,
            layers,
            logits=logits,
            remote=pair.remote,
        )
        for lm in pair.models
    )
    return PairedActivations(
        b.layers, f.layers, batch.input_ids, batch.attention_mask, batch.roles, b.logits, f.logits
    )
