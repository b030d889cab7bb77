"""``analyze_crosscoder``: read a trained crosscoder against its activation store, in one streaming pass.

One pass over the store encodes every token once and feeds three accumulators:
activation frequencies by role (:mod:`.analysis`), Latent Scaling sums for the
chat-only and base-only latents (:mod:`.latent_scaling`) and the running top
activations (:mod:`.contexts`), plus the moments of the activation difference
(:mod:`.bias`). Afterwards, contexts and logit lenses are rendered for the
classified latents and for the decoder-bias difference (the shift no latent
carries), the causal check runs on chat transcripts (:mod:`.causal`), and
``latents.json``, ``summary.json`` and the figures are written.
Docs: docs/crosscoder-analysis.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from diffing.crosscoder.analysis import (
    CLASS_IDS,
    CLASSES,
    ActivationStats,
    ClassThresholds,
    FrequencyStats,
    SparseCodes,
    check_latents,
    classify,
    decoder_cosine,
    delta_histogram,
    json_number,
    latent_records,
    relative_norm_diff,
    sparse_codes,
)
from diffing.crosscoder.analysis_config import AnalysisConfig  # noqa: F401 - re-exported
from diffing.crosscoder.bias import BiasShift, DifferenceMoments, bias_json, bias_shift
from diffing.crosscoder.causal import (
    CausalResult,
    causal_check,
    causal_json,
    load_transcripts,
)
from diffing.crosscoder.contexts import TopActivations, read_lens, render_contexts
from diffing.crosscoder.latent_scaling import (
    FLAGS,
    LatentScaling,
    LatentScalingAccumulator,
    ScalingThresholds,
)
from diffing.errors import DiffingError
from diffing.io import write_json
from diffing.tokens import ROLES


class AnalysisResult(NamedTuple):
    """What ``analyze_crosscoder`` computed (and wrote to ``out_dir``)."""

    delta: torch.Tensor
    """``[n]`` relative decoder norm Δ."""
    cosine: torch.Tensor
    """``[n]`` decoder cosine between the base and fine-tuned decoder vectors."""
    classes: torch.Tensor
    """``[n]`` class id (index into ``CLASSES``)."""
    frequency: FrequencyStats
    """Activation frequencies, overall and by role, and mean activations."""
    scaling: LatentScaling
    """Latent Scaling of the chat-only and base-only latents."""
    causal: CausalResult | None
    """The causal check, or None when no transcripts were available."""
    latents: list[dict]
    """Per-latent records (the content of ``latents.json``)."""
    summary: dict
    """The content of ``summary.json``."""
    out_dir: Path
    """Where the files were written."""
    bias: BiasShift | None = None
    """The decoder-bias difference: the shift on every token that no latent carries."""


def _as_crosscoder(cc):
    if isinstance(cc, (str, Path)):
        from diffing.crosscoder import CrossCoder

        return CrossCoder.load(cc)
    return cc


def _as_store(store):
    if isinstance(store, (str, Path)):
        from diffing.store import ActivationStore

        return ActivationStore.open(store)
    return store


def check_compatible(cc, store, layer: int | None = None) -> int:
    """The layer to analyse; DiffingError when the crosscoder was not trained on this store's models/layer."""
    cfg = cc.cfg
    if store.n_models != 2 or cfg.n_models != 2:
        raise DiffingError(
            f"model diffing needs a two-model crosscoder and store (got {cfg.n_models} and {store.n_models}); "
            "harvest and train on a (base, fine-tuned) pair"
        )
    if cfg.d_model != store.d_model:
        raise DiffingError(
            f"the crosscoder reads d_model={cfg.d_model} but the store holds d_model={store.d_model}: they come "
            "from different models; pass the store the crosscoder was trained on"
        )
    layer = cfg.layer if layer is None else int(layer)
    if cfg.layer is not None and layer != cfg.layer:
        raise DiffingError(
            f"the crosscoder was trained on layer {cfg.layer}, not layer {layer}; drop the layer argument"
        )
    if layer is None:
        if len(store.layers) != 1:
            raise DiffingError(
                f"the crosscoder does not record its layer and the store holds {store.layers}; pass `layer`",
                fields=("layer",),
            )
        layer = store.layers[0]
    if layer not in store.layers:
        raise DiffingError(
            f"the crosscoder reads layer {layer} but the store holds layers {store.layers}; "
            "pass the store it was trained on, or harvest that layer"
        )
    prov = cfg.store_manifest or {}
    mine, theirs = prov.get("models") or [], store.manifest.get("models") or []
    for i, (a, b) in enumerate(zip(mine, theirs)):
        key = "hash" if a.get("hash") and b.get("hash") else "ref"
        if a.get(key) and b.get(key) and a.get(key) != b.get(key):
            raise DiffingError(
                f"the crosscoder was trained on {('base', 'fine-tuned')[i % 2]} model {a.get('ref')!r} but the store "
                f"holds activations of {b.get('ref')!r}; pass the store the crosscoder was trained on"
            )
    return layer


@torch.no_grad()
def reconstruct(cc, codes: SparseCodes) -> torch.Tensor:
    """``x̂ [B, 2, d]`` from a batch's active entries: only active latents are read (``embedding_bag``)."""
    W = cc.W_dec  # [2, n, d]
    counts = torch.bincount(codes.rows, minlength=codes.n_rows)  # [B] active latents per token
    offsets = torch.cumsum(counts, 0) - counts  # [B] start of each token's bag (rows are sorted)
    vals = codes.vals.to(W.dtype)
    out = [
        F.embedding_bag(codes.cols, W[m], offsets, mode="sum", per_sample_weights=vals)
        for m in range(W.shape[0])
    ]
    return torch.stack(out, 1) + cc.b_dec  # [B, 2, d]


def pair_from_store(store, *, remote: bool | str = False):
    """The :class:`~diffing.models.ModelPair` a store's manifest names (``remote`` as in ``ModelPair.load``)."""
    refs = [m.get("ref") for m in store.manifest.get("models") or []]
    if len(refs) != 2 or not all(refs):
        raise DiffingError(
            "the store's manifest does not name both models, so the logit lens and the causal check cannot load them; "
            "pass the pair (`pair`)",
            fields=("pair",),
        )
    from diffing.models import ModelPair

    return ModelPair.load(refs[0], refs[1], remote=remote)


def analyze_crosscoder(
    cc,
    store,
    out_dir: str | Path,
    *,
    pair=None,
    top: int = 20,
    thresholds: ClassThresholds | None = None,
    scaling: ScalingThresholds | None = None,
    causal_texts: Sequence | str | Path | None = None,
    layer: int | None = None,
    latents: Sequence[int] | None = None,
    config: AnalysisConfig | None = None,
) -> AnalysisResult:
    """Per-latent statistics, Latent Scaling, contexts, logit lens and causal check; writes files to ``out_dir``.

    ``cc``: a ``CrossCoder`` or its folder; ``store``: an ``ActivationStore`` or its folder;
    ``pair``: the ``ModelPair`` (loaded from the store's manifest when None and needed);
    ``top``: top-activating contexts kept per latent; ``causal_texts``: chat transcripts
    (list or .jsonl path) for the causal check, skipped when None; ``latents``: extra
    latent indices that also get contexts and logit lenses (DiffingError when out of range).
    """
    cfg = config or AnalysisConfig()
    if thresholds is not None:
        cfg.classes = thresholds
    if scaling is not None:
        cfg.scaling = scaling
    cc, store = _as_crosscoder(cc), _as_store(store)
    layer = check_compatible(cc, store, layer)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    W_dec = cc.W_dec.detach().float()  # [2, n, d]
    n = W_dec.shape[1]
    asked = check_latents(latents or [], n)
    delta, cosine = relative_norm_diff(W_dec), decoder_cosine(W_dec)  # [n], [n]
    classes = classify(delta, cfg.classes)  # [n]
    chat_only = (classes == CLASS_IDS["chat_only"]).nonzero().squeeze(1)
    base_only = (classes == CLASS_IDS["base_only"]).nonzero().squeeze(1)
    sel = torch.cat([chat_only, base_only])  # latents that get Latent Scaling
    own = torch.cat([torch.ones_like(chat_only), torch.zeros_like(base_only)])

    stats = ActivationStats(n)
    acc = LatentScalingAccumulator(W_dec, sel, own)
    tops = TopActivations(n, top)
    scales = store.norm_scales(layer).tolist()  # [s_b, s_f]
    moments = DifferenceMoments(store.d_model, scales)
    start = 0
    limit = store.n_tokens if cfg.max_tokens is None else min(cfg.max_tokens, store.n_tokens)
    for batch in store.iter_sequential(cfg.batch_size, layer=layer):
        if start >= limit:
            break
        x, roles = batch.acts[: limit - start], batch.roles[: limit - start]  # [B, 2, d], [B]
        x = x.to(cc.W_dec.device)
        codes = sparse_codes(cc.encode(x))  # the batch's active entries, read once
        stats.update(codes, roles)
        acc.update(x, reconstruct(cc, codes), codes)
        tops.update(codes, start)
        moments.update(x)
        start += x.shape[0]
    freq = stats.result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ls = acc.result(cfg.scaling)
    for w in caught:
        warnings.warn(w.message, stacklevel=2)

    # contexts and logit lens for the most extreme classified latents
    order = sel[torch.argsort((delta[sel] - 0.5).abs(), descending=True)][
        : cfg.context_latents
    ].tolist()
    order = asked + [j for j in order if j not in set(asked)]
    notes: list[str] = []
    texts = load_transcripts(causal_texts)
    if pair is None:  # the logit lenses and the causal check need the models
        try:
            pair = pair_from_store(store)
        except DiffingError as err:
            notes.append(f"logit lens and causal check skipped: {err}")
            warnings.warn(str(err), stacklevel=2)
    tokenizer = pair.tokenizer if pair is not None else None
    details: dict[int, dict] = {}
    lens = {}
    if pair is not None and order:
        idx = torch.tensor(order)
        lens = {which: read_lens(W_dec[m, idx], pair, which, norm_scale=scales[m], top=cfg.lens_top)
                for m, which in enumerate(("base", "finetuned"))}  # fmt: skip
    for i, j in enumerate(order):
        details[j] = {
            "contexts": render_contexts(
                store, tops.of(j), tokenizer=tokenizer, window=cfg.context_window
            )
        }
        if lens:
            details[j]["logit_lens"] = {which: lens[which][i] for which in lens}

    shift = bias_shift(cc, moments)  # what fine-tuning added on every token alike
    bias_lens = None
    if pair is not None:
        bias_lens = {
            "finetuned": read_lens(shift.difference[None], pair, "finetuned", top=cfg.lens_top)[0]
        }

    # the causal check
    causal = None
    if texts and pair is not None and pair.remote:
        notes.append(
            f"causal check on remote models: KLs over the fine-tuned model's top "
            f"{cfg.causal.remote_top_k} tokens plus one bin for the rest (lower bounds)"
        )
    if texts and pair is not None:
        causal = causal_check(cc, pair, texts, _latent_sets(delta, chat_only, ls, cfg), layer=layer,
                              norm_scales=scales, shifts={"decoder_bias": shift.difference},
                              config=cfg.causal)  # fmt: skip
    elif not texts:
        notes.append("causal check skipped: no chat transcripts given (causal_texts)")

    latents = latent_records(W_dec, delta, cosine, classes, freq, ls, details)
    summary = _summary(delta, cosine, classes, freq, ls, causal, layer, cfg, notes)
    summary["decoder_bias"] = bias_json(shift, bias_lens)
    write_json(out / "latents.json", latents, indent=1, non_finite="null")
    write_json(out / "summary.json", summary, non_finite="null")
    if cfg.figures:
        from diffing.crosscoder.figures import (
            cosine_histogram_png,
            delta_histogram_png,
            nu_scatter_png,
        )

        delta_histogram_png(delta, out / "delta_histogram.png", thresholds=cfg.classes)
        labels = [CLASSES[int(classes[j])] for j in ls.latents]
        nu_scatter_png(ls.nu_error.nan_to_num(0), ls.nu_recon.nan_to_num(0), labels, out / "nu_scatter.png",
                       thresholds=cfg.scaling)  # fmt: skip
        cosine_histogram_png(cosine[classes == CLASS_IDS["shared"]], out / "cosine_histogram.png")
    return AnalysisResult(delta, cosine, classes, freq, ls, causal, latents, summary, out, shift)


def _latent_sets(delta, chat_only, ls: LatentScaling, cfg: AnalysisConfig) -> dict[str, list[int]]:
    """The causal check's sets: all chat-only, genuine chat-only, top-N by Δ, and a random control."""
    genuine = [
        int(j) for j, o, fl in zip(ls.latents, ls.own, ls.flags) if int(o) == 1 and fl == "genuine"
    ]
    n = delta.shape[0]
    top_n = torch.argsort(delta, descending=True)[: cfg.causal_top_n].tolist()
    size = len(genuine) or len(chat_only)
    pool = torch.tensor(sorted(set(range(n)) - set(genuine)))
    g = torch.Generator().manual_seed(cfg.seed)
    random = pool[torch.randperm(len(pool), generator=g)[:size]].tolist()
    return {
        "chat_only": chat_only.tolist(),
        "chat_only_genuine": genuine,
        "top_delta": top_n,
        "random": random,
    }


def _summary(
    delta, cosine, classes, freq, ls: LatentScaling, causal, layer, cfg: AnalysisConfig, notes
) -> dict:
    flags = {}
    for name in ("chat_only", "base_only"):
        mine = [i for i, j in enumerate(ls.latents.tolist()) if CLASSES[int(classes[j])] == name]
        flags[name] = {fl: sum(ls.flags[i] == fl for i in mine) for fl in FLAGS}
        flags[name]["genuine_reliable"] = sum(
            ls.flags[i] == "genuine" and bool(ls.reliable[i]) for i in mine
        )
        flags[name]["unreliable"] = sum(not bool(ls.reliable[i]) for i in mine)
    shared = classes == CLASS_IDS["shared"]
    return {
        "layer": layer,
        "n_latents": int(delta.shape[0]),
        "n_tokens": freq.n_tokens,
        "tokens_by_role": {r: int(freq.role_tokens[i]) for i, r in enumerate(ROLES)},
        "dead_latents": int((freq.active == 0).sum()),
        "classes": {c: int((classes == i).sum()) for i, c in enumerate(CLASSES)},
        "latent_scaling": flags,
        "delta_histogram": delta_histogram(delta),
        "shared_cosine_mean": json_number(cosine[shared].mean()) if bool(shared.any()) else None,
        "causal": None if causal is None else causal_json(causal),
        "config": asdict(cfg),
        "notes": notes,
    }
