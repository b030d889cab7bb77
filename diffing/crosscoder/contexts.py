"""What a latent is about: its top-activating contexts and the tokens its decoder promotes.

:class:`TopActivations` keeps, while the store streams past, each latent's ``top``
largest activations and the storage index of the token they sat on (a running
top-k merged batch by batch: memory ``[top, n]``, nothing else kept).
:func:`render_contexts` then asks the store for the tokens around each of them and
marks the activating token and its role. :func:`logit_lens` reads a decoder vector
through a model's final norm and unembedding (docs/methods.md section 3), after undoing
the store's normalisation so the vector is in the model's own units.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from diffing.arch import get_module
from diffing.crosscoder.analysis import SparseCodes, sparse_codes
from diffing.tokens import ROLES


class TopActivations:
    """Running top-``top`` activations per latent over a stream of batches.

    Per batch, only the active entries above their latent's current ``top``-th value
    are candidates. Candidates are buffered and merged with the kept entries in one
    sort (by latent, then by value) once the buffer holds ``flush_every`` entries, so
    the cost follows the number of candidates and is amortised over batches.
    """

    def __init__(self, n_latents: int, top: int, *, flush_every: int = 2_000_000):
        self.top = top
        self.flush_every = flush_every
        self.values = torch.zeros(top, n_latents)  # [top, n], sorted descending per column
        self.index = torch.full(
            (top, n_latents), -1, dtype=torch.long
        )  # [top, n] storage token index
        self._buf: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._buffered = 0

    @torch.no_grad()
    def update(self, f, start: int) -> None:
        """Add a batch (``f [B, n]`` or its ``SparseCodes``) whose first row is storage token ``start``."""
        if self.top == 0:
            return
        codes = f if isinstance(f, SparseCodes) else sparse_codes(f)
        rows, cols, vals = codes.rows.cpu(), codes.cols.cpu(), codes.vals.cpu()
        cand = vals > self.values[-1][cols]  # [nnz] beats the latent's current top-th value
        if bool(cand.any()):
            self._buf.append((cols[cand], vals[cand], rows[cand] + start))
            self._buffered += int(cand.sum())
            if self._buffered >= self.flush_every:
                self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """Merge the buffered candidates into the kept top entries."""
        if not self._buf:
            return
        c_lat, c_val, c_idx = (torch.cat(parts) for parts in zip(*self._buf))  # [C]
        self._buf, self._buffered = [], 0
        lat = torch.unique(c_lat)  # [U] latents that may change (sorted)
        all_lat = torch.cat([lat.repeat_interleave(self.top), c_lat])
        all_val = torch.cat([self.values[:, lat].T.reshape(-1), c_val])
        all_idx = torch.cat([self.index[:, lat].T.reshape(-1), c_idx])
        span = float(all_val.max()) + 1.0
        order = torch.argsort(
            all_lat.double() * span - all_val.double()
        )  # by latent, then value descending
        all_lat, all_val, all_idx = all_lat[order], all_val[order], all_idx[order]
        first = torch.searchsorted(all_lat, lat)  # [U] where each latent's run starts
        rank = (
            torch.arange(len(all_lat)) - first[torch.searchsorted(lat, all_lat)]
        )  # rank within its latent
        keep = rank < self.top
        self.values[rank[keep], all_lat[keep]] = all_val[keep]
        self.index[rank[keep], all_lat[keep]] = all_idx[keep]

    def of(self, latent: int) -> list[tuple[float, int]]:
        """``(activation, token index)`` pairs of one latent, largest first, active ones only."""
        self.flush()
        out = []
        for v, i in zip(self.values[:, latent].tolist(), self.index[:, latent].tolist()):
            if v > 0 and i >= 0:
                out.append((v, i))
        return out


def token_strings(tokenizer, ids) -> list[str]:
    """Each id decoded on its own (so spaces and byte pieces stay readable); ``<id>`` without a tokenizer."""
    ids = [int(t) for t in ids]
    if tokenizer is None:
        return [f"<{t}>" for t in ids]
    return [tokenizer.decode([t]) for t in ids]


def render_contexts(
    store, tops: list[tuple[float, int]], *, tokenizer=None, window: int = 16
) -> list[dict]:
    """One record per top activation: tokens around it, where the activating token is, its role.

    ``store.context(token_index, window)`` supplies ``(token_ids, index_in_window, roles)``.
    The ``text`` field marks the activating token as ``[[token]]``; HTML renderers must
    escape every string here (they are model and data text).
    """
    out = []
    for value, index in tops:
        ids, at, roles = store.context(int(index), window=window)
        toks = token_strings(tokenizer, ids)
        roles = [ROLES[int(r)] if 0 <= int(r) < len(ROLES) else str(int(r)) for r in roles]
        at = int(at)
        text = "".join(toks[:at]) + "[[" + toks[at] + "]]" + "".join(toks[at + 1 :])
        out.append(
            {
                "activation": round(float(value), 5),
                "token_index": int(index),
                "token": toks[at],
                "role": roles[at],
                "index_in_window": at,
                "tokens": toks,
                "roles": roles,
                "text": text,
            }
        )
    return out


class LensResult(NamedTuple):
    """Top tokens a set of directions promotes through one model's final norm and unembedding."""

    token_ids: torch.Tensor
    """``[k, top]`` ids of the most promoted tokens per direction, largest logit first."""
    logits: torch.Tensor
    """``[k, top]`` their logits."""
    valid: torch.Tensor
    """``[k]`` False where the direction is (near) zero, so its top tokens mean nothing."""


@torch.no_grad()
def logit_lens(
    directions: torch.Tensor,
    model: torch.nn.Module,
    arch,
    *,
    norm_scale: float = 1.0,
    top: int = 10,
) -> LensResult:
    """Read directions ``[k, d]`` (store-normalised units) through ``model``'s final norm and unembedding.

    The direction is first divided by the store's ``norm_scale`` (back to raw units).
    The norm's effect on a direction is its gain (and per-family details such as
    Gemma's ``1 + weight``): applying the norm module to the vector and subtracting
    its output at zero removes any bias, so the result depends on the direction only.
    """
    final_norm = get_module(model, arch.final_norm)
    unembed = get_module(model, arch.unembed)
    weight = unembed.weight  # [vocab, d]
    raw = directions.to(weight.dtype).to(weight.device) / float(norm_scale)  # [k, d]
    normed = final_norm(raw) - final_norm(torch.zeros_like(raw[:1]))  # [k, d]
    logits = normed.float() @ weight.float().T  # [k, vocab]
    scale = directions.float().norm(dim=-1)  # [k]
    valid = scale > 1e-6 * scale.max().clamp_min(1e-30)
    top = min(top, logits.shape[-1])
    vals, ids = logits.topk(top, dim=-1)  # [k, top]
    return LensResult(ids.cpu(), vals.cpu(), valid.cpu())


@torch.no_grad()
def traced_logit_lens(
    directions: torch.Tensor, lm, arch, *, norm_scale: float = 1.0, top: int = 10
) -> LensResult:
    """:func:`logit_lens` as one traced forward of the nnsight model ``lm``, for weights on NDIF.

    The final norm's input is replaced by the directions and a zero row (the same
    bias removal), the unembedding's input by their difference; only the top tokens
    come back. Equal to :func:`logit_lens` for unembeddings without a bias.
    """
    from diffing.remote import input_device, trace_options

    final_norm, unembed = get_module(lm, arch.final_norm), get_module(lm, arch.unembed)
    k = directions.shape[0]
    raw = directions.float() / float(norm_scale)  # [k, d]
    rows = torch.cat([raw, torch.zeros_like(raw[:1])])[:, None, :]  # [k + 1, 1, d]
    ids = torch.zeros(k + 1, 1, dtype=torch.long, device=input_device(lm))  # replaced below
    with lm.trace({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, **trace_options(lm)):
        x = final_norm.input  # [k + 1, 1, d]
        final_norm.input = rows.to(device=x.device, dtype=x.dtype)
        normed = final_norm.output  # [k + 1, 1, d]
        unembed.input = normed - normed[-1:]
        vals, top_ids = unembed.output[:k, 0].float().topk(top, dim=-1)  # [k, top]
        vals, top_ids = vals.save(), top_ids.save()
    scale = directions.float().norm(dim=-1)  # [k]
    valid = scale > 1e-6 * scale.max().clamp_min(1e-30)
    value = lambda t: getattr(t, "value", t).detach().cpu()  # noqa: E731
    return LensResult(value(top_ids), value(vals), valid.cpu())


def read_lens(
    directions: torch.Tensor, pair, which: str, *, norm_scale: float = 1.0, top: int = 10
) -> list[list[dict]]:
    """:func:`lens_records` of ``directions [k, d]`` read through model ``which`` of ``pair``.

    ``which`` is ``"base"`` or ``"finetuned"``; remote pairs (weights on NDIF) are read with
    :func:`traced_logit_lens`, local ones with :func:`logit_lens`.
    """
    if pair.remote:
        lm = pair.base if which == "base" else pair.finetuned
        res = traced_logit_lens(directions, lm, pair.arch, norm_scale=norm_scale, top=top)
    else:
        res = logit_lens(directions, pair.hf(which), pair.arch, norm_scale=norm_scale, top=top)
    return lens_records(res, pair.tokenizer)


def lens_records(lens: LensResult, tokenizer=None) -> list[list[dict]]:
    """Per direction, ``[{"token": str, "id": int, "logit": float}, ...]`` (empty for zero directions)."""
    out = []
    for ids, vals, ok in zip(lens.token_ids.tolist(), lens.logits.tolist(), lens.valid.tolist()):
        if not ok:
            out.append([])
            continue
        toks = token_strings(tokenizer, ids)
        out.append(
            [{"token": t, "id": i, "logit": round(v, 4)} for t, i, v in zip(toks, ids, vals)]
        )
    return out
