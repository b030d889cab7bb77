"""Lenses on what a fine-tune changed, read over a corpus.

- :mod:`~diffing.lens.pca`: activation-difference PCA (principal directions of ``x_ft - x_base``);
- :mod:`~diffing.lens.mining`: diff mining (the tokens whose log-probability the fine-tune raises
  most, aggregated and clustered with NMF).

Settings live in :mod:`~diffing.lens.config` (no torch import, for the CLI).
"""

from diffing.lens.config import LensDataConfig, MiningConfig, PCAConfig

__all__ = ["LensDataConfig", "MiningConfig", "PCAConfig"]
