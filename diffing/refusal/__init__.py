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

from diffing.refusal.candidates import Candidates, extract_candidates, post_instruction_count
from diffing.refusal.compare import CompareResult, compare_pair
from diffing.refusal.config import RefusalConfig
from diffing.refusal.evaluate import EvalResult, evaluate, text_loss
from diffing.refusal.export_check import ExportResult, export_checked
from diffing.refusal.interventions import (
    Intervention,
    ablate,
    add,
    apply_interventions,
    complete,
    forward_last,
)
from diffing.refusal.io import Direction, Split, read_prompts, split_prompts
from diffing.refusal.measure import Behaviour, behaviour, compare_behaviour, evaluate_model
from diffing.refusal.orthogonalize import export_orthogonalized, orthogonalize_model
from diffing.refusal.scores import (
    infer_refusal_phrases,
    infer_refusal_tokens,
    refusal_rate,
    refusal_scores,
)
from diffing.refusal.select import CandidateScores, score_candidates, select_direction

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
