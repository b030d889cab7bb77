"""Configuration of a crosscoder: its shape, its sparsity, and how it is trained.

One dataclass holds both the architecture and the training recipe, so that a
saved ``config.json`` says everything needed to rebuild, resume or reproduce a
run. Defaults follow Minder et al. 2025 (arXiv 2504.02922) for BatchTopK and
Anthropic's crosscoder note (Lindsey et al. 2024) for L1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from diffing.configs import limits, validate
from diffing.errors import DiffingError
from diffing.io import write_json

Kind = Literal["batchtopk", "l1"]
"""An activation function / sparsity scheme."""
KINDS: tuple[str, ...] = get_args(Kind)
"""Supported activation functions / sparsity schemes."""

Dtype = Literal["float32", "bfloat16", "float16"]
"""A parameter / compute dtype name."""
DTYPES: tuple[str, ...] = get_args(Dtype)
"""Accepted ``dtype`` values (float16 only for imported checkpoints; training uses float32 or bfloat16)."""

Decode = Literal["auto", "sparse", "dense"]
"""A BatchTopK decode path."""
DECODES: tuple[str, ...] = get_args(Decode)
"""Accepted ``decode`` values (see :func:`diffing.crosscoder.model.resolve_decode`)."""

DEAD_WINDOW_FRACTION = 10
"""With ``dead_tokens=None``, the dead-latent window is the run's tokens divided by this."""

# Fields that define the parameter shapes and forward pass: a checkpoint is only
# compatible with a config that agrees on all of them.
ARCH_FIELDS = ("n_models", "d_model", "dict_size", "kind", "k")


@dataclass
class CrossCoderConfig:
    """Shape, sparsity and training recipe of one crosscoder."""

    n_models: int = field(default=2, metadata=limits(gt=0))
    """Number of models read side by side (model order: base = 0, fine-tuned = 1)."""
    d_model: int = field(default=0, metadata=limits(ge=0))
    """Residual-stream width of each model; 0 = take it from the activation store."""
    dict_size: int | None = field(default=None, metadata=limits(gt=0))
    """Number of latents; None = ``expansion * d_model``."""
    expansion: int = field(default=8, metadata=limits(gt=0))
    """Latents per residual dimension, used when ``dict_size`` is 0."""
    kind: Kind = "batchtopk"
    """Activation: ``"batchtopk"`` (Bussmann et al. 2024) or ``"l1"`` (ReLU + decoder-norm-weighted L1)."""
    k: int = field(default=32, metadata=limits(gt=0))
    """BatchTopK: mean number of active latents per token (k * batch values kept per batch)."""
    l1_coeff: float = field(default=2.0, metadata=limits(ge=0))
    """L1: final sparsity coefficient lambda on ``sum_j f_j sum_m ||d_j^m||``."""
    l1_warmup_frac: float = field(default=0.05, metadata=limits(ge=0, le=1))
    """L1: fraction of the steps over which lambda ramps linearly from 0 to ``l1_coeff``."""
    lr: float | None = field(default=None, metadata=limits(gt=0))
    """Adam learning rate; None = ``2e-4 / sqrt(dict_size / 16384)`` (the dictionary_learning heuristic)."""
    lr_warmup_steps: int = field(default=100, metadata=limits(ge=0))
    """Steps of linear learning-rate warm-up from 0."""
    lr_decay_frac: float = field(default=0.2, metadata=limits(ge=0, le=1))
    """Fraction of the steps at the end over which the learning rate decays linearly to 0."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""
    grad_clip: float = field(default=1.0, metadata=limits(ge=0))
    """Gradient-norm clip (0 = off)."""
    batch_size: int = field(default=4096, metadata=limits(gt=0))
    """Tokens per optimisation step (summed over ranks when distributed)."""
    steps: int | None = field(default=None, metadata=limits(gt=0))
    """Optimisation steps; None = derived from ``tokens`` or one pass over the store."""
    tokens: int | None = field(default=None, metadata=limits(gt=0))
    """Training tokens; used when ``steps`` is None (steps = tokens // batch_size)."""
    auxk_alpha: float = field(default=1.0, metadata=limits(ge=0))
    """BatchTopK: weight of the auxiliary top-k loss on dead latents (Gao et al. 2024); 1.0 left 1.2-4.7%
    dead on the organisms' quick crosscoder where 1/32 left 35-43% (docs/benchmarks.md, dead latents)."""
    k_aux: int | None = field(default=None, metadata=limits(gt=0))
    """BatchTopK: latents the auxiliary loss uses per token; None = ``d_model // 2``."""
    dead_tokens: int | None = field(default=None, metadata=limits(gt=0))
    """A latent is dead when it was not active on any of the last this-many training tokens; None = a
    tenth of the run's tokens (at least one batch), so short runs count dead latents too."""
    threshold_beta: float = field(default=0.999, metadata=limits(ge=0, le=1))
    """BatchTopK: EMA factor of the inference threshold (running mean of the smallest kept value)."""
    threshold_start_step: int = field(default=100, metadata=limits(ge=0))
    """BatchTopK: step from which the inference threshold is estimated."""
    dec_init_norm: float = field(default=0.1, metadata=limits(ge=0))
    """Initial norm of each latent's decoder vector in each model (encoder = decoder transpose)."""
    bias_init_batches: int = field(default=4, metadata=limits(gt=0))
    """Batches averaged to initialise the decoder bias to the data mean."""
    seed: int = 0
    """Seed of initialisation and data order."""
    dtype: Dtype = "float32"
    """Training compute dtype: float32, or bfloat16 (bf16 matmuls, float32 master weights, Adam state and loss)."""
    decode: Decode = "auto"
    """BatchTopK decode/encoder-gradient path: sparse (embedding_bag), dense (dense codes matmul) or auto (sparse on CPU, dense on GPUs)."""
    layer: int | None = None
    """The model layer the crosscoder reads (a layer of its store; None: the store's only layer)."""
    store_manifest: dict[str, Any] | None = None
    """Provenance: model refs, d_model, layers, normalisation of the store it was trained on."""
    log_every: int = field(default=50, metadata=limits(gt=0))
    """Steps between metric logs."""
    checkpoint_every: int = field(default=1000, metadata=limits(ge=0))
    """Steps between resumable checkpoints (0 = only at the end)."""
    spliced_every: int = field(default=0, metadata=limits(ge=0))
    """Steps between spliced-loss evaluations when a model pair is given (0 = only at the end)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes (e.g. where the checkpoint was imported from)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DiffingError(
                f"crosscoder kind {self.kind!r} is unknown; use one of {', '.join(KINDS)}"
            )
        self.adam_betas = tuple(self.adam_betas)  # JSON gives a list
        self.validate()

    def validate(self) -> None:
        """Reject values that cannot train (zero or negative sizes, non-finite rates) with a one-line DiffingError."""
        validate(self)
        if len(self.adam_betas) != 2 or not all(
            math.isfinite(b) and 0 <= b < 1 for b in self.adam_betas
        ):
            raise DiffingError(f"adam_betas={self.adam_betas} must be two numbers in [0, 1)")
        for name, allowed in (("dtype", DTYPES), ("decode", DECODES)):
            if getattr(self, name) not in allowed:
                raise DiffingError(
                    f"{name} {getattr(self, name)!r} is unknown; use one of {', '.join(allowed)}"
                )

    def resolved(
        self, *, d_model: int | None = None, n_models: int | None = None
    ) -> CrossCoderConfig:
        """A copy with ``d_model``, ``n_models`` (from a store if given), ``dict_size`` and ``lr`` filled in."""
        cfg = dataclasses.replace(self)
        if d_model is not None:
            if cfg.d_model and cfg.d_model != d_model:
                raise DiffingError(
                    f"crosscoder config has d_model={cfg.d_model} but the activations have d_model={d_model}; "
                    "set d_model to 0 (take it from the store) or use a matching store"
                )
            cfg.d_model = d_model
        if n_models is not None and n_models != cfg.n_models:
            raise DiffingError(
                f"crosscoder config expects {cfg.n_models} models but the activations hold {n_models}; "
                "harvest both models of the pair or set n_models to match"
            )
        if cfg.d_model <= 0:
            raise DiffingError(
                "crosscoder d_model is unknown; give d_model or train from an activation store"
            )
        if not cfg.dict_size:
            cfg.dict_size = cfg.expansion * cfg.d_model
        if cfg.lr is None:
            cfg.lr = 2e-4 / math.sqrt(cfg.dict_size / 16384)
        if cfg.kind == "batchtopk" and not 0 < cfg.k <= cfg.dict_size:
            raise DiffingError(f"k={cfg.k} must be between 1 and dict_size={cfg.dict_size}")
        if cfg.k_aux is None:
            cfg.k_aux = max(1, cfg.d_model // 2)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossCoderConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are kept in ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        cfg = cls(**known)
        if unknown:
            cfg.extra = {**cfg.extra, "unknown_fields": unknown}
        return cfg

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CrossCoderConfig:
        """Read a ``config.json`` written by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise DiffingError(
                f"cannot read crosscoder config {path}: {err}; is this a crosscoder folder?"
            ) from err

    def dead_window(self, total_steps: int) -> int:
        """Tokens without activity after which a latent counts as dead, for a run of ``total_steps``."""
        return self.dead_tokens or max(
            self.batch_size, total_steps * self.batch_size // DEAD_WINDOW_FRACTION
        )

    def arch_mismatch(self, other: CrossCoderConfig) -> list[str]:
        """Names of the shape-defining fields on which two configs differ."""
        return [f for f in ARCH_FIELDS if getattr(self, f) != getattr(other, f)]
