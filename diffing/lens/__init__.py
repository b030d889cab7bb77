"""Diffing methods that read the two models' outputs and activations side by side over a corpus.

- :mod:`~diffing.lens.pca`: activation-difference PCA (principal directions of ``x_ft - x_base``,
  uncentred and centred, read through the logit lens, top contexts and token roles);
- :mod:`~diffing.lens.mining`: diff mining (the tokens whose log-probability the fine-tune raises
  most, aggregated over a corpus and clustered with NMF, :mod:`~diffing.lens.nmf`);
- :mod:`~diffing.lens.output`: ``pca.json`` / ``mining.json``, report sections, files;
- ``diffing.lens.amplify`` (where present): logit-difference amplification, documented on its own.

Settings live in :mod:`~diffing.lens.config`, which imports no torch (the CLI reads it for
``--help``); the rest is imported on first use.
"""

from __future__ import annotations

from diffing.lazy import lazy_exports
from diffing.lens.config import LensDataConfig, MiningConfig, PCAConfig

_LAZY = {
    "diff_pca": "diffing.lens.pca",
    "PCAResult": "diffing.lens.pca",
    "LayerPCA": "diffing.lens.pca",
    "Direction": "diffing.lens.pca",
    "diff_mining": "diffing.lens.mining",
    "MiningResult": "diffing.lens.mining",
    "NMFResult": "diffing.lens.nmf",
    "SecondMoments": "diffing.lens.covariance",
    "Decomposition": "diffing.lens.covariance",
    "pca_json": "diffing.lens.output",
    "mining_json": "diffing.lens.output",
    "pca_section": "diffing.lens.output",
    "mining_section": "diffing.lens.output",
    "save_pca": "diffing.lens.output",
    "save_mining": "diffing.lens.output",
    "read_specs": "diffing.lens.data",
    "explained_variance_figure": "diffing.lens.figures",
    "role_projection_figure": "diffing.lens.figures",
    "mining_figure": "diffing.lens.figures",
}
"""Public name -> the module defining it (imported when the name is first read)."""

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["LensDataConfig", "MiningConfig", "PCAConfig", *sorted(_LAZY)]
