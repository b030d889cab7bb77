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

from diffing.stats.activations import ActivationAccumulator
from diffing.stats.adl import (
    ADLAccumulator,
    ADLResult,
    logit_lens,
    logit_lens_tokens,
    patchscope,
    steer,
)
from diffing.stats.outputs import KLAccumulator, token_kl
from diffing.stats.run import StatsConfig, compute_stats, encode_documents, save_stats
from diffing.stats.weight_sketch import sketched_weight_stats
from diffing.stats.weights import (
    WeightStat,
    WeightStatsConfig,
    effective_rank,
    per_layer_change,
    weight_stats,
    weight_stats_from_files,
)

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
