"""Directional ablation and activation addition as nnsight interventions (Arditi et al. 2024, section 2.4).

Layer convention (used everywhere in ``diffing.refusal``): a candidate at layer ``L``
lives in the residual stream at the *input* of block ``L`` (the output of block
``L - 1``; the scaled token embedding for ``L = 0``), as in the paper. This is one
block earlier than ``diffing.tracing``'s "layer k = output of block k".

- Directional ablation with unit ``r̂``: ``x ← x − s·r̂ r̂ᵀ x`` at every block input and
  on every write into the residual stream (each attention and MLP output, taken
  after the post-sublayer norm in the families that have one), at all positions.
  With ``s = 1`` nothing downstream can read a component along ``r̂``.
- Activation addition: ``x ← x + s·r`` at the input of block ``L`` only, all positions.

The same code runs inside ``lm.trace`` (one forward) and inside every step of
``lm.generate`` (``tracer.all()``), for every family in :mod:`diffing.arch`.

The same two edits, and a capture of a block's input, also exist as plain torch
hooks on a transformers model (:func:`ablating`, :func:`adding`, :func:`capturing`):
training loops need gradients through them and a per-row selection inside one
batch, which a traced forward does not give. Both forms read the module paths from
:mod:`diffing.arch` (:func:`write_paths`), so they edit the same places of every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch

from diffing.arch import ArchSpec, arch_for, get_module
from diffing.errors import DiffingError
from diffing.generation import greedy_answers
from diffing.refusal.config import check_strength
from diffing.remote import input_device, trace_options


class Intervention(NamedTuple):
    """One edit of the residual stream."""

    kind: str
    """``"ablate"`` (every layer, every position) or ``"add"`` (one layer, every position)."""
    vector: torch.Tensor
    """``[d_model]`` (or ``[batch, d_model]``, one per row): the unit direction to ablate, or the vector to add."""
    layer: int | None
    """Block whose input receives an addition; None for ablations."""
    strength: float
    """Scale: 1 is full ablation / the plain difference in means; 0 does nothing."""


def ablate(direction: torch.Tensor, strength: float = 1.0) -> Intervention:
    """Directional ablation of ``direction`` (normalised here) at every layer and position.

    A ``[batch, d_model]`` direction ablates a different direction in each row (all-zero rows are left alone),
    which lets candidate selection score many candidates in one forward.
    """
    direction = torch.as_tensor(direction).float()
    norm = direction.norm(dim=-1, keepdim=True)  # [..., 1]
    if not bool(torch.isfinite(norm).all()) or (direction.dim() == 1 and float(norm) == 0):
        raise DiffingError("cannot ablate a zero or non-finite direction; pick another candidate")
    strength = check_strength(strength)
    return Intervention("ablate", direction / norm.clamp_min(1e-30), None, strength)


def add(vector: torch.Tensor, layer: int, strength: float = 1.0) -> Intervention:
    """Add ``strength * vector`` to the input of block ``layer`` at every position (``[batch, d_model]``: per row)."""
    vector = torch.as_tensor(vector).float()
    if not bool(torch.isfinite(vector).all()):
        raise DiffingError(
            "cannot add a non-finite vector; the direction file is damaged: extract it again"
        )
    return Intervention("add", vector, int(layer), check_strength(strength))


def write_paths(arch: ArchSpec) -> tuple[str, str]:
    """Module paths (relative to a block) whose outputs are added to the residual stream."""
    return (arch.attn_out_norm or arch.attn_out, arch.mlp_out_norm or arch.mlp_out)


def _project_out(x: torch.Tensor, unit: torch.Tensor, strength: float) -> None:
    """In place: ``x ← x − strength·(x·unit) unit`` for ``x`` ``[..., d_model]``."""
    u = unit.to(device=x.device, dtype=x.dtype)
    if u.dim() == 2:  # one direction per row: [batch, 1, d_model]
        u = u[:, None, :]
    x[:] = x - strength * (x * u).sum(-1, keepdim=True) * u


def apply_interventions(
    lm,
    arch: ArchSpec,
    interventions: Sequence[Intervention],
    *,
    on_block_input: Callable | None = None,
) -> None:
    """Apply ``interventions`` inside an open nnsight trace (or one generation step), in forward order.

    ``on_block_input(layer, x)`` is called with each block's (edited) input
    ``[batch, seq, d_model]`` so callers can save activations in the same pass.
    """
    blocks = get_module(lm, arch.layers)
    ablations = [i for i in interventions if i.kind == "ablate" and i.strength != 0]
    additions = [i for i in interventions if i.kind == "add"]
    for i in additions:
        if not 0 <= i.layer < len(blocks):
            raise DiffingError(
                f"addition layer {i.layer} is out of range: the model has blocks 0..{len(blocks) - 1}"
            )
    last = max(
        [i.layer for i in additions] + ([len(blocks) - 1] if ablations or on_block_input else [-1])
    )
    attn_path, mlp_path = write_paths(arch)
    for layer in range(last + 1):
        block = blocks[layer]
        x = block.input  # [batch, seq, d_model]
        for i in additions:
            if i.layer == layer:
                v = i.vector.to(device=x.device, dtype=x.dtype)
                x[:] = x + i.strength * (v[:, None, :] if v.dim() == 2 else v)
        for i in ablations:
            _project_out(x, i.vector, i.strength)
        if on_block_input is not None:
            on_block_input(layer, x)
        if ablations:
            attn = get_module(block, attn_path).output  # [batch, seq, d_model]
            for i in ablations:
                _project_out(attn, i.vector, i.strength)
            mlp = get_module(block, mlp_path).output  # [batch, seq, d_model]
            for i in ablations:
                _project_out(mlp, i.vector, i.strength)


class _Gather:
    """Collects every block's input at chosen positions during one traced forward.

    Made inside the traced block, so that a remote run (where only values created
    and saved in the block come back) returns what it gathered.
    """

    def __init__(self, rows: torch.Tensor, positions: torch.Tensor):
        self.rows, self.positions, self.out = rows, positions, []

    def __call__(self, layer: int, x) -> None:
        self.out.append(x[self.rows[:, None], self.positions])  # [batch, P, d_model]


@torch.no_grad()
def forward_last(
    lm,
    arch: ArchSpec,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    interventions: Sequence[Intervention] = (),
    *,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One traced forward of a right-padded batch under ``interventions``.

    Returns the log-probabilities of the first response token (the last real
    position) ``[batch, vocab]`` and, when ``positions`` ``[batch, P]`` is given,
    every block's input at those positions ``[n_layers, batch, P, d_model]``.
    """
    device = input_device(lm)
    ids, mask = input_ids.to(device), attention_mask.to(device)
    rows = torch.arange(ids.shape[0], device=device)
    last = mask.sum(1) - 1  # [batch]
    where = positions.to(device) if positions is not None else None
    acts = None
    unembed = get_module(lm, arch.unembed)
    with lm.trace({"input_ids": ids, "attention_mask": mask}, **trace_options(lm)):
        gather = _Gather(rows, where) if where is not None else None
        apply_interventions(lm, arch, interventions, on_block_input=gather)
        if gather is not None:
            acts = torch.stack(gather.out).save()  # [n_layers, batch, P, d_model]
        hidden = unembed.input  # [batch, seq, d_model] after the final norm
        unembed.input = hidden[rows, last][:, None]  # only the first response token's logits
        logits = lm.output.logits.save()  # [batch, 1, vocab] (after any final soft-capping)
    logprobs = torch.log_softmax(_value(logits)[:, -1].float(), dim=-1)
    return logprobs, (_value(acts).float() if acts is not None else None)


def _value(x) -> torch.Tensor:
    return getattr(x, "value", x).detach()


def complete(
    lm,
    tokenizer,
    arch: ArchSpec,
    prompts: Sequence[str],
    interventions: Sequence[Intervention] = (),
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    template: str | None = None,
) -> list[str]:
    """Greedy completions of single-turn user prompts under ``interventions`` (special tokens dropped).

    The interventions act at every decoding step, on the prompt and on every generated token.
    """
    step = (lambda: apply_interventions(lm, arch, interventions)) if interventions else None
    return greedy_answers(
        lm,
        tokenizer,
        prompts,
        chat=True,
        template=template,
        step=step,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    ).answers


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The ``*ForCausalLM`` module of ``model``, PEFT-wrapped or not (the root of :mod:`diffing.arch`'s paths)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def torch_arch(model: torch.nn.Module) -> ArchSpec:
    """The :class:`~diffing.arch.ArchSpec` of a transformers model (PEFT-wrapped or not)."""
    return arch_for(causal_lm(model).config)


def _row_scale(rows: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | float:
    """``[batch, 1, 1]`` 1.0 on the selected rows (all rows when ``rows`` is None)."""
    return 1.0 if rows is None else rows.to(x.dtype)[:, None, None]


def _block_input_hook(fn: Callable[[torch.Tensor], torch.Tensor]):
    """A forward pre-hook (with kwargs) that replaces a block's hidden-state input by ``fn(input)``."""

    def hook(_mod, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = fn(kwargs["hidden_states"])
        return args, kwargs

    return hook


@contextmanager
def ablating(
    model: torch.nn.Module, u: torch.Tensor, rows: torch.Tensor | None = None
) -> Iterator[None]:
    """Torch-hook directional ablation: remove the component along unit ``u`` from everything
    written into the residual stream (the embeddings and every attention and MLP write, after the
    post-sublayer norm in the families that have one), so no block input has a component along it.

    ``rows`` (``[batch]`` bool) limits the ablation to some rows of the batch. Gradients flow.
    """

    def hook(_mod, _inp, out):
        return out - _row_scale(rows, out) * (out @ u)[..., None] * u

    arch, lm = torch_arch(model), causal_lm(model)
    writes = write_paths(arch)
    mods = [get_module(lm, arch.embed)]
    if arch.pos_embed:
        mods.append(get_module(lm, arch.pos_embed))
    mods += [get_module(block, p) for block in get_module(lm, arch.layers) for p in writes]
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def adding(
    model: torch.nn.Module, vector: torch.Tensor, layer: int, rows: torch.Tensor | None = None
) -> Iterator[None]:
    """Torch-hook activation addition: add ``vector`` to the input of block ``layer``, every position.

    ``rows`` (``[batch]`` bool) limits the addition to some rows of the batch. Gradients flow.
    """
    block = get_module(causal_lm(model), torch_arch(model).layers)[layer]
    h = block.register_forward_pre_hook(
        _block_input_hook(lambda x: x + _row_scale(rows, x) * vector), with_kwargs=True
    )
    try:
        yield
    finally:
        h.remove()


@contextmanager
def capturing(model: torch.nn.Module, layer: int, store: list) -> Iterator[None]:
    """Append the input of block ``layer`` (``[batch, seq, d_model]``, with its graph) to ``store``."""

    def keep(x):
        store.append(x)
        return x

    block = get_module(causal_lm(model), torch_arch(model).layers)[layer]
    h = block.register_forward_pre_hook(_block_input_hook(keep), with_kwargs=True)
    try:
        yield
    finally:
        h.remove()
