"""The crosscoder module: one shared encoder, one decoder (and decoder bias) per model.

``f(x) = sigma(sum_m W_enc^m x^m + b_enc)`` and ``x_hat^m = W_dec^m f + b_dec^m``
(Lindsey et al. 2024; Minder et al. 2025, arXiv 2504.02922). Two activations:

* ``"l1"``: sigma = ReLU, trained with the decoder-norm-weighted L1 penalty.
* ``"batchtopk"`` (Bussmann et al. 2024, arXiv 2412.06410): in training keep the
  ``k*B`` largest ``f_j(x) * sum_m ||d_j^m||`` over the batch of ``B`` tokens; at
  inference keep ``f_j(x)`` where ``f_j(x) * sum_m ||d_j^m|| > threshold`` (a
  single learned scalar), so encoding one token does not depend on the batch.
  This is exactly the rule of science-of-finetuning's ``BatchTopKCrossCoder``
  (their threshold compares the decoder-norm-scaled value; the decoded value is
  the unscaled one), which keeps imported checkpoints bit-compatible.

Training (``forward_train``) selects the kept (token, latent) pairs once, then
decodes them and back-propagates into the encoder along one of two paths
(``cfg.decode``, same math, tested equal): ``"sparse"`` decodes with
``embedding_bag`` and takes the encoder gradient as a sparse-dense product over
the selected pairs (on CPU the only dense ``[B, n]`` tensor is the
pre-activation); ``"dense"`` scatters the selected values into a dense code and
uses plain matmuls, which GPUs run far faster and which work in bfloat16
(``embedding_bag`` has no CUDA bfloat16 backward). ``"auto"`` picks sparse on
CPU and dense on GPUs (:func:`resolve_decode`). With
``cfg.dtype="bfloat16"`` the matmuls run in bfloat16 on bfloat16 copies of the
float32 parameters (master weights), and the loss is computed in float32.

Initialisation: decoder vectors Gaussian, scaled to norm ``dec_init_norm``
(default 0.1, as in the crosscode library and Anthropic's update) in each model;
the encoder is the decoder's transpose; ``b_enc = 0``; ``b_dec`` is set to the
data mean by the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from diffing.crosscoder.config import CrossCoderConfig
from diffing.errors import DiffingError
from diffing.io import atomic_path, write_json

WEIGHTS_NAME = "crosscoder.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"


class TrainOutput(NamedTuple):
    """What one training forward pass returns (losses are scalars, averaged over tokens)."""

    loss: torch.Tensor
    """Total loss to minimise."""
    recon: torch.Tensor
    """Reconstruction loss ``mean_t sum_m ||x^m - x_hat^m||^2``."""
    sparsity: torch.Tensor
    """L1: ``mean_t sum_j f_j sum_m ||d_j^m||`` (unweighted by lambda); BatchTopK: 0."""
    aux: torch.Tensor
    """BatchTopK: auxiliary top-k loss on dead latents (unweighted); L1: 0."""
    x_hat: torch.Tensor
    """``[B, n_models, d_model]`` reconstruction (detached)."""
    active: torch.Tensor
    """``[n]`` bool: latents active on at least one token of the batch."""
    l0: float
    """Mean number of active latents per token."""
    min_kept: float
    """BatchTopK: smallest kept ``f_j * sum_m ||d_j^m||`` (threshold statistic); L1: 0."""


class CrossCoder(nn.Module):
    """A crosscoder over ``n_models`` residual streams of width ``d_model``."""

    def __init__(self, cfg: CrossCoderConfig):
        super().__init__()
        if cfg.d_model <= 0 or not cfg.dict_size:
            cfg = cfg.resolved()
        self.cfg = cfg
        m, d, n = cfg.n_models, cfg.d_model, cfg.dict_size
        # Parameters are float32 whatever cfg.dtype says: bfloat16 training keeps float32 master
        # weights (bfloat16 Adam updates of ~lr * 1e-3 relative size round to nothing).
        dtype = torch.float32
        gen = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(m, n, d, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * cfg.dec_init_norm
        self.W_dec = nn.Parameter(w_dec.to(dtype))  # [n_models, dict_size, d_model]
        self.W_enc = nn.Parameter(
            w_dec.transpose(1, 2).contiguous().to(dtype)
        )  # [n_models, d_model, dict_size]
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=dtype))  # [dict_size]
        self.b_dec = nn.Parameter(torch.zeros(m, d, dtype=dtype))  # [n_models, d_model]
        # BatchTopK inference threshold on f_j * sum_m ||d_j^m||; -1 = not estimated yet
        # (encode then falls back to batch top-k, like dictionary_learning); 0 for L1.
        self.register_buffer("threshold", torch.tensor(-1.0 if cfg.kind == "batchtopk" else 0.0))

    # ---- inference -------------------------------------------------------------------------

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``sum_m W_enc^m x^m + b_enc``: x [B, n_models, d] -> [B, dict_size]."""
        self._check_input(x)
        b = x.shape[0]
        w = self.W_enc.reshape(-1, self.cfg.dict_size)  # [n_models*d, n]
        return torch.addmm(self.b_enc, x.reshape(b, -1).to(w.dtype), w)

    def decoder_norms(self) -> torch.Tensor:
        """``||d_j^m||``: [n_models, dict_size]."""
        return self.W_dec.norm(dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations f [B, dict_size] (ReLU for L1; thresholded ReLU for BatchTopK)."""
        f = F.relu(self.pre_acts(x))  # [B, n]
        if self.cfg.kind == "l1":
            return f
        scores = f * self.decoder_norms().sum(0)  # [B, n]
        if float(self.threshold) >= 0:
            return f * (scores > self.threshold)
        rows, cols, _ = batch_topk(scores, self.cfg.k * x.shape[0])
        out = torch.zeros_like(f)
        out[rows, cols] = f[rows, cols]
        return out

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstructions [B, n_models, d] from latent activations f [B, dict_size]."""
        return torch.einsum("bn,mnd->bmd", f.to(self.W_dec.dtype), self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat [B, n_models, d], f [B, dict_size])`` with the inference encoding."""
        f = self.encode(x)
        return self.decode(f), f

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.cfg.n_models, self.cfg.d_model):
            raise DiffingError(
                f"crosscoder expects activations [batch, {self.cfg.n_models}, {self.cfg.d_model}] "
                f"but got {list(x.shape)}; check the layer and the store it was trained on"
            )

    # ---- training --------------------------------------------------------------------------

    def forward_train(
        self, x: torch.Tensor, *, l1_coeff: float = 0.0, dead: torch.Tensor | None = None
    ) -> TrainOutput:
        """Loss of one batch x [B, n_models, d]: BatchTopK with the auxiliary loss, or L1."""
        if self.cfg.kind == "l1":
            return self._train_l1(x, l1_coeff)
        return self._train_batchtopk(x, dead)

    def _compute(self, x: torch.Tensor) -> tuple[torch.dtype, bool]:
        """(matmul dtype, dense decode?) for a batch on x's device."""
        cdt = compute_dtype(self.cfg.dtype)
        return cdt, resolve_decode(self.cfg.decode, x.device, cdt) == "dense"

    def _train_l1(self, x: torch.Tensor, l1_coeff: float) -> TrainOutput:
        cdt, _ = self._compute(x)
        w = self.W_enc.reshape(-1, self.cfg.dict_size).to(cdt)  # [M*d, n]
        f = F.relu(torch.addmm(self.b_enc.to(cdt), x.reshape(x.shape[0], -1).to(cdt), w))  # [B, n]
        x_hat = torch.einsum("bn,mnd->bmd", f, self.W_dec.to(cdt)).float() + self.b_dec
        recon = (x - x_hat).pow(2).sum((1, 2)).mean()
        sparsity = (f.float() * self.decoder_norms().sum(0)).sum(1).mean()
        active = f > 0
        zero = recon.new_zeros(())
        return TrainOutput(
            recon + l1_coeff * sparsity, recon, sparsity, zero, x_hat.detach(),
            active.any(0), float(active.sum()) / x.shape[0], 0.0,
        )  # fmt: skip

    def _train_batchtopk(self, x: torch.Tensor, dead: torch.Tensor | None) -> TrainOutput:
        cfg, batch = self.cfg, x.shape[0]
        cdt, dense = self._compute(x)
        x_flat = x.reshape(batch, -1).to(cdt)  # [B, M*d]
        w_flat = self.W_enc.reshape(-1, cfg.dict_size).to(cdt)  # [M*d, n]; a bf16 copy in bf16
        b_enc = self.b_enc.to(cdt)
        w_dec = self.W_dec.to(cdt)  # [M, n, d]
        with torch.no_grad():
            norms = self.decoder_norms().sum(0)  # [n] float32
            scores = torch.addmm(b_enc, x_flat, w_flat)  # [B, n], the one dense tensor
            scores.relu_().mul_(norms.to(cdt))  # f_j * sum_m ||d_j^m||, in place
            rows, cols, kept = batch_topk(scores, cfg.k * batch)
            values = kept.float() / norms[cols]  # f_j at the kept pairs
        f_sel = SelectCodes.apply(x_flat, w_flat, b_enc, rows, cols, values.to(cdt), dense)
        x_hat = decode_selected(w_dec, rows, cols, f_sel, batch, dense).float() + self.b_dec
        recon = (x - x_hat).pow(2).sum((1, 2)).mean()  # [B, M, d] -> scalar, float32
        aux = recon.new_zeros(())
        if dead is not None and cfg.auxk_alpha > 0 and bool(dead.any()):
            aux = self._aux_loss(
                x_flat, w_flat, b_enc, w_dec, scores, norms, dead, (x - x_hat).detach(), dense
            )
        active = torch.zeros(cfg.dict_size, dtype=torch.bool, device=x.device)
        live = values > 0
        active[cols[live]] = True
        return TrainOutput(
            recon + cfg.auxk_alpha * aux, recon, recon.new_zeros(()), aux, x_hat.detach(),
            active, float(live.sum()) / batch, float(kept.min()) if kept.numel() else 0.0,
        )  # fmt: skip

    def _aux_loss(
        self, x_flat, w_flat, b_enc, w_dec, scores, norms, dead, residual, dense
    ) -> torch.Tensor:
        """Gao et al. 2024: reconstruct the residual with the top ``k_aux`` dead latents of each token.

        Same units as the reconstruction loss (``mean_t sum_m ||e - e_hat||^2``), weighted by
        ``auxk_alpha``; it gives dead latents a gradient towards what the live ones miss.
        """
        dead_idx = dead.nonzero().squeeze(1)  # [n_dead]
        with torch.no_grad():
            # [B, n_dead] post-ReLU f of dead latents
            dead_f = scores[:, dead_idx].float() / norms[dead_idx]
            rows, local, values = row_topk(dead_f, self.cfg.k_aux or 1)
        values = values.to(x_flat.dtype)
        if dense:  # dense codes over the dead latents only: [B, n_dead] matmuls, not [B, n]
            w_enc, b, w_d, cols = w_flat[:, dead_idx], b_enc[dead_idx], w_dec[:, dead_idx], local
        else:
            w_enc, b, w_d, cols = w_flat, b_enc, w_dec, dead_idx[local]
        f_sel = SelectCodes.apply(x_flat, w_enc, b, rows, cols, values, dense)
        e_hat = decode_selected(w_d, rows, cols, f_sel, x_flat.shape[0], dense)  # [B, M, d]
        return (residual - e_hat.float()).pow(2).sum((1, 2)).mean()

    # ---- persistence -----------------------------------------------------------------------

    def save(self, directory: str | Path, *, metrics: dict | None = None) -> Path:
        """Write ``crosscoder.safetensors`` + ``config.json`` (+ ``metrics.json``) into ``directory``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        self.cfg.save(out / CONFIG_NAME)
        if metrics is not None:
            write_json(out / METRICS_NAME, metrics, non_finite="null")
        return out

    @classmethod
    def load(cls, ref: str | Path, *, device: str | None = None) -> CrossCoder:
        """Load from a folder written by :meth:`save`, or a Hugging Face hub id holding one.

        Folders in science-of-finetuning's dictionary_learning layout are also accepted
        (see :mod:`diffing.crosscoder.interop`).
        """
        from safetensors.torch import load_file

        path = Path(ref)
        if not path.exists():
            from diffing.crosscoder.interop import download

            path = download(str(ref))
        if not (path / WEIGHTS_NAME).is_file() or not (path / CONFIG_NAME).is_file():
            from diffing.crosscoder.interop import load_dictionary_learning

            return load_dictionary_learning(path, device=device)
        cfg = CrossCoderConfig.load(path / CONFIG_NAME)
        cc = cls(cfg)
        state = load_file(str(path / WEIGHTS_NAME))
        try:
            cc.load_state_dict(state)
        except RuntimeError as err:
            raise DiffingError(
                f"{path / WEIGHTS_NAME} does not match its config.json ({err}); re-save it"
            ) from err
        return cc.to(device) if device else cc


# ---- sparse kernels (BatchTopK) --------------------------------------------------------------


def compute_dtype(name: str) -> torch.dtype:
    """The matmul dtype training uses for ``cfg.dtype``: bfloat16 or float32."""
    if name == "bfloat16":
        return torch.bfloat16
    if name == "float32":
        return torch.float32
    raise DiffingError(f"crosscoder training runs in float32 or bfloat16, not {name}; set dtype")


def resolve_decode(decode: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """``"sparse"`` or ``"dense"``: the decode / encoder-gradient path for ``decode`` on ``device`` in ``dtype``.

    Measured rule for ``"auto"`` (docs/benchmarks/gpu_crosscoder.md): sparse on CPU, in
    float32 and bfloat16 alike (2.6x / 1.7x faster than dense at 2x256 -> 16,384 latents);
    dense on CUDA and other accelerators (plain matmuls: the sparse step lost to a dense
    reference with TF32 on an H200, and ``embedding_bag`` has no CUDA bfloat16 backward).
    """
    cuda = torch.device(device).type == "cuda"
    if decode == "auto":
        return "sparse" if torch.device(device).type == "cpu" else "dense"
    if decode == "sparse" and cuda and dtype == torch.bfloat16:
        raise DiffingError(
            "decode='sparse' cannot train in bfloat16 on CUDA (embedding_bag has no bfloat16 "
            "backward there); use decode='dense' or 'auto'"
        )
    return decode


def _dense_codes(rows, cols, values, batch: int, n: int) -> torch.Tensor:
    """The selected values scattered into a dense ``[batch, n]`` code (zeros elsewhere)."""
    return values.new_zeros(batch, n).index_put_((rows, cols), values)


class SelectCodes(torch.autograd.Function):
    """Selected post-ReLU values ``f[rows, cols]`` with a backward into the encoder only through them.

    Forward returns the given values (computed without grad from the dense
    pre-activations). Backward: the gradient ``S`` (``[B, n]``, nonzero at the
    selected pairs) goes into ``W_enc`` as ``x^T S`` and into ``b_enc``; sparse
    (``torch.sparse.mm``, cost ``nnz * M * d`` instead of ``B * n * M * d``) or
    dense (scatter then one matmul: what GPUs and bfloat16 want). Values of 0
    (ReLU off) pass no gradient.
    """

    @staticmethod
    def forward(ctx, x_flat, w_enc_flat, b_enc, rows, cols, values, dense):
        # x_flat [B, M*d]; w_enc_flat [M*d, n]; b_enc [n]; rows, cols, values [nnz]
        ctx.save_for_backward(x_flat, rows, cols, values)
        ctx.n, ctx.dense = w_enc_flat.shape[1], dense
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # grad [nnz]
        x_flat, rows, cols, values = ctx.saved_tensors
        grad = grad * (values > 0).to(grad.dtype)  # ReLU'
        n, batch = ctx.n, x_flat.shape[0]
        grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            if ctx.dense:
                grad_w = x_flat.t() @ _dense_codes(rows, cols, grad.to(x_flat.dtype), batch, n)
            else:
                st = torch.sparse_coo_tensor(
                    torch.stack([cols, rows]), grad, (n, batch), check_invariants=False
                )
                grad_w = torch.sparse.mm(st, x_flat).t()  # [M*d, n]
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        return None, grad_w, grad_b, None, None, None, None


def decode_selected(w_dec, rows, cols, values, batch: int, dense: bool) -> torch.Tensor:
    """``sum_j values * W_dec[m, j]`` per token and model -> [batch, n_models, d] (no bias).

    Dense: the scattered ``[batch, n]`` code times the decoder, one matmul (autograd gives
    ``W_dec``'s and the code's gradients as two more). Sparse: :func:`sparse_decode`.
    """
    if not dense:
        return sparse_decode(w_dec, rows, cols, values, batch)
    codes = _dense_codes(rows, cols, values, batch, w_dec.shape[1])  # [B, n], differentiable
    return torch.einsum("bn,mnd->bmd", codes, w_dec)


def sparse_decode(
    w_dec: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, batch: int
):
    """``sum_j values * W_dec[m, j]`` per token and model -> [batch, n_models, d] (no bias).

    ``rows`` must be sorted: each token is one bag of ``embedding_bag``, whose backward
    is sparse in the bags too. w_dec [n_models, n, d]; rows, cols, values [nnz].
    """
    counts = torch.bincount(rows, minlength=batch)  # [batch]
    offsets = torch.cumsum(counts, 0) - counts  # [batch] start of each token's bag
    outs = [
        F.embedding_bag(
            cols, w_dec[m], offsets, mode="sum", per_sample_weights=values.to(w_dec.dtype)
        )
        for m in range(w_dec.shape[0])
    ]  # each [batch, d]
    return torch.stack(outs, dim=1)


def batch_topk(
    scores: torch.Tensor, k_total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k_total`` largest entries of ``scores`` [B, n] over the batch as (rows, cols, values), row-sorted."""
    flat_scores = scores.flatten()
    k_total = min(k_total, flat_scores.numel())
    # A full top-k over B*n values costs as much as the encoder matmul. Exact shortcut: guess a
    # cut-off from a strided 1/stride sample (its top 2*k_total/stride), keep the entries above
    # it, and run top-k on those; if fewer than k_total survive, fall back to the full top-k.
    stride = 64
    top = None
    if flat_scores.numel() >= 64 * stride and k_total * 4 < flat_scores.numel():
        sample = flat_scores[::stride]
        guess = sample.topk(
            min(sample.numel(), 2 * k_total // stride + 1), sorted=False
        ).values.min()
        cand = (flat_scores > guess).nonzero().squeeze(1)  # [~2 k_total]
        if cand.numel() >= k_total:
            sub = flat_scores[cand].topk(k_total, sorted=False)
            top = (cand[sub.indices], sub.values)
    if top is None:
        full = flat_scores.topk(k_total, sorted=False)
        top = (full.indices, full.values)
    flat, order = top[0].sort()
    n = scores.shape[1]
    return flat // n, flat % n, top[1][order]


def row_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``scores`` [B, n] as (rows, cols, values), row-sorted."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1, sorted=False)
    rows = torch.arange(scores.shape[0], device=scores.device).repeat_interleave(k)
    return rows, top.indices.flatten(), top.values.flatten()
