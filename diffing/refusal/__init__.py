"""Refusal directions: extract, select, intervene, orthogonalise, evaluate, compare (Arditi et al. 2024).

Pipeline on one chat model (see docs/refusal.md)::

    lm, tok, arch = diffing.models.load_model("org/chat-model")
    cands = extract_candidates(lm, tok, arch, harmful_train, harmless_train)
    direction = select_direction(lm, tok, arch, cands, harmful_val, harmless_val)
    result = evaluate(lm, tok, arch, direction, harmful_test, harmless_test)
    measured = evaluate_model(exported_lm, tok, arch, harmful_test, harmless_test,
                              reference=behaviour(lm, tok, arch, harmful_test, harmless_test))
    orthogonalize_model(lm._module, direction.direction, arch)   # or export_orthogonalized(...)

Layer ``L`` means the residual stream at the input of block ``L`` throughout.
"""

from __future__ import annotations

from diffing.lazy import lazy_exports

# Public names and their modules, loaded on first use so that the command line reads
# the light config module without importing torch.
_EXPORTS = {
    "Candidates": "diffing.refusal.candidates",
    "extract_candidates": "diffing.refusal.candidates",
    "post_instruction_count": "diffing.refusal.candidates",
    "CompareResult": "diffing.refusal.compare",
    "compare_pair": "diffing.refusal.compare",
    "RefusalConfig": "diffing.refusal.config",
    "EvalResult": "diffing.refusal.evaluation",
    "evaluate": "diffing.refusal.evaluation",
    "text_loss": "diffing.refusal.evaluation",
    "ExportResult": "diffing.refusal.export_check",
    "export_checked": "diffing.refusal.export_check",
    "Intervention": "diffing.refusal.interventions",
    "ablate": "diffing.refusal.interventions",
    "add": "diffing.refusal.interventions",
    "apply_interventions": "diffing.refusal.interventions",
    "complete": "diffing.refusal.interventions",
    "forward_last": "diffing.refusal.interventions",
    "Direction": "diffing.refusal.io",
    "Split": "diffing.refusal.io",
    "read_prompts": "diffing.refusal.io",
    "split_prompts": "diffing.refusal.io",
    "Behaviour": "diffing.refusal.measure",
    "behaviour": "diffing.refusal.measure",
    "compare_behaviour": "diffing.refusal.measure",
    "evaluate_model": "diffing.refusal.measure",
    "export_orthogonalized": "diffing.refusal.orthogonalize",
    "orthogonalize_model": "diffing.refusal.orthogonalize",
    "infer_refusal_phrases": "diffing.refusal.scores",
    "infer_refusal_tokens": "diffing.refusal.scores",
    "refusal_rate": "diffing.refusal.scores",
    "refusal_scores": "diffing.refusal.scores",
    "CandidateScores": "diffing.refusal.select",
    "score_candidates": "diffing.refusal.select",
    "select_direction": "diffing.refusal.select",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Behaviour",
    "ExportResult",
    "Split",
    "behaviour",
    "compare_behaviour",
    "evaluate_model",
    "export_checked",
    "CandidateScores",
    "Candidates",
    "CompareResult",
    "Direction",
    "EvalResult",
    "Intervention",
    "RefusalConfig",
    "ablate",
    "add",
    "apply_interventions",
    "compare_pair",
    "complete",
    "evaluate",
    "export_orthogonalized",
    "extract_candidates",
    "forward_last",
    "infer_refusal_phrases",
    "infer_refusal_tokens",
    "orthogonalize_model",
    "post_instruction_count",
    "read_prompts",
    "refusal_rate",
    "refusal_scores",
    "score_candidates",
    "select_direction",
    "split_prompts",
    "text_loss",
]
