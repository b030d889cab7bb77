"""Activation statistics: how far the fine-tuned residual stream moved from the base one, per layer.

On the same tokens (docs/methods.md sections 1 and 5), for each layer and each token role:

- ``mean_diff_norm``: ``|| mean_t (x^f_t - x^b_t) ||``, the norm of the mean difference,
  i.e. the size of the *consistent* shift fine-tuning added (what ADL reads);
- ``cosine``: ``mean_t cos(x^b_t, x^f_t)``, how much the direction of each token's
  activation survived (1 = unchanged);
- ``relative_norm_change``: ``mean_t ||x^f_t - x^b_t|| / ||x^b_t||``, the size of the
  per-token change relative to the activation (0 = unchanged), which also counts
  changes that average out across tokens.

Statistics accumulate batch by batch in float64 so any number of tokens fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffing.tokens import ROLES


class ActivationAccumulator:
    """Running sums of the per-layer, per-role activation statistics."""

    def __init__(self, layers: Sequence[int], d_model: int):
        self.layers = list(layers)
        n = len(ROLES)
        self.count = torch.zeros(n, dtype=torch.float64)  # [roles] tokens seen
        self.diff_sum = {
            k: torch.zeros(n, d_model, dtype=torch.float64) for k in self.layers
        }  # [roles, d]
        self.cos_sum = {k: torch.zeros(n, dtype=torch.float64) for k in self.layers}  # [roles]
        self.rel_sum = {k: torch.zeros(n, dtype=torch.float64) for k in self.layers}  # [roles]
        self.norm_b_sum = {k: torch.zeros(n, dtype=torch.float64) for k in self.layers}  # [roles]
        self.norm_f_sum = {k: torch.zeros(n, dtype=torch.float64) for k in self.layers}  # [roles]

    def _to(self, device: torch.device) -> None:
        """Move the running sums to the activations' device (once), so no batch waits for a copy."""
        if self.count.device == device:
            return
        self.count = self.count.to(device)
        for acc in (self.diff_sum, self.cos_sum, self.rel_sum, self.norm_b_sum, self.norm_f_sum):
            for k in acc:
                acc[k] = acc[k].to(device)

    @torch.no_grad()
    def update(
        self,
        base: dict[int, torch.Tensor],
        finetuned: dict[int, torch.Tensor],
        keep: torch.Tensor,
        roles: torch.Tensor,
    ) -> None:
        """Add one batch: ``base``/``finetuned`` map layer -> ``[batch, seq, d]``; ``keep`` ``[batch, seq]`` bool.

        Everything stays on the activations' device (float32 per token, float64 sums): no
        copy to the host and nothing that waits for the device.
        """
        device = base[self.layers[0]].device
        self._to(device)
        keep = keep.to(device, non_blocking=True)
        roles = roles.to(device, non_blocking=True)
        # per-token role weights instead of boolean indexing, whose output size needs a host sync
        onehot = torch.nn.functional.one_hot(roles.long(), len(ROLES)).double()  # [b, s, roles]
        onehot = (onehot * keep[..., None]).flatten(0, 1)  # [n, roles]; dropped tokens weigh 0
        drop = ~keep.flatten()[
            :, None
        ]  # [n, 1]: zeroed too, so a non-finite pad value cannot leak in
        self.count += onehot.sum(0)
        for k in self.layers:
            xb = base[k].float().flatten(0, 1)  # [n, d]
            xf = finetuned[k].float().flatten(0, 1)  # [n, d]
            diff = xf - xb  # [n, d]
            nb, nf = xb.norm(dim=-1), xf.norm(dim=-1)  # [n]
            cos = torch.nn.functional.cosine_similarity(xb, xf, dim=-1, eps=1e-12)  # [n]
            rel = diff.norm(dim=-1) / nb.clamp_min(1e-12)  # [n]
            self.diff_sum[k] += onehot.T @ diff.double().masked_fill(drop, 0)  # [roles, d]
            vals = torch.stack([cos, rel, nb, nf], dim=1).double().masked_fill(drop, 0)  # [n, 4]
            sums = onehot.T @ vals  # [roles, 4]
            self.cos_sum[k] += sums[:, 0]
            self.rel_sum[k] += sums[:, 1]
            self.norm_b_sum[k] += sums[:, 2]
            self.norm_f_sum[k] += sums[:, 3]

    @staticmethod
    def _summary(count, diff_sum, cos_sum, rel_sum, nb_sum, nf_sum) -> dict:
        n = float(count)
        return {
            "mean_diff_norm": float(diff_sum.norm() / n),
            "cosine": float(cos_sum / n),
            "relative_norm_change": float(rel_sum / n),
            "mean_norm_base": float(nb_sum / n),
            "mean_norm_finetuned": float(nf_sum / n),
            "tokens": int(n),
        }

    def mean_diff(self, layer: int) -> torch.Tensor:
        """``[d_model]`` mean of ``x^f - x^b`` over all counted tokens at ``layer``."""
        return (self.diff_sum[layer].sum(0) / self.count.sum().clamp_min(1)).float().cpu()

    def result(self) -> list[dict]:
        """One dict per layer: the statistics over all tokens, and ``by_role`` for roles that occurred."""
        self._to(torch.device("cpu"))  # one copy at the end
        out = []
        for k in self.layers:
            sums = (
                self.diff_sum[k],
                self.cos_sum[k],
                self.rel_sum[k],
                self.norm_b_sum[k],
                self.norm_f_sum[k],
            )
            total = self.count.sum()
            row = {"layer": k}
            if total > 0:
                row.update(self._summary(total, *(s.sum(0) for s in sums)))
            row["by_role"] = {
                name: self._summary(self.count[r], *(s[r] for s in sums))
                for r, name in enumerate(ROLES)
                if self.count[r] > 0
            }
            out.append(row)
        return out
