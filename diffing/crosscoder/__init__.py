"""Crosscoders: a shared sparse dictionary over a base and a fine-tuned model's activations.

``CrossCoder`` (model), ``CrossCoderConfig`` (shape + training recipe),
``train_crosscoder`` (training loop: resumable, data-parallel under torchrun),
``spliced_loss`` (fine-tuned loss with the layer replaced by its reconstruction),
``load_dictionary_learning`` (import science-of-finetuning checkpoints),
``analyze_crosscoder`` (per-latent statistics, Latent Scaling, contexts, causal check, and the
decoder-bias shift no latent carries).
"""

from diffing.crosscoder.analyze import AnalysisConfig, AnalysisResult, analyze_crosscoder
from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.model import CrossCoder, TrainOutput
from diffing.crosscoder.train import TrainResult, evaluate_crosscoder, train_crosscoder

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
]
