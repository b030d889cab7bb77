"""The whole extraction in one call: candidates, refusal phrases, scores, selection, files on disk.

Used by ``diffing refusal extract`` and by notebooks; each step is also public on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from diffing.arch import ArchSpec
from diffing.refusal.candidates import Candidates, extract_candidates
from diffing.refusal.conditions import PLAIN, completions_by_run
from diffing.refusal.config import RefusalConfig
from diffing.refusal.evaluation import EvalResult, eval_markdown, evaluate
from diffing.refusal.io import Direction, check_sets, write_json
from diffing.refusal.scores import infer_refusal_phrases
from diffing.refusal.select import (
    CandidateScores,
    candidates_table,
    score_candidates,
    select_direction,
)


class Extraction(NamedTuple):
    """Result of :func:`extract_direction`."""

    candidates: Candidates
    """Every layer x position difference in means."""
    scores: CandidateScores
    """Bypass / induce / KL of every candidate."""
    direction: Direction
    """The selected direction (with refusal tokens and phrases)."""
    evaluation: EvalResult | None = None
    """Baseline / ablation / addition on the held-out test prompts; None when none were given."""


def extract_direction(
    lm,
    tokenizer,
    arch: ArchSpec,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    config: RefusalConfig | None = None,
    model_ref: str = "",
    out: str | Path | None = None,
    harmful_test: Sequence[str] = (),
    harmless_test: Sequence[str] = (),
) -> Extraction:
    """Candidates, selection and refusal phrases; with ``out``, also write
    ``direction.safetensors``, ``candidates.json`` and ``scores.png`` there.

    With test prompts, the selected direction is also evaluated on them (refusal rates
    under baseline, ablation and addition, and KL: :func:`evaluate`), since the selection
    scores are first-token log-odds on the validation prompts, not what a user reads;
    with ``out`` that goes to ``test_eval.json`` and ``test_eval.md``.
    """
    cfg = config or RefusalConfig()
    check_sets(list(harmful_train), list(harmless_train))
    cands = extract_candidates(
        lm, tokenizer, arch, harmful_train, harmless_train, config=cfg, model_ref=model_ref
    )
    phrases = list(cfg.refusal_phrases or [])
    if not phrases:  # greedy answers to the train prompts say how this model words a refusal
        sets = {"harmful": harmful_train[: cfg.n_val], "harmless": harmless_train[: cfg.n_val]}
        said = completions_by_run(
            lm, tokenizer, arch, sets, PLAIN, cfg, max_new_tokens=cfg.phrase_tokens
        )
        gen = {name: texts["plain"] for name, texts in said.items()}
        phrases = infer_refusal_phrases(
            gen["harmful"],
            gen["harmless"],
            min_share=cfg.phrase_min_share,
            max_share=cfg.phrase_max_share,
        )
    scores = score_candidates(lm, tokenizer, arch, cands, harmful_val, harmless_val, config=cfg)
    if out is not None:  # candidates.json first: it explains a failed selection
        write_json(
            Path(out) / "candidates.json",
            {
                "model": model_ref,
                "positions": cands.positions,
                "refusal_tokens": cands.refusal_tokens,
                "refusal_tokens_text": [tokenizer.decode([t]) for t in cands.refusal_tokens],
                "refusal_phrases": phrases,
                "n_train": {"harmful": cands.n_harmful, "harmless": cands.n_harmless},
                "n_val": {"harmful": len(harmful_val), "harmless": len(harmless_val)},
                "baseline_score": {
                    "harmful": scores.baseline_harmful,
                    "harmless": scores.baseline_harmless,
                },
                "config": cfg.to_dict(),
                "candidates": candidates_table(cands, scores),
            },
        )
    direction = select_direction(
        lm,
        tokenizer,
        arch,
        cands,
        harmful_val,
        harmless_val,
        config=cfg,
        scores=scores,
        refusal_phrases=phrases,
    )
    if out is not None:
        from diffing.refusal.figures import plot_scores, selected_index

        direction.save(out)
        plot_scores(
            scores,
            cands.positions,
            Path(out) / "scores.png",
            selected=selected_index(direction, cands.positions),
            title=f"refusal candidates: {model_ref}",
        )
        write_json(
            Path(out) / "selected.json",
            {
                "selected": {"layer": direction.layer, "position": direction.position},
                "norm": direction.norm,
                "scores": direction.scores,
                "refusal_phrases": phrases,
                "refusal_tokens": direction.refusal_tokens,
            },
        )
    evaluation = None
    if harmful_test and harmless_test:
        evaluation = evaluate(
            lm,
            tokenizer,
            arch,
            direction,
            harmful_test,
            harmless_test,
            config=cfg,
            model_ref=model_ref,
        )
        if out is not None:
            write_json(Path(out) / "test_eval.json", evaluation.report)
            (Path(out) / "test_eval.md").write_text(eval_markdown(evaluation.report))
    return Extraction(cands, scores, direction, evaluation)
