"""The steps ``analyze`` runs, each an adapter from a method's Python API to report keys.

A step returns ``{report key: section result}``; it raises :class:`SkipSection`
(or :class:`~diffing.errors.DiffingError`) with a readable reason when it cannot
run, e.g. no prompt sets for the refusal comparison. This is the only module of
the report that knows the method APIs; the renderers read report keys only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from diffing.errors import DiffingError
from diffing.report.config import AnalyzeConfig
from diffing.report.util import SkipSection

Progress = Callable[[str], None]


def _bars(progress: Progress) -> bool:
    """Whether the methods should draw their own progress bars (the CLI's progress printer says yes)."""
    return bool(getattr(progress, "bars", False))


def load_pair(cfg: AnalyzeConfig):
    """Load the pair a config names."""
    from diffing.models import ModelPair

    return ModelPair.load(
        cfg.base,
        cfg.finetuned,
        adapter=cfg.adapter,
        dtype=cfg.dtype,
        device=cfg.device,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
        remote=cfg.remote,
    )


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


# ---- bundled data: a pair that ships prompt sets and corpora (e.g. the built-in organisms) ----


def _organism_root(pair, cfg: AnalyzeConfig) -> Path | None:
    """The folder holding ``organism.json`` next to (or above) the fine-tuned model, if any."""
    for ref in (cfg.finetuned, cfg.adapter, getattr(pair, "finetuned_ref", None)):
        if not ref:
            continue
        p = Path(str(ref)).expanduser()
        for cand in (p, p.parent):
            if (cand / "organism.json").is_file():
                return cand
    return None


def bundled(pair, cfg: AnalyzeConfig) -> dict:
    """What the pair ships next to its ``organism.json``: ``{"prompts": {stem: Path}, "corpus": [Path]}``.

    Paths come from the manifest's ``layout`` (docs/organisms.md) when it has one, else from the
    same default layout: ``prompts/{harmful,harmless}_{train,val,test}.jsonl``, ``corpus/text.txt``,
    ``corpus/chat.jsonl``. Nothing about the models' behaviour is read.
    """
    root = _organism_root(pair, cfg)
    if root is None:
        return {"prompts": {}, "corpus": []}
    try:
        lay = json.loads((root / "organism.json").read_text()).get("layout") or {}
    except (OSError, ValueError):
        lay = {}
    prompts = lay.get("prompts") or {
        f"{k}_{s}": f"prompts/{k}_{s}.jsonl"
        for k in ("harmful", "harmless")
        for s in ("train", "val", "test")
    }
    corpus = lay.get("corpus") or {"text": "corpus/text.txt", "chat": "corpus/chat.jsonl"}
    return {
        "prompts": {stem: root / rel for stem, rel in prompts.items() if (root / rel).is_file()},
        "corpus": [root / rel for rel in corpus.values() if (root / rel).is_file()],
    }


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file (``diffing.data.load_prompts`` when available, else .txt lines / jsonl fields)."""
    try:
        from diffing.data import load_prompts
    except ModuleNotFoundError:
        from diffing.stats.inputs import read_documents

        docs = read_documents([path], field=None)
        return docs.texts + [
            next((m["content"] for m in c if m.get("role") == "user"), "") for c in docs.chats
        ]
    return list(load_prompts(str(path)))


def _corpus_files(pair, cfg: AnalyzeConfig) -> list:
    """``--data`` files, else the pair's bundled corpus."""
    return list(cfg.data) or bundled(pair, cfg)["corpus"]


def corpus(pair, cfg: AnalyzeConfig) -> tuple[list[str], list[list[dict]]]:
    """``(texts, chats)`` for the statistics: ``--data`` files, else the pair's bundled corpus."""
    from diffing.stats.inputs import read_documents

    files = _corpus_files(pair, cfg)
    if not files:
        raise SkipSection(
            "no data: pass --data FILE (plain text .txt or .jsonl with text or chat records)"
        )
    docs = read_documents(files)
    return docs.texts, docs.chats


# ---- the method steps ----


def stats(pair, cfg: AnalyzeConfig, out: Path, progress: Progress) -> dict:
    """Weights (with effective rank), activations, KL and ADL via ``diffing.stats``."""
    from diffing.stats.run import StatsConfig, compute_stats

    texts, chats = corpus(pair, cfg)
    progress(f"stats: {len(texts)} texts, {len(chats)} chats, budget {cfg.tokens} tokens")
    res = compute_stats(
        pair,
        config=StatsConfig(weights=not pair.remote),  # remote: the weights step sketched them
        texts=texts,
        chats=chats,
        tokens=cfg.tokens,
        layers=cfg.layers,
        adl_layer=cfg.adl_layer,
        out_dir=out,
    )
    keep = {k: res[k] for k in ("activations", "kl", "adl") if res.get(k) is not None}
    keep["inputs"] = {
        "corpus": [str(f) for f in _corpus_files(pair, cfg)],
        "stats_tokens": res.get("tokens"),
    }
    if res.get("weights"):
        keep["weights"] = res["weights"]
    if "tokens" in res:
        keep.setdefault("activations", {})["tokens"] = res["tokens"]
    return keep


def _split(prompts: list[str], n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded shuffle into (train, val, test) with at most ``n`` prompts per held-out split."""
    import random

    order = list(prompts)
    random.Random(seed).shuffle(order)
    k = max(1, min(n, len(order) // 4))
    return order[2 * k :], order[k : 2 * k], order[:k]


def prompt_splits(pair, cfg: AnalyzeConfig) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """``{"harmful": (train, val, test), "harmless": (...)}`` from the flags or the pair's bundled sets."""
    n = cfg.refusal_prompts
    if cfg.harmful or cfg.harmless:
        if not (cfg.harmful and cfg.harmless):
            raise SkipSection("refusal needs both --harmful FILE and --harmless FILE")
        return {
            k: _split(read_prompts(f), n, cfg.seed)
            for k, f in (("harmful", cfg.harmful), ("harmless", cfg.harmless))
        }
    files = bundled(pair, cfg)["prompts"]
    stems = [f"{k}_{sp}" for k in ("harmful", "harmless") for sp in ("train", "val", "test")]
    if not all(stem in files for stem in stems):
        raise SkipSection(
            "no prompt sets: pass --harmful FILE --harmless FILE (one prompt per line or jsonl)"
        )
    return {
        kind: tuple(
            read_prompts(files[f"{kind}_{split}"])[: (2 * n if split == "train" else n)]
            for split in ("train", "val", "test")
        )
        for kind in ("harmful", "harmless")
    }


def refusal(pair, cfg: AnalyzeConfig, out: Path, progress: Progress) -> dict:
    """Refusal directions of the fine-tuned model vs the base (``compare_pair``) and ablation/addition (``evaluate``)."""
    splits = prompt_splits(pair, cfg)
    from diffing.refusal import RefusalConfig, compare_pair, evaluate
    from diffing.refusal.io import write_json

    (h_tr, h_va, h_te), (n_tr, n_va, n_te) = splits["harmful"], splits["harmless"]
    rcfg = RefusalConfig(
        n_train=len(h_tr),
        n_val=min(len(h_va), len(n_va)),
        seed=cfg.seed,
        min_train=min(4, len(h_tr), len(n_tr)),
    )
    progress(
        f"refusal: {len(h_tr)}/{len(h_va)}/{len(h_te)} harmful and {len(n_tr)}/{len(n_va)}/{len(n_te)} harmless prompts (train/val/test)"
    )
    cmp = compare_pair(pair, h_tr, n_tr, h_va, n_va, h_te, n_te, config=rcfg)
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
    sizes = {k: [len(x) for x in v] for k, v in splits.items()}
    source = (
        [cfg.harmful, cfg.harmless]
        if cfg.harmful
        else [str(p) for p in bundled(pair, cfg)["prompts"].values()]
    )
    return {"refusal": result, "inputs": {"refusal_prompts": source, "refusal_split_sizes": sizes}}


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


def crosscoder(pair, cfg: AnalyzeConfig, out: Path, progress: Progress) -> dict:
    """Analyse a given crosscoder, or train a quick one, via ``diffing.store`` and ``diffing.crosscoder``."""
    if not cfg.crosscoder and not cfg.train_crosscoder:
        raise SkipSection(
            "no crosscoder: pass --crosscoder DIR (a trained one) or --train-crosscoder"
        )
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
    files = list(cfg.data) or [str(f) for f in bundled(pair, cfg)["corpus"]]
    if not files:
        raise SkipSection("no data to harvest: pass --data FILE (text and/or chat records)")
    progress(f"crosscoder: harvesting {cfg.tokens} tokens at layer {layer}")
    store = harvest(
        pair,
        out / "store",
        layers=[layer],
        data=files,
        tokens=cfg.tokens,
        seq_len=128,
        progress=_bars(progress),
    )
    if not cfg.crosscoder:
        batch = max(32, min(512, store.n_tokens // 4))  # a small store still gives several batches
        cc_cfg = CrossCoderConfig(
            dict_size=cfg.crosscoder_latents,
            steps=cfg.crosscoder_steps,
            batch_size=batch,
            seed=cfg.seed,
            lr_warmup_steps=min(100, cfg.crosscoder_steps // 10),
            threshold_start_step=min(100, cfg.crosscoder_steps // 4),
        )
        progress(
            f"crosscoder: training {cfg.crosscoder_latents} latents for {cfg.crosscoder_steps} steps"
        )
        trained = train_crosscoder(
            store, cc_cfg, out / "model", progress=_bars(progress), force=True
        )  # a rerun retrains
        cc, metrics = trained.crosscoder, trained.metrics
    else:
        given = Path(cfg.crosscoder) / "metrics.json"
        metrics = json.loads(given.read_text()) if given.is_file() else {}
    chats = []
    if cfg.causal_transcripts > 0:
        from diffing.stats import read_documents

        try:
            chats = read_documents(files).chats[: cfg.causal_transcripts]
        except DiffingError as err:  # e.g. an hf: dataset spec, which only harvest reads
            progress(f"crosscoder: causal check skipped: {err}")
        if chats:
            progress(f"crosscoder: causal check on {len(chats)} chat transcripts")
    res = analyze_crosscoder(
        cc, store, out / "analysis", pair=pair, top=10, layer=layer, causal_texts=chats or None
    )
    summary = dict(res.summary)
    summary["training"] = {
        k: metrics[k] for k in ("fvu", "l0", "dead_frac", "steps", "tokens") if k in metrics
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
