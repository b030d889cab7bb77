"""Crosscoders: a shared sparse dictionary over a base and a fine-tuned model's activations.

``CrossCoder`` (model), ``CrossCoderConfig`` (shape + training recipe),
``train_crosscoder`` (training loop: resumable, data-parallel under torchrun),
``spliced_loss`` (fine-tuned loss with the layer replaced by its reconstruction),
``load_dictionary_learning`` (import science-of-finetuning checkpoints),
``analyze_crosscoder`` (per-latent statistics, Latent Scaling, contexts, causal check, and the
decoder-bias shift no latent carries),
``train_diff_sae`` / ``analyze_diff_sae`` (a BatchTopK SAE on ``x_ft - x_base``),
``refusal_link`` (which latents carry a refusal direction, and ablating them).
"""

from diffing.lazy import lazy_exports

# Public names and the module each lives in. They load on first use, so that the
# command line can read the light config modules without importing torch.
_EXPORTS = {
    "AnalysisConfig": "diffing.crosscoder.analysis_config",
    "AnalysisResult": "diffing.crosscoder.analyze",
    "analyze_crosscoder": "diffing.crosscoder.analyze",
    "CrossCoderConfig": "diffing.crosscoder.config",
    "CrossCoder": "diffing.crosscoder.model",
    "TrainOutput": "diffing.crosscoder.model",
    "TrainResult": "diffing.crosscoder.train",
    "evaluate_crosscoder": "diffing.crosscoder.train",
    "train_crosscoder": "diffing.crosscoder.train",
    "DiffSAEConfig": "diffing.crosscoder.extra_config",
    "RefusalLinkConfig": "diffing.crosscoder.extra_config",
    "train_diff_sae": "diffing.crosscoder.diff_sae",
    "analyze_diff_sae": "diffing.crosscoder.diff_sae_analysis",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
    "analyze_crosscoder",
    "CrossCoder",
    "CrossCoderConfig",
    "TrainOutput",
    "TrainResult",
    "evaluate_crosscoder",
    "train_crosscoder",
    "DiffSAEConfig",
    "RefusalLinkConfig",
    "train_diff_sae",
    "analyze_diff_sae",
]
