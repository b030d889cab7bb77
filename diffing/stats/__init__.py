"""Feature-change statistics: what fine-tuning changed, in weights, activations and outputs.

- :mod:`~diffing.stats.weights`: per-module relative change and effective rank of the delta
  (in memory, or streamed from safetensors by :mod:`~diffing.stats.checkpoint`; for weights that
  stay on NDIF, estimated from random sketches by :mod:`~diffing.stats.weight_sketch`);
- :mod:`~diffing.stats.activations`: per-layer mean-difference norm, cosine, relative change, by role;
- :mod:`~diffing.stats.outputs`: per-token KL(fine-tuned || base), by role, top contexts;
- :mod:`~diffing.stats.adl`: Activation Difference Lens (Minder et al. 2025), Patchscope, steering;
- :mod:`~diffing.stats.run`: :func:`compute_stats`, one shared forward pass per batch for all of them.

Every field of the resulting ``stats.json`` is documented in docs/stats.md.
"""

from __future__ import annotations

from diffing.lazy import lazy_exports

# Public names and their modules, loaded on first use (the CLI reads the config alone).
_EXPORTS = {
    "ActivationAccumulator": "diffing.stats.activations",
    "ADLAccumulator": "diffing.stats.adl",
    "ADLResult": "diffing.stats.adl",
    "logit_lens": "diffing.stats.adl",
    "logit_lens_tokens": "diffing.stats.adl",
    "patchscope": "diffing.stats.adl",
    "steer": "diffing.stats.adl",
    "KLAccumulator": "diffing.stats.outputs",
    "token_kl": "diffing.stats.outputs",
    "StatsConfig": "diffing.stats.config",
    "compute_stats": "diffing.stats.run",
    "encode_documents": "diffing.stats.run",
    "save_stats": "diffing.stats.run",
    "sketched_weight_stats": "diffing.stats.weight_sketch",
    "WeightStat": "diffing.stats.weights",
    "WeightStatsConfig": "diffing.stats.weights",
    "effective_rank": "diffing.stats.weights",
    "per_layer_change": "diffing.stats.weights",
    "weight_stats": "diffing.stats.weights",
    "weight_stats_from_files": "diffing.stats.weights",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ADLAccumulator",
    "ADLResult",
    "ActivationAccumulator",
    "KLAccumulator",
    "StatsConfig",
    "WeightStat",
    "WeightStatsConfig",
    "compute_stats",
    "effective_rank",
    "encode_documents",
    "logit_lens",
    "logit_lens_tokens",
    "patchscope",
    "per_layer_change",
    "save_stats",
    "sketched_weight_stats",
    "steer",
    "token_kl",
    "weight_stats",
    "weight_stats_from_files",
]
