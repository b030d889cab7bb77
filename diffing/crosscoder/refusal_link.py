"""Which crosscoder latents carry a refusal direction, and does ablating them remove refusal?

Given a crosscoder and a refusal direction ``r`` at the crosscoder's layer (both about the
residual stream leaving block ``layer``), every latent gets, in raw activation units
(decoders divided by the store's normalisation scales ``s_b, s_f``):

    cos_diff_j = cos(d_j^f / s_f − d_j^b / s_b, r)      cos_ft_j = cos(d_j^f / s_f, r)

Latents with ``|cos| ≥ threshold`` (``RefusalLinkConfig.select_by`` picks which cosine) carry
refusal; they are named with Δ (relative decoder norm), their Latent Scaling flag (from an
analysis ``latents.json``), top contexts and logit lens. The causal comparison
(:mod:`.refusal_ablation`) measures the fine-tuned model's refusal on harmful prompts clean,
with those latents' contribution removed at the layer, with the direction ablated there,
and with as many random latents removed (control). The method reads a direction tensor
and never imports the refusal package; the CLI reads its file. Docs: docs/refusal-link.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis import json_number, relative_norm_diff
from diffing.crosscoder.extra_config import RefusalLinkConfig
from diffing.errors import DiffingError
from diffing.io import write_json


class RefusalLinkResult(NamedTuple):
    """What :func:`refusal_link` computed (and wrote to ``out_dir``)."""

    cos_difference: torch.Tensor
    """``[n]`` cosine of each latent's raw decoder difference ``d_f/s_f − d_b/s_b`` with the direction."""
    cos_finetuned: torch.Tensor
    """``[n]`` cosine of each latent's raw fine-tuned decoder ``d_f/s_f`` with the direction."""
    delta: torch.Tensor
    """``[n]`` relative decoder norm Δ (0 base-only, ½ shared, 1 chat-only)."""
    refusal_latents: list[int]
    """Latents that carry refusal (largest |cosine| first, at most ``max_latents``)."""
    latents: list[dict]
    """One record per refusal latent: cosines, Δ, Latent Scaling flag, contexts, logit lens."""
    ablation: dict | None
    """Condition (clean, latents, direction, random) -> ``{mean_score, rate}``; None without prompts."""
    summary: dict
    """Layer, threshold, counts, the best |cosine| overall, the ablation, config."""
    out_dir: Path | None
    """Where ``refusal_link.json`` and the figure were written (None: not written)."""


@torch.no_grad()
def decoder_cosines(cc, direction: torch.Tensor, norm_scales: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(cos_difference [n], cos_finetuned [n])`` of a two-model crosscoder's decoders with ``direction [d]`` (raw)."""
    W = cc.W_dec.detach().float()  # [2, n, d]
    if W.shape[0] != 2:
        raise DiffingError("the refusal link needs a two-model crosscoder (base, fine-tuned)")
    r = direction.detach().float().flatten()
    if r.numel() != W.shape[2]:
        raise DiffingError(
            f"the direction has {r.numel()} dimensions but the crosscoder reads d_model={W.shape[2]}; "
            "use a direction from the same model"
        )
    if float(r.norm()) == 0 or not bool(torch.isfinite(r).all()):
        raise DiffingError("the refusal direction is zero or not finite; re-extract it")
    s_b, s_f = (float(x) for x in norm_scales)
    ft = W[1] / s_f  # [n, d]
    diff = ft - W[0] / s_b
    cos = lambda a: torch.nn.functional.cosine_similarity(a, r[None], dim=-1, eps=1e-12)  # noqa: E731
    return cos(diff), cos(ft)


def select_refusal_latents(cos_difference: torch.Tensor, cos_finetuned: torch.Tensor, cfg: RefusalLinkConfig) -> list[int]:  # fmt: skip
    """Latents whose chosen |cosine| reaches ``cfg.threshold``, largest first, at most ``cfg.max_latents``."""
    a, b = cos_difference.abs(), cos_finetuned.abs()
    score = {"difference": a, "finetuned": b, "either": torch.maximum(a, b)}[cfg.select_by]
    idx = (score >= cfg.threshold).nonzero().squeeze(1)
    idx = idx[torch.argsort(score[idx], descending=True)]
    return idx[: cfg.max_latents].tolist()


def read_latent_records(path: str | Path | None) -> dict[int, dict]:
    """Latent -> record of a crosscoder analysis ``latents.json`` (empty when no path)."""
    if path is None:
        return {}
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "latents.json"
    try:
        records = json.loads(p.read_text())
        return {int(r["latent"]): r for r in records}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DiffingError(f"cannot read crosscoder latents {str(p)!r} ({err}); pass the analysis's latents.json") from err  # fmt: skip


@torch.no_grad()
def _contexts(
    cc, store, layer: int, latents: list[int], cfg: RefusalLinkConfig, tokenizer
) -> dict[int, list]:
    """Top contexts of ``latents`` over the store (the crosscoder's inference encoding)."""
    from diffing.crosscoder.contexts import TopActivations, render_contexts

    idx = torch.tensor(latents, dtype=torch.long)
    tops = TopActivations(len(latents), cfg.top)
    start = 0
    limit = store.n_tokens if cfg.max_tokens is None else min(cfg.max_tokens, store.n_tokens)
    for batch in store.iter_sequential(4096, layer=layer):
        if start >= limit:
            break
        x = batch.acts[: limit - start].to(cc.W_enc.device)  # [B, 2, d]
        tops.update(cc.encode(x)[:, idx.to(x.device)].cpu(), start)
        start += x.shape[0]
    return {j: render_contexts(store, tops.of(i), tokenizer=tokenizer, window=cfg.context_window)
            for i, j in enumerate(latents)}  # fmt: skip


def refusal_link(
    cc,
    direction: torch.Tensor,
    layer: int,
    *,
    store=None,
    norm_scales: Sequence[float] | None = None,
    pair=None,
    harmful: Sequence[str] | None = None,
    refusal_tokens: Sequence[int] | None = None,
    score_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    analysis_latents: str | Path | None = None,
    config: RefusalLinkConfig | None = None,
    out_dir: str | Path | None = None,
) -> RefusalLinkResult:
    """Cosines of every latent with ``direction``, the refusal latents, and the ablation comparison.

    ``cc``: a two-model crosscoder or its folder; ``direction [d]``: the refusal direction in raw
    units at store ``layer`` (the residual stream leaving block ``layer``; a direction "at the
    input of block L" is at layer L − 1); ``store`` (or ``norm_scales = [s_b, s_f]``) gives the
    normalisation scales and, with ``pair``, the contexts; ``harmful`` prompts with
    ``refusal_tokens`` (or a ``score_fn`` from last-position logits ``[B, vocab]`` to scores
    ``[B]``) run the ablation comparison on ``pair``; ``analysis_latents``: an analysis
    ``latents.json`` for the Latent Scaling flags.
    """
    from diffing.crosscoder.model import CrossCoder

    cfg = config or RefusalLinkConfig()
    cc = CrossCoder.load(cc) if isinstance(cc, (str, Path)) else cc
    if cc.cfg.layer is not None and int(layer) != cc.cfg.layer:
        raise DiffingError(
            f"the direction is at layer {layer} but the crosscoder reads layer {cc.cfg.layer}; "
            "extract the direction at the crosscoder's layer (a direction at the input of block L is layer L-1)"
        )
    if isinstance(store, (str, Path)):
        from diffing.store import ActivationStore

        store = ActivationStore.open(store)
    if norm_scales is None:
        if store is None:
            raise DiffingError(
                "give the store (or its norm_scales) so decoders can be read in raw units"
            )
        norm_scales = store.norm_scales(layer).tolist()
    cos_d, cos_f = decoder_cosines(cc, direction, norm_scales)
    delta = relative_norm_diff(cc.W_dec.detach().float())
    chosen = select_refusal_latents(cos_d, cos_f, cfg)
    given = read_latent_records(analysis_latents)
    tokenizer = pair.tokenizer if pair is not None else None
    contexts = (
        _contexts(cc, store, layer, chosen, cfg, tokenizer) if store is not None and chosen else {}
    )
    lens = []
    if pair is not None and chosen:
        from diffing.crosscoder.contexts import read_lens

        W_f = cc.W_dec.detach().float()[1, torch.tensor(chosen)]
        lens = read_lens(W_f, pair, "finetuned", norm_scale=float(norm_scales[1]), top=cfg.lens_top)
    records = []
    for i, j in enumerate(chosen):
        rec = {"latent": j, "cos_difference": json_number(cos_d[j]), "cos_finetuned": json_number(cos_f[j]),
               "delta": json_number(delta[j]), "class": given.get(j, {}).get("class"),
               "latent_scaling": (given.get(j, {}).get("latent_scaling") or {}).get("flag")}  # fmt: skip
        if j in contexts:
            rec["contexts"] = contexts[j]
        if lens:
            rec["logit_lens"] = {"finetuned": lens[i]}
        records.append(rec)
    ablation = None
    if harmful:
        if pair is None:
            raise DiffingError(
                "the ablation comparison needs the model pair; pass `pair`", fields=("pair",)
            )
        ablation = _ablation(cc, pair, list(harmful)[: cfg.max_prompts], layer, norm_scales, direction,
                             chosen, refusal_tokens, score_fn, cfg)  # fmt: skip
    best = int(torch.maximum(cos_d.abs(), cos_f.abs()).argmax())
    summary = {
        "layer": int(layer), "threshold": cfg.threshold, "select_by": cfg.select_by,
        "n_latents": int(delta.shape[0]), "refusal_latents": chosen,
        "best": {"latent": best, "cos_difference": json_number(cos_d[best]), "cos_finetuned": json_number(cos_f[best]),
                 "delta": json_number(delta[best])},
        "norm_scales": [json_number(x) for x in norm_scales], "ablation": ablation, "config": asdict(cfg),
    }  # fmt: skip
    res = RefusalLinkResult(cos_d, cos_f, delta, chosen, records, ablation, summary, None)
    if out_dir is not None:
        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "refusal_link.json", refusal_link_json(res), indent=1)
        if cfg.figures:
            refusal_link_png(res, out / "refusal_link.png")
        res = res._replace(out_dir=out)
    return res


def _ablation(
    cc, pair, prompts, layer, scales, direction, chosen, refusal_tokens, score_fn, cfg
) -> dict:
    from diffing.crosscoder.refusal_ablation import (
        direction_edit,
        latent_edit,
        log_odds_score,
        refusal_scores,
    )

    if score_fn is None:
        if not refusal_tokens:
            raise DiffingError("the ablation comparison needs refusal tokens (or a score function)")
        score_fn = log_odds_score(refusal_tokens)
    n = cc.cfg.dict_size
    pool = torch.tensor(sorted(set(range(n)) - set(chosen)))
    g = torch.Generator().manual_seed(cfg.seed)
    random = pool[torch.randperm(len(pool), generator=g)[: max(1, len(chosen))]].tolist()
    edits = {
        "clean": None,
        "direction": direction_edit(direction),
        "random": latent_edit(cc, random, scales),
    }
    if chosen:
        edits["latents"] = latent_edit(cc, chosen, scales)
    out = {}
    for name, edit in edits.items():
        r = refusal_scores(pair, prompts, layer, score_fn, edit=edit, batch_size=cfg.batch_size)
        out[name] = {"mean_score": json_number(r.mean_score), "rate": json_number(r.rate)}
    out["n_prompts"] = len(prompts)
    out["random_latents"] = random
    return out


def refusal_link_json(result: RefusalLinkResult) -> dict:
    """Strict-JSON form: the summary, the refusal latents' records and every latent's cosines and Δ."""
    num = lambda t: [json_number(x) for x in t.tolist()]  # noqa: E731
    return {"summary": result.summary, "latents": result.latents, "cos_difference": num(result.cos_difference),
            "cos_finetuned": num(result.cos_finetuned), "delta": num(result.delta)}  # fmt: skip


def section(result: RefusalLinkResult) -> dict:
    """The report section (report.json): the refusal latents (without contexts past 3) and the ablation."""
    lat = [{**r, "contexts": r.get("contexts", [])[:3]} for r in result.latents]
    keep = ("layer", "threshold", "select_by", "refusal_latents", "best", "ablation")
    return {**{k: result.summary[k] for k in keep}, "latents": lat}


def refusal_link_png(result: RefusalLinkResult, path: str | Path) -> Path:
    """Scatter of Δ against cos(d_f − d_b, r) for every latent, refusal latents in red, threshold lines."""
    from diffing.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(
        result.delta.numpy(), result.cos_difference.numpy(), s=6, color="#8c8c8c", label="latents"
    )
    if result.refusal_latents:
        i = torch.tensor(result.refusal_latents)
        ax.scatter(result.delta[i].numpy(), result.cos_difference[i].numpy(), s=18, color="#c44e52",
                   label="refusal latents")  # fmt: skip
    t = result.summary["threshold"]
    for y in (t, -t):
        ax.axhline(y, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("relative decoder norm Δ (0 base-only, 1 chat-only)")
    ax.set_ylabel("cos(d_f − d_b, refusal direction)")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


__all__ = [
    "RefusalLinkResult",
    "decoder_cosines",
    "select_refusal_latents",
    "read_latent_records",
    "refusal_link",
    "refusal_link_json",
    "section",
    "refusal_link_png",
]
