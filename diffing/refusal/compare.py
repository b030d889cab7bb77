"""Refusal directions across a base / fine-tuned pair: did fine-tuning create the direction or reuse one?

Both models read the same token ids (the fine-tuned model's chat template). The
fine-tuned model's direction is extracted and selected as usual (Arditi et al. 2024);
the base model's difference in means is taken on the same train prompts (no
refusal filtering: a base model usually refuses nothing). Reported:

- ``cosine_by_layer``: cosine between the base and fine-tuned difference in means at
  the selected position, per layer;
- ``base_direction_ablates_finetuned``: the fine-tuned model's refusal when the base
  direction (selected layer and position) is ablated, next to its own direction's;
- ``probe_accuracy_base``: how well the fine-tuned direction separates harmful from
  harmless in the *base* model: base activations projected on it, the best threshold
  fitted on train prompts, accuracy on held-out prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from diffing.refusal.candidates import (
    encode_prompts,
    extract_candidates,
    mean_difference,
    run_prompts,
)
from diffing.refusal.conditions import completions_by_run, logprobs_by_run
from diffing.refusal.config import RefusalConfig
from diffing.refusal.interventions import ablate
from diffing.refusal.io import Direction
from diffing.refusal.scores import (
    infer_refusal_phrases,
    kl_divergence,
    refusal_rate,
    refusal_scores,
)
from diffing.refusal.select import candidates_table, score_candidates, select_direction


class CompareResult(NamedTuple):
    """What ``compare.json`` holds plus the two directions."""

    report: dict
    """JSON-ready results (keys documented in docs/refusal.md)."""
    finetuned_direction: Direction
    """The selected direction of the fine-tuned model."""
    base_direction: Direction
    """The base model's difference in means at the same layer and position."""


def fit_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float, float]:
    """Best 1-D threshold separating ``pos`` from ``neg`` scores: ``(threshold, sign, train accuracy)``.

    Predicts positive when ``sign * (x - threshold) > 0``; candidates are midpoints between sorted scores.
    """
    x = torch.cat([pos, neg]).float()
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
    xs = torch.sort(x).values
    cuts = torch.cat([xs[:1] - 1, (xs[1:] + xs[:-1]) / 2, xs[-1:] + 1])  # [n + 1]
    pred = (x[None, :] > cuts[:, None]).float()  # [n + 1, n]
    acc_up = (pred == y).float().mean(1)
    acc_down = (pred != y).float().mean(1)
    best_up, best_down = int(acc_up.argmax()), int(acc_down.argmax())
    if acc_up[best_up] >= acc_down[best_down]:
        return float(cuts[best_up]), 1.0, float(acc_up[best_up])
    return float(cuts[best_down]), -1.0, float(acc_down[best_down])


def probe_accuracy(threshold: float, sign: float, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Accuracy of the fitted threshold on held-out scores."""
    correct = ((sign * (pos - threshold)) > 0).sum() + ((sign * (neg - threshold)) <= 0).sum()
    return float(correct) / max(len(pos) + len(neg), 1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.norm() == 0 or b.norm() == 0:
        return None
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


def _probe(lm, arch, tokenizer, cfg, n_post, p_index, layer, unit, train, test) -> dict:
    """Fit a threshold on ``train`` projections and test it on ``test`` (``{set: prompts}`` dicts)."""
    proj = {}
    for split, sets in (("train", train), ("test", test)):
        for name, prompts in sets.items():
            enc = encode_prompts(tokenizer, prompts, template=cfg.template)
            acts = run_prompts(lm, arch, tokenizer, enc, n_post=n_post, batch_size=cfg.batch_size)[
                1
            ]
            proj[split, name] = acts[layer, :, p_index] @ unit  # [n]
    t, sign, train_acc = fit_threshold(proj["train", "harmful"], proj["train", "harmless"])
    return {
        "threshold": t,
        "sign": sign,
        "train": train_acc,
        "test": probe_accuracy(t, sign, proj["test", "harmful"], proj["test", "harmless"]),
    }


def compare_pair(
    pair,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    harmful_test: Sequence[str],
    harmless_test: Sequence[str],
    *,
    config: RefusalConfig | None = None,
) -> CompareResult:
    """Extract both models' candidates on the same prompts and compare (see the module docstring)."""
    cfg = config or RefusalConfig()
    tok, arch = pair.tokenizer, pair.arch
    ft, base = pair.finetuned, pair.base
    cands_f = extract_candidates(
        ft, tok, arch, harmful_train, harmless_train, config=cfg, model_ref=pair.finetuned_ref
    )
    scores_f = score_candidates(ft, tok, arch, cands_f, harmful_val, harmless_val, config=cfg)
    dir_f = select_direction(
        ft, tok, arch, cands_f, harmful_val, harmless_val, config=cfg, scores=scores_f
    )
    n_post = len(cands_f.positions)
    acts = {
        name: run_prompts(
            base,
            arch,
            tok,
            encode_prompts(tok, prompts, template=cfg.template),
            n_post=n_post,
            batch_size=cfg.batch_size,
        )[1]
        for name, prompts in (("harmful", harmful_train), ("harmless", harmless_train))
    }
    vec_b, _, _, zero_b = mean_difference(
        acts["harmful"], acts["harmless"]
    )  # [n_layers, P, d_model]
    p_index = cands_f.positions.index(dir_f.position)
    layer = dir_f.layer
    r_b = vec_b[layer, p_index]
    dir_b = Direction(
        direction=r_b / r_b.norm().clamp_min(1e-30),
        layer=layer,
        position=dir_f.position,
        norm=float(r_b.norm()),
        family=dir_f.family,
        d_model=dir_f.d_model,
        n_layers=dir_f.n_layers,
        model_ref=pair.base_ref,
        refusal_tokens=dir_f.refusal_tokens,
    )
    tokens = dir_f.refusal_tokens
    runs = {"baseline": [], "finetuned_direction": [ablate(dir_f.direction)]}
    if not bool(zero_b[layer, p_index]):
        runs["base_direction"] = [ablate(dir_b.direction)]
    sets = {"harmful": list(harmful_test), "harmless": list(harmless_test)}
    gens = completions_by_run(ft, tok, arch, sets, runs, cfg)
    lps = logprobs_by_run(ft, tok, arch, sets, runs, cfg)
    phrases = list(cfg.refusal_phrases or []) or infer_refusal_phrases(
        gens["harmful"]["baseline"],
        gens["harmless"]["baseline"],
        min_share=cfg.phrase_min_share,
        max_share=cfg.phrase_max_share,
    )
    dir_f.refusal_phrases = dir_b.refusal_phrases = phrases
    rates = {n: {c: refusal_rate(gens[n][c], phrases) for c in runs} for n in sets}
    base_rate, own = rates["harmful"]["baseline"], rates["harmful"]["finetuned_direction"]
    other = rates["harmful"].get("base_direction")
    unit_f = dir_f.direction
    train_sets = {"harmful": list(harmful_train), "harmless": list(harmless_train)}
    report = {
        "base": pair.base_ref,
        "finetuned": pair.finetuned_ref,
        "selected": {"layer": layer, "position": dir_f.position},
        "finetuned_direction": {"norm": dir_f.norm, "scores": dir_f.scores},
        "base_direction": {"norm": dir_b.norm, "zero": bool(zero_b[layer, p_index])},
        "cosine_by_layer": [
            _cos(vec_b[k, p_index], cands_f.vectors[k, p_index]) for k in range(vec_b.shape[0])
        ],
        "cosine_selected": _cos(r_b, cands_f.vectors[layer, p_index]),
        "refusal_phrases": phrases,
        "refusal_tokens": tokens,
        "n_prompts": {
            "train": {k: len(v) for k, v in train_sets.items()},
            "test": {k: len(v) for k, v in sets.items()},
        },
        "base_direction_ablates_finetuned": {
            "refusal_rate": rates,
            "refusal_score": {
                n: {c: float(refusal_scores(lps[n][c], tokens).mean()) for c in runs} for n in sets
            },
            "kl_harmless": {
                c: float(kl_divergence(lps["harmless"]["baseline"], lps["harmless"][c]).mean())
                for c in runs
                if c != "baseline"
            },
            "fraction_of_own_effect": None
            if other is None or base_rate == own
            else (base_rate - other) / (base_rate - own),
        },
        "probe_accuracy_base": None,
        "probe": {},
        "finetuned_candidates": candidates_table(cands_f, scores_f),
    }
    for name, lm in (("base", base), ("finetuned", ft)):
        report["probe"][name] = _probe(
            lm, arch, tok, cfg, n_post, p_index, layer, unit_f, train_sets, sets
        )
    report["probe_accuracy_base"] = report["probe"]["base"]["test"]
    return CompareResult(report, dir_f, dir_b)
