"""Per-latent statistics of a crosscoder: relative decoder norm, decoder cosine, classes, frequencies.

The static numbers come from the decoder weights alone (Minder et al. 2025,
arXiv 2504.02922, docs/methods.md section 3): the relative decoder norm
``Δ_j = ½((||d_j^f|| − ||d_j^b||) / max(||d_j^f||, ||d_j^b||) + 1)`` sorts latents
into base-only (Δ near 0), chat-only (Δ near 1) and shared (Δ near ½), and the
cosine between the two decoder vectors says whether a shared concept's direction
moved. The streaming numbers (how often a latent fires, on which token roles, how
strongly) are accumulated batch by batch by :class:`ActivationStats`, so any number
of tokens can be read without holding them.

Model order everywhere: index 0 is the base model, index 1 the fine-tuned model
(the order of ``ModelPair.models`` and of the activation store).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from diffing.crosscoder.analysis_config import ClassThresholds  # noqa: F401 - re-exported
from diffing.errors import DiffingError
from diffing.tokens import ROLES

CLASSES: tuple[str, ...] = ("base_only", "chat_only", "shared", "other")
"""Latent classes by relative decoder norm; a latent's class id is its index here."""
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}


def _two_model_decoder(W_dec: torch.Tensor) -> torch.Tensor:
    if W_dec.ndim != 3 or W_dec.shape[0] != 2:
        raise DiffingError(
            f"expected a two-model crosscoder decoder [2, n_latents, d_model], got shape {tuple(W_dec.shape)}; "
            "model diffing reads a crosscoder trained on (base, fine-tuned) activations"
        )
    return W_dec


@torch.no_grad()
def relative_norm_diff(W_dec: torch.Tensor) -> torch.Tensor:
    """Δ per latent ``[n]`` from decoders ``[2, n, d]`` (0 base-only, ½ shared, 1 chat-only; Minder et al.)."""
    norms = _two_model_decoder(W_dec).float().norm(dim=-1)  # [2, n]
    nb, nf = norms[0], norms[1]
    denom = torch.maximum(nb, nf).clamp_min(1e-12)
    return 0.5 * ((nf - nb) / denom + 1.0)  # [n]


@torch.no_grad()
def decoder_cosine(W_dec: torch.Tensor) -> torch.Tensor:
    """Cosine between each latent's base and fine-tuned decoder vectors ``[n]`` (0 where one is zero)."""
    W = _two_model_decoder(W_dec).float()
    return torch.nn.functional.cosine_similarity(W[0], W[1], dim=-1, eps=1e-12)  # [n]


def classify(delta: torch.Tensor, thresholds: ClassThresholds | None = None) -> torch.Tensor:
    """Class id per latent ``[n]`` (indices into :data:`CLASSES`) from Δ ``[n]``."""
    t = thresholds or ClassThresholds()
    t.validate()
    out = torch.full(delta.shape, CLASS_IDS["other"], dtype=torch.long)
    out[delta < t.base_only_below] = CLASS_IDS["base_only"]
    out[delta > t.chat_only_above] = CLASS_IDS["chat_only"]
    out[(delta >= t.shared_low) & (delta <= t.shared_high)] = CLASS_IDS["shared"]
    return out


class FrequencyStats(NamedTuple):
    """How often and how strongly each latent fired over the tokens read."""

    n_tokens: int
    """Tokens read."""
    role_tokens: torch.Tensor
    """``[n_roles]`` tokens read per role (roles as in ``diffing.tokens.ROLES``)."""
    active: torch.Tensor
    """``[n]`` tokens on which the latent was active (f > 0)."""
    active_by_role: torch.Tensor
    """``[n_roles, n]`` active tokens per role."""
    frequency: torch.Tensor
    """``[n]`` fraction of all tokens on which the latent fired."""
    frequency_by_role: torch.Tensor
    """``[n_roles, n]`` fraction of the tokens of each role on which it fired (0 for roles never seen)."""
    mean_active: torch.Tensor
    """``[n]`` mean activation over the tokens where it fired (0 if it never fired)."""
    max_active: torch.Tensor
    """``[n]`` largest activation seen."""


class SparseCodes(NamedTuple):
    """The active entries of a batch of latent activations ``f [B, n]`` (read once, shared by all accumulators)."""

    rows: torch.Tensor
    """``[nnz]`` token (row) of each active entry, sorted."""
    cols: torch.Tensor
    """``[nnz]`` latent of each active entry."""
    vals: torch.Tensor
    """``[nnz]`` its activation (> 0)."""
    n_rows: int
    """Tokens in the batch (B)."""


def sparse_codes(f: torch.Tensor) -> SparseCodes:
    """The active entries of ``f [B, n]`` (f > 0), row-sorted. One scan of the dense tensor."""
    rows, cols = (f > 0).nonzero(as_tuple=True)
    return SparseCodes(rows, cols, f[rows, cols].float(), f.shape[0])


class ActivationStats:
    """Streaming per-latent counts: call :meth:`update` per batch of latent activations, then :meth:`result`.

    Work per batch is proportional to the number of active entries, not to ``B * n``.
    """

    def __init__(self, n_latents: int, n_roles: int = len(ROLES)):
        self.n = n_latents
        self.n_roles = n_roles
        self.n_tokens = 0
        self.role_tokens = torch.zeros(n_roles, dtype=torch.long)
        self.active = torch.zeros(n_latents, dtype=torch.long)
        self.active_by_role = torch.zeros(n_roles * n_latents, dtype=torch.long)
        self.total = torch.zeros(n_latents, dtype=torch.float64)
        self.max = torch.zeros(n_latents)

    @torch.no_grad()
    def update(self, f: torch.Tensor | SparseCodes, roles: torch.Tensor | None = None) -> None:
        """Add one batch: latent activations ``f [B, n]`` (or their :class:`SparseCodes`) and roles ``[B]``."""
        codes = f if isinstance(f, SparseCodes) else sparse_codes(f)
        rows, cols, vals = codes.rows.cpu(), codes.cols.cpu(), codes.vals.cpu()
        self.n_tokens += codes.n_rows
        if roles is None:
            roles = torch.zeros(codes.n_rows, dtype=torch.long)
        roles = roles.long().cpu().clamp(0, self.n_roles - 1)  # [B]
        self.role_tokens += torch.bincount(roles, minlength=self.n_roles)
        self.active += torch.bincount(cols, minlength=self.n)
        self.active_by_role += torch.bincount(
            roles[rows] * self.n + cols, minlength=self.n_roles * self.n
        )
        self.total.index_add_(0, cols, vals.double())
        self.max.scatter_reduce_(0, cols, vals, reduce="amax")

    def result(self) -> FrequencyStats:
        """The accumulated statistics."""
        n = max(self.n_tokens, 1)
        active_by_role = self.active_by_role.view(self.n_roles, self.n)  # [n_roles, n]
        by_role = active_by_role.double() / self.role_tokens.clamp_min(1).double()[:, None]
        mean = torch.where(
            self.active > 0, self.total / self.active.clamp_min(1), torch.zeros_like(self.total)
        )
        return FrequencyStats(
            n_tokens=self.n_tokens,
            role_tokens=self.role_tokens.clone(),
            active=self.active.clone(),
            active_by_role=active_by_role.clone(),
            frequency=(self.active.double() / n).float(),
            frequency_by_role=by_role.float(),
            mean_active=mean.float(),
            max_active=self.max.clone(),
        )


def check_latents(indices, n_latents: int) -> list[int]:
    """Validate latent indices (negative counts from the end); a clear error for out-of-range ones."""
    out = []
    for j in indices:
        idx = int(j) + (n_latents if int(j) < 0 else 0)
        if not 0 <= idx < n_latents:
            raise DiffingError(
                f"latent index {j} is out of range: this crosscoder has latents 0..{n_latents - 1}"
            )
        out.append(idx)
    return out


def delta_histogram(delta: torch.Tensor, bins: int = 20) -> dict:
    """Histogram of Δ over [0, 1] as ``{"edges": [...], "counts": [...]}`` (report it, not only counts)."""
    counts = torch.histc(delta.float().clamp(0, 1), bins=bins, min=0.0, max=1.0)
    edges = torch.linspace(0, 1, bins + 1)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def json_number(x: float, nd: int = 5):
    """A float for JSON: rounded to ``nd`` decimals, None for NaN/inf."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


def latent_records(
    W_dec, delta, cosine, classes, freq: FrequencyStats, ls, details: dict
) -> list[dict]:
    """One JSON-ready record per latent: class, Δ, cosine, norms, frequencies, Latent Scaling, ``details``.

    ``ls`` is a ``LatentScaling`` of some of the latents; ``details`` maps a latent to extra fields
    (contexts, logit lens).
    """
    norms = W_dec.norm(dim=-1)  # [2, n]
    pos = {int(j): i for i, j in enumerate(ls.latents)}
    records = []
    for j in range(delta.shape[0]):
        rec = {
            "latent": j,
            "class": CLASSES[int(classes[j])],
            "delta": json_number(delta[j]),
            "cosine": json_number(cosine[j]),
            "norm_base": json_number(norms[0, j]),
            "norm_finetuned": json_number(norms[1, j]),
            "frequency": json_number(freq.frequency[j], 7),
            "frequency_by_role": {
                r: json_number(freq.frequency_by_role[i, j], 7)
                for i, r in enumerate(ROLES)
                if freq.role_tokens[i] > 0
            },
            "active_tokens": int(freq.active[j]),
            "mean_activation": json_number(freq.mean_active[j]),
            "max_activation": json_number(freq.max_active[j]),
        }
        if j in pos:
            i = pos[j]
            rec["latent_scaling"] = {
                "flag": ls.flags[i],
                "beta_reliable": bool(ls.reliable[i]),
                "n_active": int(ls.n_active[i]),
                "nu_error": json_number(ls.nu_error[i]),
                "nu_recon": json_number(ls.nu_recon[i]),
                "beta_error": {
                    "base": json_number(ls.beta_error[0, i]),
                    "finetuned": json_number(ls.beta_error[1, i]),
                },
                "beta_recon": {
                    "base": json_number(ls.beta_recon[0, i]),
                    "finetuned": json_number(ls.beta_recon[1, i]),
                },
            }
        rec.update(details.get(j, {}))
        records.append(rec)
    return records
