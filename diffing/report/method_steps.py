"""The steps of the newer methods: logit-difference amplification, the diff-SAE, and crosscoder latents vs refusal.

Each step is an adapter from a method's Python API (its ``section()`` function) to one
report key, like the steps of :mod:`diffing.report.steps`, but it also reads what the
earlier steps left in the report and in the output folder: the diff-SAE trains on the
crosscoder step's store, and the refusal link needs both the crosscoder and the refusal
step. :data:`METHOD_STEPS` is what ``analyze`` runs, in order; a new method adds one
function here and one entry there (and its renderer in :mod:`diffing.report.lens_sections`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from diffing.errors import DiffingError
from diffing.report import lens_steps
from diffing.report.budget import fit_to_harvest
from diffing.report.config import AnalyzeConfig
from diffing.report.inputs import RunData, corpus_specs, prompt_splits, read_specs
from diffing.report.util import SkipSection

Progress = Callable[[str], None]

AMPLIFY_EXAMPLES = 3
"""Prompts shown per α (base, fine-tuned and amplified completions side by side)."""
CHAT_PROMPT_TOKENS = 2_000
"""Token budget read from the corpus when looking for the pair's own chat prompts (only their user turns are kept)."""
WORD_TEMPERATURE = 1.0
"""Sampling temperature of amplification without a target (the emerging words compare sampled answers)."""
CHAT_TOKENS_PER_PROMPT = 100
"""More of the corpus read per prompt asked for, so that many prompts still come from distinct chats."""


def _bars(progress: Progress) -> bool:
    return bool(getattr(progress, "bars", False))


def _ran(report: dict, name: str) -> bool:
    return (report.get("sections") or {}).get(name, {}).get("status") == "ok"


# ---- logit-difference amplification ----


def chat_prompts(pair, cfg: AnalyzeConfig, n: int) -> tuple[list, str]:
    """``(prompts, source)``: ``n`` conversation openings from the corpus's chats (flags > organism), else built-in.

    A prompt is a chat transcript cut after its first user turn (a system turn before it is
    kept), so the models answer the pair's own kind of request. Seeded sample, no generation.
    """
    from diffing.data import builtin

    source, specs = corpus_specs(pair, cfg)
    prompts: list = []
    if source != "built-in":
        _, chats = read_specs(specs, max(CHAT_PROMPT_TOKENS, CHAT_TOKENS_PER_PROMPT * n))
        seen = set()
        for chat in chats:
            users = [i for i, m in enumerate(chat) if m.get("role") == "user"]
            if not users:
                continue
            opening = [dict(m) for m in chat[: users[0] + 1]]
            key = json.dumps(opening, sort_keys=True)
            if key not in seen:
                seen.add(key)
                prompts.append(opening)
    if not prompts:
        source, prompts = f"built-in {builtin.CHAT_PROMPTS}", list(builtin.chat_prompts())
    if len(prompts) > n:
        prompts = random.Random(cfg.seed).sample(prompts, n)
    return prompts, source


def _by_alpha(data: dict, examples: int) -> list[dict]:
    """Per α, the first ``examples`` prompts with the base, fine-tuned (α = 0) and amplified completions."""
    base = (data.get("base_model") or {}).get("samples") or []
    ft = next((r for r in data["alphas"] if r["model"] == "finetuned"), None)
    ft_samples = ft["samples"] if ft else []
    out = []
    for run in data["alphas"]:
        if run["model"] != "amplified":
            continue
        rows = []
        for i, s in enumerate(run["samples"][:examples]):
            rows.append(
                {
                    "prompt": s["prompt"],
                    "base": base[i]["completion"] if i < len(base) else None,
                    "finetuned": ft_samples[i]["completion"] if i < len(ft_samples) else None,
                    "amplified": s["completion"],
                    "hit": s["hit"],
                }
            )
        out.append({"alpha": run["alpha"], "rate": run["rate"], "n": run["n"], "examples": rows})
    return out


def amplify(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
) -> dict:
    """``amplify``: the default α sweep on the pair's chat prompts (``diffing.lens.amplify``).

    With ``amplify_target`` it counts that string per α; without one the section ranks the
    words the fine-tuned and amplified answers use more than the base's (``emerging_words``).
    """
    if pair.remote:
        raise SkipSection("amplification decodes with both models' weights; the pair is remote")
    from diffing.lens.amplify import AmplifyConfig, amplify_json, save_amplify, section
    from diffing.lens.amplify import amplify as generate

    prompts, source = chat_prompts(pair, cfg, data.budget.amplify_prompts)
    acfg = AmplifyConfig(
        max_new_tokens=data.budget.amplify_tokens,
        target=cfg.amplify_target,
        # without a target, sampled answers: greedy decoding turns a small logit change into a
        # different answer altogether, which moves every word's share at once
        temperature=0.0 if cfg.amplify_target is not None else WORD_TEMPERATURE,
        seed=cfg.seed,
        batch_size=max(1, min(len(prompts), data.budget.transcript_batch)),  # the generation batch
    )
    progress(
        f"amplify: {len(prompts)} prompts x α {', '.join(f'{a:g}' for a in acfg.alphas)}, "
        f"{acfg.max_new_tokens} tokens"
    )
    res = generate(pair, prompts, acfg, progress=_bars(progress))
    save_amplify(res, out)
    sec = section(res, examples=AMPLIFY_EXAMPLES)
    sec["alphas"] = list(acfg.alphas)
    sec["n_prompts"] = res.n_prompts
    sec["max_new_tokens"] = acfg.max_new_tokens
    sec["by_alpha"] = _by_alpha(amplify_json(res), AMPLIFY_EXAMPLES)
    sec["figure"] = None  # the rate figure is drawn from ``rates`` by the page itself
    return {"amplify": sec, "inputs": {"amplify_prompts": source}}


# ---- diff-SAE ----


def _crosscoder_layer(pair, cfg: AnalyzeConfig, report: dict) -> int:
    size = ((report.get("crosscoder") or {}).get("summary") or {}).get("size") or {}
    if _ran(report, "crosscoder") and size.get("layer") is not None:
        return int(size["layer"])
    layer = pair.n_layers // 2 if cfg.crosscoder_layer is None else cfg.crosscoder_layer
    return pair.check_layers([layer])[0]


def paired_store(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
):
    """The crosscoder step's store when that step ran, else a harvest of the same size into ``out/store``."""
    from diffing.store import ActivationStore, harvest

    layer = _crosscoder_layer(pair, cfg, report)
    own = out.parent / "crosscoder" / "store"
    if _ran(report, "crosscoder") and own.is_dir():
        return ActivationStore.open(own), layer
    progress(f"diff_sae: harvesting {data.budget.tokens} tokens at layer {layer}")
    store = harvest(
        pair,
        out / "store",
        layers=[layer],
        data=data.corpus().specs,
        tokens=data.budget.tokens,
        seq_len=128,
        progress=_bars(progress),
    )
    return store, layer


def _crosscoder_dir(cfg: AnalyzeConfig, out: Path, report: dict) -> Path | None:
    """The crosscoder the crosscoder step analysed (None when it did not run)."""
    if not _ran(report, "crosscoder"):
        return None
    path = Path(cfg.crosscoder) if cfg.crosscoder else out.parent / "crosscoder" / "model"
    return path if path.is_dir() else None


def diff_sae(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
) -> dict:
    """``diff_sae``: a BatchTopK SAE on ``x_ft - x_base`` of the crosscoder's store, sized like the crosscoder."""
    from diffing.crosscoder.diff_sae import crosscoder_config, open_difference
    from diffing.crosscoder.diff_sae_analysis import analyze_diff_sae, section
    from diffing.crosscoder.extra_config import DiffSAEConfig
    from diffing.crosscoder.train import train_crosscoder

    store, layer = paired_store(pair, cfg, out, progress, data, report)
    latents, steps = fit_to_harvest(data.budget, store.n_tokens, pair.d_model)
    dcfg = DiffSAEConfig(
        layer=layer,
        dict_size=latents,
        k=min(32, max(1, latents // 8)),  # the SAE default, kept sparse in a small dictionary
        steps=steps,
        batch_size=max(32, min(512, store.n_tokens // 4)),  # the crosscoder step's batch
        seed=cfg.seed,
        scale_tokens=min(16_384, store.n_tokens),
        context_latents=max(8, cfg.top_latents),
    )
    progress(f"diff_sae: training {latents} latents for {steps} steps at layer {layer}")
    diff = open_difference(store, dcfg)
    trained = train_crosscoder(
        diff, crosscoder_config(dcfg, diff), out / "model", progress=_bars(progress), force=True
    )  # a rerun into the same report folder retrains
    cc = _crosscoder_dir(cfg, out, report)
    res = analyze_diff_sae(
        trained.crosscoder, store, out / "analysis", pair=pair, crosscoder=cc, config=dcfg
    )
    sec = section(res)
    sec["steps"] = steps
    sec["compared_with_crosscoder"] = cc is not None
    return {"diff_sae": sec}


# ---- crosscoder latents vs the refusal direction ----


def refusal_direction_at(pair, cfg: AnalyzeConfig, report: dict, layer: int):
    """``(unit direction [d], info, held-out harmful prompts, refusal tokens)`` at store ``layer``: the fine-tuned
    model's difference in means there (``info``: block, position, norm, source).

    Store layer ``L`` (the residual stream leaving block ``L``) is the input of block
    ``L + 1``, the refusal package's layer. The candidate is taken at the position the
    refusal step selected, on the train prompts it used, with the refusal tokens it found.
    """
    from diffing.refusal import extract_candidates
    from diffing.report.steps import refusal_config

    ref = report.get("refusal") or {}
    position = (ref.get("selected") or {}).get("position")
    tokens = [int(t) for t in ref.get("refusal_tokens") or []]
    block = layer + 1
    if block >= pair.n_layers:
        raise DiffingError(
            f"the crosscoder reads the last layer ({layer}), past every block input a refusal direction "
            "lives at; pass --crosscoder-layer below the last layer"
        )
    splits = prompt_splits(pair, cfg)
    rcfg = refusal_config(cfg, splits, refusal_tokens=tokens or None)
    (h_tr, _, h_te), (n_tr, _, _) = splits["harmful"], splits["harmless"]
    cands = extract_candidates(
        pair.finetuned,
        pair.tokenizer,
        pair.arch,
        h_tr,
        n_tr,
        config=rcfg,
        model_ref=pair.finetuned_ref,
    )
    if position not in cands.positions:
        raise DiffingError(
            f"the refusal step selected position {position}, which the prompts here do not have"
        )
    p = cands.positions.index(position)
    if bool(cands.zero[block, p]):
        raise DiffingError(
            f"the harmful and harmless means are equal at layer {layer}, position {position}: no direction"
        )
    vec = cands.vectors[block, p]  # [d_model]
    info = {
        "block": block,
        "position": position,
        "norm": float(vec.norm()),
        "source": "difference in means of the fine-tuned model (refusal step's train prompts and position)",
    }
    return vec / vec.norm(), info, h_te, cands.refusal_tokens


def refusal_link(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
) -> dict:
    """``refusal_link``: which crosscoder latents carry the refusal direction, and does removing them stop refusal?"""
    missing = [s for s in ("crosscoder", "refusal") if not _ran(report, s)]
    if missing:
        why = ", ".join(
            f"{s} {(report.get('sections') or {}).get(s, {}).get('status', 'did not run')}"
            for s in missing
        )
        raise SkipSection(f"needs the crosscoder and refusal sections ({why})")
    if (report.get("refusal") or {}).get("selected") is None:
        raise SkipSection("the refusal section found no refusal direction to link latents to")
    from diffing.crosscoder.extra_config import RefusalLinkConfig
    from diffing.crosscoder.refusal_link import refusal_link as link
    from diffing.crosscoder.refusal_link import section
    from diffing.store import ActivationStore

    layer = _crosscoder_layer(pair, cfg, report)
    cc = _crosscoder_dir(cfg, out, report)
    store_dir = out.parent / "crosscoder" / "store"
    if cc is None or not store_dir.is_dir():
        raise DiffingError(
            "the crosscoder step left no model or store in the output folder; rerun with the crosscoder section"
        )
    direction, info, harmful, tokens = refusal_direction_at(pair, cfg, report, layer)
    progress(
        f"refusal_link: direction at block {info['block']} input (crosscoder layer {layer}); "
        f"ablation on {len(harmful)} harmful prompts"
    )
    latents_json = out.parent / "crosscoder" / "analysis" / "latents.json"
    res = link(
        cc,
        direction,
        layer,
        store=ActivationStore.open(store_dir),
        pair=pair,
        harmful=harmful,
        refusal_tokens=tokens,
        analysis_latents=latents_json if latents_json.is_file() else None,
        config=RefusalLinkConfig(max_prompts=max(1, len(harmful)), seed=cfg.seed),
        out_dir=out,
    )
    sec = section(res)
    sec["direction"] = info
    sec["refusal_tokens"] = [pair.tokenizer.decode([t]) for t in tokens]
    return {"refusal_link": sec}


METHOD_STEPS: dict[str, Callable[..., dict]] = {
    "amplify": amplify,
    "diff_sae": diff_sae,
    "refusal_link": refusal_link,
    "pca": lens_steps.pca,
    "mining": lens_steps.mining,
}
"""The method steps ``analyze`` runs after stats, refusal and crosscoder, in order (keys: ``config.METHOD_KEYS``)."""

__all__ = ["METHOD_STEPS", "amplify", "diff_sae", "refusal_link", "chat_prompts", "paired_store"]
