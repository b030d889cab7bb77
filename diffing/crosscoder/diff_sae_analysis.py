"""Reading a diff-SAE: what each latent is about, and which crosscoder chat-only latents it matches.

One pass over the store encodes every token's difference ``s * (x_ft - x_base)`` and feeds
the activation frequencies (overall and by role), the running top activations, each latent's
share of the difference it reconstructs (``mass_j = sum_t f_j(t) ||d_j||``) and the FVU.
The latents with the largest share get their top contexts and the tokens their decoder
promotes through the fine-tuned model's final norm and unembedding (logit lens, raw units
``d_j / s``). Given a crosscoder of the same layer, each diff-SAE latent gets the largest
|cosine| between its decoder and the crosscoder's decoder differences of chat-only latents,
in raw units: ``d_j^f / s_f - d_j^b / s_b``. Docs: docs/diff-sae.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis import ActivationStats, check_latents, json_number, sparse_codes
from diffing.crosscoder.contexts import TopActivations, read_lens, render_contexts
from diffing.crosscoder.diff_sae import DiffStore, load_diff_sae, sae_scale
from diffing.crosscoder.extra_config import DiffSAEConfig
from diffing.errors import DiffingError
from diffing.io import write_json
from diffing.tokens import ROLES


class ChatOnlyMatch(NamedTuple):
    """Diff-SAE decoders against a crosscoder's chat-only decoder differences (raw units)."""

    chat_only: list[int]
    """Crosscoder latents with Δ above ``chat_only_above``."""
    max_cosine: torch.Tensor
    """``[n_sae]`` largest |cosine| of each diff-SAE latent with a chat-only decoder difference (0 if none)."""
    best: torch.Tensor
    """``[n_sae]`` the chat-only latent reaching it (-1 if none)."""
    per_chat_only: list[dict]
    """Per chat-only latent: ``{latent, delta, best_sae_latent, cosine}`` (its closest diff-SAE latent)."""


class DiffSAEResult(NamedTuple):
    """What :func:`analyze_diff_sae` computed (and wrote to ``out_dir``)."""

    frequency: torch.Tensor
    """``[n]`` fraction of tokens on which each latent fired."""
    mass_share: torch.Tensor
    """``[n]`` each latent's share of ``sum_t sum_j f_j(t) ||d_j||`` (what of the difference it carries)."""
    fvu: float
    """Fraction of the difference's variance the SAE leaves unexplained over the tokens read."""
    l0: float
    """Mean active latents per token."""
    dead_fraction: float
    """Latents that fired on no token read."""
    match: ChatOnlyMatch | None
    """The comparison with a crosscoder's chat-only latents (None without a crosscoder)."""
    latents: list[dict]
    """Records of the latents that got contexts / lenses (largest share first)."""
    summary: dict
    """Layer, scale, token counts, FVU, L0, dead fraction, match counts, config."""
    out_dir: Path | None
    """Where ``diff_sae.json`` and the figure were written (None: not written)."""


@torch.no_grad()
def match_chat_only(sae_dirs: torch.Tensor, cc, norm_scales: Sequence[float], chat_only_above: float = 0.9) -> ChatOnlyMatch:  # fmt: skip
    """Max |cosine| of each diff-SAE decoder ``[n_sae, d]`` (any units) with ``cc``'s chat-only decoder differences.

    ``norm_scales``: the crosscoder store's ``[s_b, s_f]``; differences are taken in raw units.
    """
    from diffing.crosscoder.analysis import relative_norm_diff

    W = cc.W_dec.detach().float()  # [2, n_cc, d]
    delta = relative_norm_diff(W)  # [n_cc]
    chat = (delta > chat_only_above).nonzero().squeeze(1)  # [c]
    n = sae_dirs.shape[0]
    if chat.numel() == 0:
        return ChatOnlyMatch([], torch.zeros(n), torch.full((n,), -1), [])
    s_b, s_f = (float(x) for x in norm_scales)
    diff = W[1, chat] / s_f - W[0, chat] / s_b  # [c, d] raw units
    a = torch.nn.functional.normalize(sae_dirs.float(), dim=-1)
    b = torch.nn.functional.normalize(diff, dim=-1)
    cos = (a @ b.T).abs()  # [n_sae, c]
    best_val, best_idx = cos.max(1)
    col_val, col_idx = cos.max(0)  # [c]
    per = [{"latent": int(j), "delta": json_number(delta[j]), "best_sae_latent": int(col_idx[i]),
            "cosine": json_number(col_val[i])} for i, j in enumerate(chat.tolist())]  # fmt: skip
    return ChatOnlyMatch(chat.tolist(), best_val, chat[best_idx], per)


def _crosscoder_scales(cc, store, layer: int) -> list[float]:
    prov = (cc.cfg.store_manifest or {}).get("norm_scales") or {}
    if str(layer) in prov:
        return [float(x) for x in prov[str(layer)]]
    return store.norm_scales(layer).tolist()


@torch.no_grad()
def analyze_diff_sae(
    sae,
    store,
    out_dir: str | Path | None = None,
    *,
    pair=None,
    crosscoder=None,
    config: DiffSAEConfig | None = None,
    latents: Sequence[int] | None = None,
) -> DiffSAEResult:
    """Frequencies, shares, contexts, logit lenses and the chat-only comparison of a diff-SAE.

    ``sae``: a diff-SAE or its folder; ``store``: the paired store it was trained on (or its
    folder); ``pair``: the ``ModelPair`` for the logit lens (skipped when None); ``crosscoder``:
    a two-model crosscoder (or folder) of the same layer to compare with; ``latents``: extra
    latents that also get contexts and lenses. Writes ``diff_sae.json`` (and ``diff_sae.png``).
    """
    from diffing.crosscoder.model import CrossCoder

    cfg = config or DiffSAEConfig()
    sae = load_diff_sae(sae)
    if isinstance(store, (str, Path)):
        from diffing.store import ActivationStore

        store = ActivationStore.open(store)
    layer, scale = sae.cfg.layer, sae_scale(sae)
    diff = DiffStore(store, layer if layer is not None else store.layer_of(None), scale)
    if sae.cfg.d_model != diff.d_model:
        raise DiffingError(
            f"the diff-SAE reads d_model={sae.cfg.d_model} but the store holds {diff.d_model}; pass its store"
        )
    n = sae.cfg.dict_size
    asked = check_latents(latents or [], n)
    norms = sae.decoder_norms()[0].float()  # [n]
    stats, tops = ActivationStats(n), TopActivations(n, cfg.top)
    mass = torch.zeros(n, dtype=torch.float64)
    err = var = 0.0
    total = torch.zeros(sae.cfg.d_model, dtype=torch.float64)
    sq = 0.0
    start = 0
    limit = diff.n_tokens if cfg.max_tokens is None else min(cfg.max_tokens, diff.n_tokens)
    for batch in diff.iter_sequential(cfg.read_batch):
        if start >= limit:
            break
        x = batch.acts[: limit - start].to(sae.W_dec.device)  # [B, 1, d]
        x_hat, f = sae(x)
        codes = sparse_codes(f)
        stats.update(codes, batch.roles[: limit - start])
        tops.update(codes, start)
        mass.index_add_(
            0, codes.cols.cpu(), (codes.vals.cpu() * norms.cpu()[codes.cols.cpu()]).double()
        )
        err += float((x - x_hat).double().pow(2).sum())
        total += x[:, 0].double().sum(0).cpu()
        sq += float(x.double().pow(2).sum())
        start += x.shape[0]
    if start == 0:
        raise DiffingError(f"the store {store.path} holds no tokens to read the diff-SAE on")
    var = sq - float(total.pow(2).sum()) / start
    freq = stats.result()
    share = (mass / mass.sum().clamp_min(1e-30)).float()
    fvu = err / max(var, 1e-30)

    match = None
    if crosscoder is not None:
        cc = CrossCoder.load(crosscoder) if isinstance(crosscoder, (str, Path)) else crosscoder
        if cc.cfg.n_models != 2 or cc.cfg.d_model != sae.cfg.d_model:
            raise DiffingError(
                "the comparison needs a two-model crosscoder of the same width as the diff-SAE"
            )
        if cc.cfg.layer is not None and layer is not None and cc.cfg.layer != layer:
            raise DiffingError(
                f"the crosscoder reads layer {cc.cfg.layer} but the diff-SAE layer {layer}; compare at one layer"
            )
        match = match_chat_only(sae.W_dec[0].detach(), cc, _crosscoder_scales(cc, store, diff.layer),
                                cfg.chat_only_above)  # fmt: skip

    order = torch.argsort(share, descending=True)[: cfg.context_latents].tolist()
    order = asked + [j for j in order if j not in set(asked)]
    lens = []
    if pair is not None and order:
        lens = read_lens(sae.W_dec[0, torch.tensor(order)].detach().float(), pair, "finetuned",
                         norm_scale=scale, top=cfg.lens_top)  # fmt: skip
    tokenizer = pair.tokenizer if pair is not None else None
    records = []
    for i, j in enumerate(order):
        rec = {
            "latent": j,
            "share": json_number(share[j]),
            "frequency": json_number(freq.frequency[j]),
            "frequency_by_role": {r: json_number(freq.frequency_by_role[k, j]) for k, r in enumerate(ROLES) if freq.role_tokens[k] > 0},
            "decoder_norm_raw": json_number(norms[j] / scale),
            "contexts": render_contexts(store, tops.of(j), tokenizer=tokenizer, window=cfg.context_window),
        }  # fmt: skip
        if lens:
            rec["logit_lens"] = {"finetuned": lens[i]}
        if match is not None:
            rec["max_chat_only_cosine"] = json_number(match.max_cosine[j])
            rec["best_chat_only_latent"] = int(match.best[j]) if match.chat_only else None
        records.append(rec)
    summary = {
        "layer": diff.layer,
        "scale": json_number(scale),
        "scale_kind": (sae.cfg.extra or {}).get("scale"),
        "n_latents": n,
        "n_tokens": start,
        "fvu": json_number(fvu),
        "l0": json_number(float(freq.active.sum()) / start),
        "dead_fraction": json_number(float((freq.active == 0).float().mean())),
        "latents_for_half_the_difference": int((share.sort(descending=True).values.cumsum(0) < 0.5).sum()) + 1,
        "comparison": None if match is None else {
            "chat_only_latents": len(match.chat_only),
            "matched": int((match.max_cosine >= cfg.match_cosine).sum()),
            "match_cosine": cfg.match_cosine,
            "chat_only": match.per_chat_only,
        },
        "notes": [] if pair is not None else ["logit lens skipped: no model pair given"],
        "config": asdict(cfg),
    }  # fmt: skip
    res = DiffSAEResult(freq.frequency, share, fvu, summary["l0"], summary["dead_fraction"], match,
                        records, summary, None)  # fmt: skip
    if out_dir is not None:
        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "diff_sae.json", diff_sae_json(res), indent=1)
        if cfg.figures:
            diff_sae_png(res, out / "diff_sae.png")
        res = res._replace(out_dir=out)
    return res


def diff_sae_json(result: DiffSAEResult) -> dict:
    """Strict-JSON form of a result: the summary, the latent records and every latent's share and frequency."""
    return {
        "summary": result.summary,
        "latents": result.latents,
        "share": [json_number(x) for x in result.mass_share.tolist()],
        "frequency": [json_number(x) for x in result.frequency.tolist()],
        "max_chat_only_cosine": None
        if result.match is None
        else [json_number(x) for x in result.match.max_cosine.tolist()],
    }


def section(result: DiffSAEResult) -> dict:
    """The report section (report.json): headline numbers and the top latents with their lenses."""
    s = result.summary
    return {
        "layer": s["layer"], "n_latents": s["n_latents"], "fvu": s["fvu"], "l0": s["l0"],
        "dead_fraction": s["dead_fraction"], "latents_for_half_the_difference": s["latents_for_half_the_difference"],
        "comparison": None if s["comparison"] is None else {k: v for k, v in s["comparison"].items() if k != "chat_only"},
        "top_latents": [{k: r.get(k) for k in ("latent", "share", "frequency", "frequency_by_role", "logit_lens",
                                               "max_chat_only_cosine")} | {"contexts": r["contexts"][:3]}
                        for r in result.latents[:8]],
    }  # fmt: skip


def diff_sae_png(result: DiffSAEResult, path: str | Path) -> Path:
    """Left: latents' shares of the difference, largest first (log); right: max |cos| with chat-only latents."""
    from diffing.plotting import pyplot, save_figure

    plt = pyplot()
    panels = 2 if result.match is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    ax = axes[0][0]
    share = result.mass_share.sort(descending=True).values.clamp_min(1e-8).numpy()
    ax.plot(range(1, len(share) + 1), share, color="#4c72b0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diff-SAE latent (by share)")
    ax.set_ylabel("share of the difference")
    if result.match is not None:
        ax = axes[0][1]
        ax.hist(result.match.max_cosine.numpy(), bins=40, range=(0, 1), color="#dd8452")
        ax.set_yscale("log")
        ax.set_xlabel("max |cos| with a chat-only decoder difference")
        ax.set_ylabel("diff-SAE latents")
    return save_figure(fig, path)


__all__ = [
    "ChatOnlyMatch",
    "DiffSAEResult",
    "match_chat_only",
    "analyze_diff_sae",
    "diff_sae_json",
    "section",
    "diff_sae_png",
]
