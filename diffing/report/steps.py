"""The steps ``analyze`` runs, each an adapter from a method's Python API to report keys.

A step returns ``{report key: section result}``; it raises :class:`SkipSection`
with a readable reason when it was not asked to run (``--no-crosscoder``), and a
:class:`~diffing.errors.DiffingError` when it cannot (the section then fails). The
data each step reads comes from :mod:`diffing.report.inputs`. This is the only
module of the report that knows the method APIs; the renderers read report keys only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from diffing.errors import DiffingError
from diffing.report.budget import fit_to_harvest
from diffing.report.config import AnalyzeConfig
from diffing.report.findings import Thresholds
from diffing.report.inputs import RunData, prompt_files, prompt_source, prompt_splits
from diffing.report.util import SkipSection

Progress = Callable[[str], None]


def _bars(progress: Progress) -> bool:
    """Whether the methods should draw their own progress bars (the CLI's progress printer says yes)."""
    return bool(getattr(progress, "bars", False))


def load_pair(cfg: AnalyzeConfig):
    """Load the pair a config names (its PairOptions fields, and where traces run)."""
    from diffing.pair_options import load_pair as load

    return load(cfg, remote=cfg.remote)


def describe_pair(pair) -> dict:
    """The ``models`` section: names, family, shapes, sizes, notes."""
    count = lambda which: sum(p.numel() for p in pair.hf(which).parameters())  # noqa: E731
    return {
        "base": str(pair.base_ref),
        "finetuned": str(pair.finetuned_ref),
        "adapter": pair.adapter.path if pair.adapter else None,
        "family": str(pair.config.model_type),
        "layers": int(pair.n_layers),
        "d_model": int(pair.d_model),
        "vocab_size": len(pair.tokenizer),
        "parameters": {"base": count("base"), "finetuned": count("finetuned")},
        "dtype": str(next(pair.hf("base").parameters()).dtype).replace("torch.", ""),
        "chat_template": bool(getattr(pair.tokenizer, "chat_template", None)),
        "notes": list(pair.notes),
    }


def weights(pair) -> dict:
    """``weights``: per-tensor relative change (cheap; the stats step refines it with effective ranks)."""
    from diffing.weights import weight_changes

    if pair.remote:  # the weights stay on NDIF: estimates from random sketches computed there
        from diffing.stats.run import StatsConfig, weights_section

        return {"weights": weights_section(pair, StatsConfig())}
    mods = [
        {
            "name": c.name,
            "relative_change": c.relative_change,
            "delta_norm": c.delta_norm,
            "numel": c.numel,
        }
        for c in weight_changes(pair)
    ]
    return {"weights": {"source": "weights", "modules": mods}}


# ---- the method steps ----


def stats(pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData) -> dict:
    """Weights (with effective rank), activations, KL and ADL via ``diffing.stats``."""
    from diffing.stats.run import StatsConfig, compute_stats

    corpus = data.corpus()
    tokens = data.budget.tokens
    progress(f"stats: {len(corpus.texts)} texts, {len(corpus.chats)} chats, budget {tokens} tokens")
    res = compute_stats(
        pair,
        config=StatsConfig(weights=not pair.remote),  # remote: the weights step sketched them
        texts=corpus.texts,
        chats=corpus.chats,
        tokens=tokens,
        layers=cfg.layers,
        adl_layer=cfg.adl_layer,
        out_dir=out,
    )
    keep = {k: res[k] for k in ("activations", "kl", "adl") if res.get(k) is not None}
    keep["inputs"] = {"stats_tokens": res.get("tokens")}
    if res.get("weights"):
        keep["weights"] = res["weights"]
    if "tokens" in res:
        keep.setdefault("activations", {})["tokens"] = res["tokens"]
    return keep


def refusal_config(cfg: AnalyzeConfig, splits: dict, **extra):
    """The :class:`~diffing.refusal.RefusalConfig` the refusal step uses for these prompt splits."""
    from diffing.refusal import RefusalConfig

    (h_tr, h_va, _), (n_tr, n_va, _) = splits["harmful"], splits["harmless"]
    return RefusalConfig(
        n_train=len(h_tr),
        n_val=min(len(h_va), len(n_va)),
        seed=cfg.seed,
        min_train=min(4, len(h_tr), len(n_tr)),
        **extra,
    )


def refusal(pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData) -> dict:
    """Refusal directions of the fine-tuned model vs the base (``compare_pair``) and ablation/addition (``evaluate``)."""
    splits = prompt_splits(pair, cfg)
    from diffing.refusal import compare_pair, evaluate
    from diffing.refusal.io import write_json

    (h_tr, h_va, h_te), (n_tr, n_va, n_te) = splits["harmful"], splits["harmless"]
    rcfg = refusal_config(cfg, splits)
    progress(
        f"refusal: {len(h_tr)}/{len(h_va)}/{len(h_te)} harmful and {len(n_tr)}/{len(n_va)}/{len(n_te)} harmless prompts (train/val/test)"
    )
    try:
        cmp = compare_pair(pair, h_tr, n_tr, h_va, n_va, h_te, n_te, config=rcfg)
    except DiffingError as err:  # a model that does not refuse has no refusal direction: a result
        progress(f"refusal: no direction ({err}); measuring how often the model refuses")
        from diffing.report.no_refusal import no_direction

        result = no_direction(pair, rcfg, h_te, n_te, str(err))
        write_json(out / "eval.json", result)
        return {
            "refusal": result,
            "inputs": {
                "refusal_source": prompt_source(pair, cfg),
                "refusal_prompts": prompt_files(pair, cfg),
                "refusal_split_sizes": {k: [len(x) for x in v] for k, v in splits.items()},
            },
        }
    progress(
        f"refusal: direction at layer {cmp.finetuned_direction.layer}; evaluating ablation and addition"
    )
    ev = evaluate(
        pair.finetuned,
        pair.tokenizer,
        pair.arch,
        cmp.finetuned_direction,
        h_te,
        n_te,
        config=rcfg,
        model_ref=pair.finetuned_ref,
    )
    write_json(out / "compare.json", cmp.report)
    write_json(out / "eval.json", ev.report)
    result = {k: v for k, v in cmp.report.items() if k != "finetuned_candidates"}
    result["directions_by_layer"] = _best_per_layer(cmp.report.get("finetuned_candidates") or [])
    result.update(
        refusal_rate=ev.report["refusal_rate"],
        refusal_score=ev.report["refusal_score"],
        kl_harmless={
            "ablation": ev.report["kl_harmless"],
            "addition": ev.report["kl_harmless_addition"],
        },
        refusal_phrases=ev.report["refusal_phrases"],
        examples=ev.report["examples"],
    )
    refuses = (ev.report["refusal_rate"].get("harmful") or {}).get("baseline")
    result["verdict"] = (
        "refuses"
        if isinstance(refuses, (int, float)) and refuses >= Thresholds().refusal_present
        else "does-not-refuse"
    )
    sizes = {k: [len(x) for x in v] for k, v in splits.items()}
    return {
        "refusal": result,
        "inputs": {
            "refusal_source": prompt_source(pair, cfg),
            "refusal_prompts": prompt_files(pair, cfg),
            "refusal_split_sizes": sizes,
        },
    }


def _best_per_layer(rows: list[dict]) -> list[dict]:
    """Per layer, the valid candidate with the lowest bypass score (the per-layer view of the selection)."""
    best: dict[int, dict] = {}
    for r in rows:
        if r.get("bypass") is None:
            continue
        cur = best.get(r["layer"])
        if cur is None or (r.get("valid"), -r["bypass"]) > (cur.get("valid"), -cur["bypass"]):
            best[r["layer"]] = r
    return [best[k] for k in sorted(best)]


def _report_latent(rec: dict) -> dict:
    """One latent of ``latents.json`` in the report's compact form (fine-tuned logit lens, top 5 contexts)."""
    ls = rec.get("latent_scaling") or {}
    lens = rec.get("logit_lens") or {}
    lens = lens.get("finetuned", []) if isinstance(lens, dict) else lens
    return {
        "index": rec.get("latent", rec.get("index")),
        "class": rec.get("class"),
        "delta": rec.get("delta"),
        "cosine": rec.get("cosine"),
        "frequency": rec.get("frequency"),
        "max_activation": rec.get("max_activation"),
        "nu_error": ls.get("nu_error"),
        "nu_reconstruction": ls.get("nu_recon"),
        "flag": ls.get("flag"),
        "beta_reliable": ls.get("beta_reliable"),
        "logit_lens": [
            {"token": t.get("token"), "score": t.get("logit")} for t in lens if isinstance(t, dict)
        ],
        "top_contexts": (rec.get("contexts") or [])[:5],
    }


def top_latents(records: list[dict], n: int) -> list[dict]:
    """The ``n`` latents a reader should see first: genuine chat-only, other chat-only (by Δ), then base-only."""

    def rank(r: dict) -> tuple:
        cls, delta = r.get("class"), r.get("delta") or 0.5
        if cls == "chat_only":
            return (0 if r.get("flag") == "genuine" else 1, -delta)
        if cls == "base_only":
            return (2, delta)
        return (3, -abs(delta - 0.5))

    return sorted((_report_latent(r) for r in records), key=rank)[:n]


def crosscoder(pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData) -> dict:
    """Analyse a given crosscoder, or train one sized to the budget, via ``diffing.store`` and ``diffing.crosscoder``."""
    if not cfg.crosscoder and not cfg.train_crosscoder:
        raise SkipSection("not requested (--no-crosscoder); pass --crosscoder DIR to analyse one")
    from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder
    from diffing.crosscoder.analyze import analyze_crosscoder
    from diffing.store import harvest

    if cfg.crosscoder:
        cc = CrossCoder.load(cfg.crosscoder)
        layer = (
            cfg.crosscoder_layer if cfg.crosscoder_layer is not None else cc.cfg.layer
        )  # its own layer
    else:
        layer = pair.n_layers // 2 if cfg.crosscoder_layer is None else cfg.crosscoder_layer
    layer = pair.check_layers([pair.n_layers // 2 if layer is None else layer])[0]
    corpus = data.corpus()
    budget = data.budget
    progress(f"crosscoder: harvesting {budget.tokens} tokens at layer {layer}")
    store = harvest(
        pair,
        out / "store",
        layers=[layer],
        data=corpus.specs,
        tokens=budget.tokens,
        seq_len=128,
        progress=_bars(progress),
    )
    if not cfg.crosscoder:
        batch = max(32, min(512, store.n_tokens // 4))  # a small store still gives several batches
        latents, steps = fit_to_harvest(budget, store.n_tokens, pair.d_model)
        cc_cfg = CrossCoderConfig(
            dict_size=latents,
            steps=steps,
            batch_size=batch,
            seed=cfg.seed,
            lr_warmup_steps=min(100, steps // 10),
            threshold_start_step=min(100, steps // 4),
        )
        progress(f"crosscoder: training {latents} latents for {steps} steps")
        trained = train_crosscoder(
            store, cc_cfg, out / "model", progress=_bars(progress), force=True
        )  # a rerun into the same report folder retrains
        cc, metrics = trained.crosscoder, trained.metrics
    else:
        given = Path(cfg.crosscoder) / "metrics.json"
        metrics = json.loads(given.read_text()) if given.is_file() else {}
    chats = corpus.chats[: max(0, cfg.causal_transcripts)]
    if chats:
        progress(f"crosscoder: causal check on {len(chats)} chat transcripts")
    res = analyze_crosscoder(
        cc, store, out / "analysis", pair=pair, top=10, layer=layer, causal_texts=chats or None
    )
    summary = dict(res.summary)
    summary["training"] = {
        k: metrics[k] for k in ("fvu", "l0", "dead_frac", "steps", "tokens") if k in metrics
    }
    summary["size"] = {
        "layer": layer,
        "latents": int(cc.W_dec.shape[1]),
        "steps": None if cfg.crosscoder else metrics.get("steps", steps),
        "harvested_tokens": int(store.n_tokens),
        "trained_here": not cfg.crosscoder,
    }
    scaling = [
        {
            "index": r["index"],
            "class": r["class"],
            "nu_error": r["nu_error"],
            "nu_reconstruction": r["nu_reconstruction"],
        }
        for r in map(_report_latent, res.latents)
        if r["nu_error"] is not None
    ]
    return {
        "crosscoder": {
            "summary": summary,
            "latents": top_latents(res.latents, max(20, cfg.top_latents)),
            "latent_scaling": scaling,
        }
    }
