"""Diff-SAE: a BatchTopK sparse autoencoder on the activation differences ``x_ft - x_base``.

The SAE is a :class:`~diffing.crosscoder.CrossCoder` with one "model" trained by
:func:`~diffing.crosscoder.train_crosscoder`, so checkpointing, resume, data-parallel
training and the saved layout are the crosscoder's. Its data is :class:`DiffStore`,
a thin view of a paired activation store that yields ``s * (x_ft - x_base)``:

* the difference is taken in **raw** units (both models' activations as harvested), so
  a direction both models carry equally cancels exactly; subtracting the two
  separately-normalised activations would not (the store's per-model scales differ);
* one scalar ``s`` then scales it (``DiffSAEConfig.scale``): by default the one that
  makes the mean squared norm of the difference ``d_model``, the same convention as the
  store's per-model normalisation, so the crosscoder's learning rate and initialisation
  fit; it is estimated on a seeded sample of the store and saved in the SAE's
  ``config.json`` (``extra.diff_scale``; also ``store_manifest.norm_scales``), so a
  decoder vector in raw units is ``d_j / s``.

Analysis (contexts, logit lens, comparison with a crosscoder): :mod:`.diff_sae_analysis`.
Docs: docs/diff-sae.md.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import torch

from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.extra_config import DiffSAEConfig
from diffing.errors import DiffingError

METHOD = "diff_sae"
"""``config.json`` ``extra.method`` of a diff-SAE (tells it apart from a one-model crosscoder)."""


class DiffStore:
    """A paired :class:`~diffing.store.ActivationStore` seen as one model: ``s * (x_ft - x_base)`` at one layer.

    Duck-types the store for the crosscoder trainer and the analysis: ``iter_batches``,
    ``iter_sequential``, ``read_tokens`` yield ``[B, 1, d]`` (storage order and token
    indices are the store's, so ``context`` is the store's own), ``norm_scales`` is ``[s]``.
    """

    def __init__(self, store, layer: int, scale: float):
        if store.n_models != 2:
            raise DiffingError(
                f"a diff-SAE needs a store of two models (base, fine-tuned); {store.path} holds {store.n_models}"
            )
        self.store = store
        self.layer = store.layer_of(layer)
        self.scale = float(scale)
        self.path = store.path
        self.d_model = store.d_model
        self.n_tokens = store.n_tokens
        self.layers = [self.layer]
        self.n_models = 1
        self.model_names = ["finetuned-base"]
        man = copy.deepcopy(store.manifest)
        man["norm_scales"] = {str(self.layer): [self.scale]}
        man["layers"] = [self.layer]
        man["model_names"] = self.model_names
        man["diff_of"] = {"model_names": list(store.model_names),
                          "norm_scales": store.manifest.get("norm_scales", {}).get(str(self.layer))}  # fmt: skip
        self.manifest = man

    def __len__(self) -> int:
        return self.n_tokens

    def __getattr__(self, name: str):
        # Anything else the trainer asks of a store (e.g. its identity for checkpoints) is the
        # underlying store's: the difference view is that store, read differently.
        if name.startswith("_") or name == "store":
            raise AttributeError(name)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"DiffStore({str(self.path)!r}, layer={self.layer}, scale={self.scale:.4g})"

    def _check(self, layer) -> None:
        if layer is not None and int(layer) != self.layer:
            raise DiffingError(
                f"this difference view reads layer {self.layer}, not {layer}; open another view for it"
            )

    def _diff(self, acts: torch.Tensor, normalize: bool) -> torch.Tensor:
        d = acts[:, 1:2] - acts[:, 0:1]  # [B, 1, d] raw fine-tuned minus raw base
        return d * self.scale if normalize else d

    def norm_scales(self, layer: int | None = None) -> torch.Tensor:
        """``[1]``: the factor ``s`` (raw difference x s = what the SAE reads)."""
        self._check(layer)
        return torch.tensor([self.scale], dtype=torch.float32)

    def iter_batches(self, batch_size: int, *, layer=None, normalize: bool = True,
                     with_meta: bool = False, **kw) -> Iterator:  # fmt: skip
        """The store's :meth:`iter_batches` (same order, ranks, resume), differences ``[B, 1, d]``."""
        self._check(layer)
        for b in self.store.iter_batches(batch_size, layer=self.layer, normalize=False,
                                         with_meta=with_meta, **kw):  # fmt: skip
            yield (
                b._replace(acts=self._diff(b.acts, normalize))
                if with_meta
                else self._diff(b, normalize)
            )

    def iter_sequential(self, batch_size: int, *, layer=None, normalize: bool = True, **kw):
        """Every token once in storage order: :class:`StoreBatch` with ``acts [B, 1, d]``."""
        self._check(layer)
        for b in self.store.iter_sequential(batch_size, layer=self.layer, normalize=False, **kw):
            yield b._replace(acts=self._diff(b.acts, normalize))

    def read_tokens(self, start: int, stop: int, *, layer=None, normalize: bool = True, **kw):
        """Tokens ``[start, stop)`` in storage order, differences ``[n, 1, d]``."""
        self._check(layer)
        b = self.store.read_tokens(start, stop, layer=self.layer, normalize=False, **kw)
        return b._replace(acts=self._diff(b.acts, normalize))

    def context(self, token_index: int, window: int = 16, *, after: int | None = None):
        """The tokens around a stored token (the store's own)."""
        return self.store.context(token_index, window, after=after)


@torch.no_grad()
def difference_scale(store, layer: int, kind: str = "difference", *, tokens: int = 16384, seed: int = 0) -> float:  # fmt: skip
    """The scalar ``s`` of ``kind`` (see :class:`DiffSAEConfig.scale`) for ``store`` at ``layer``.

    ``difference``: ``sqrt(d_model / E||x_ft - x_base||^2)`` over a seeded shuffled sample of
    ``tokens`` tokens (the same sample every call, so a resumed run gets the same ``s``).
    """
    if kind == "none":
        return 1.0
    if kind == "finetuned":
        return float(store.norm_scales(layer)[1])
    if kind != "difference":
        raise DiffingError(f"unknown diff-SAE scale {kind!r}; use difference, finetuned or none")
    n = min(int(tokens), store.n_tokens)
    batch = next(
        iter(store.iter_batches(n, layer=layer, normalize=False, seed=seed, drop_last=False))
    )
    diff = (batch[:, 1] - batch[:, 0]).double()  # [n, d]
    ms = float(diff.pow(2).sum(-1).mean())
    if not math.isfinite(ms) or ms <= 0:
        raise DiffingError(
            f"the two models' activations at layer {layer} of {store.path} are identical (or not finite): "
            "there is no difference to train on; check the store holds the base and the fine-tuned model"
        )
    return math.sqrt(store.d_model / ms)


def crosscoder_config(cfg: DiffSAEConfig, store) -> CrossCoderConfig:
    """The one-model :class:`CrossCoderConfig` that trains the diff-SAE ``cfg`` on ``store`` (a :class:`DiffStore`)."""
    steps = cfg.steps
    if steps is None:
        steps = max(1, (cfg.tokens or store.n_tokens) // cfg.batch_size)
    return CrossCoderConfig(
        n_models=1, dict_size=cfg.dict_size, expansion=cfg.expansion, kind="batchtopk", k=cfg.k,
        lr=cfg.lr, batch_size=cfg.batch_size, steps=steps, auxk_alpha=cfg.auxk_alpha,
        dead_tokens=cfg.dead_tokens, seed=cfg.seed, layer=store.layer, checkpoint_every=cfg.checkpoint_every,
        lr_warmup_steps=min(100, max(1, steps // 10)), threshold_start_step=min(100, steps // 4),
        extra={"method": METHOD, "diff_scale": store.scale, "scale": cfg.scale},
    )  # fmt: skip


def open_difference(store, cfg: DiffSAEConfig) -> DiffStore:
    """The :class:`DiffStore` of ``store`` (a store or its folder) at ``cfg.layer`` with ``cfg.scale``."""
    if isinstance(store, (str, Path)):
        from diffing.store import ActivationStore

        store = ActivationStore.open(store)
    layer = store.layer_of(cfg.layer)
    s = difference_scale(store, layer, cfg.scale, tokens=cfg.scale_tokens)
    return DiffStore(store, layer, s)


def train_diff_sae(
    store,
    cfg: DiffSAEConfig | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = False,
    max_steps: int | None = None,
):
    """Train a diff-SAE on ``store`` (an activation store or its folder); returns the crosscoder's ``TrainResult``.

    ``out`` receives ``crosscoder.safetensors`` + ``config.json`` + ``metrics.json`` (a one-model
    crosscoder whose ``extra`` says it is a diff-SAE and holds ``diff_scale``); ``resume`` continues
    from its checkpoint; ``max_steps`` stops early (checkpointing), as in ``train_crosscoder``.
    """
    from diffing.crosscoder.train import train_crosscoder

    cfg = cfg or DiffSAEConfig()
    diff = open_difference(store, cfg)
    return train_crosscoder(diff, crosscoder_config(cfg, diff), out, resume=resume, device=device,
                            progress=progress, max_steps=max_steps)  # fmt: skip


def load_diff_sae(ref):
    """A trained diff-SAE (a ``CrossCoder`` or its folder); DiffingError when it is not one."""
    from diffing.crosscoder.model import CrossCoder

    sae = CrossCoder.load(ref) if isinstance(ref, (str, Path)) else ref
    if sae.cfg.n_models != 1 or (sae.cfg.extra or {}).get("method") != METHOD:
        raise DiffingError(
            f"{ref if isinstance(ref, (str, Path)) else 'the given model'} is not a diff-SAE "
            "(a one-model crosscoder written by `diffing crosscoder diff-sae`); train one first"
        )
    return sae


def sae_scale(sae) -> float:
    """The scalar ``s`` the diff-SAE was trained with (its decoder vectors in raw units are ``d_j / s``)."""
    return float((sae.cfg.extra or {}).get("diff_scale", 1.0))


__all__ = [
    "DiffStore",
    "difference_scale",
    "crosscoder_config",
    "open_difference",
    "train_diff_sae",
    "load_diff_sae",
    "sae_scale",
    "METHOD",
]
