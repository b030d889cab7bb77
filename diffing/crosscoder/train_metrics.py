"""Training metrics: per-log-interval entries, final evaluation, and warnings about untrustworthy runs.

FVU per model is ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (reduced over ranks);
the final metrics evaluate the inference encoding (the BatchTopK threshold) on held-out
shuffles of the data.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

import torch

from diffing.crosscoder import distributed as ddp
from diffing.crosscoder.model import CrossCoder
from diffing.errors import DiffingError

MIN_STEPS = 100
"""Fewer training steps than this gives a warning (the schedule's warm-up alone is 100 steps)."""
MAX_FVU = 0.9
"""A final FVU above this (per model) gives a warning: the crosscoder barely reconstructs."""


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> list[float]:
    """Per-model fraction of variance unexplained of one batch (sums reduced over ranks)."""
    err = (x - x_hat).pow(2).sum((0, 2))  # [n_models]
    var = (x - x.mean(0, keepdim=True)).pow(2).sum((0, 2))  # [n_models]
    both = ddp.all_reduce(torch.cat([err, var]).double())
    m = x.shape[1]
    return [float(e / max(v, 1e-12)) for e, v in zip(both[:m], both[m:])]


def log_entry(cfg, step, x, res, dead, lr, l1) -> dict[str, Any]:
    scal = ddp.all_reduce(
        torch.tensor(
            [res.loss.item(), res.recon.item(), res.aux.item(), res.sparsity.item(), res.l0],
            dtype=torch.float64,
        ),
        "mean",
    )
    return {
        "step": step, "tokens": step * cfg.batch_size, "loss": float(scal[0]), "recon": float(scal[1]),
        "aux": float(scal[2]), "sparsity": float(scal[3]), "l0": float(scal[4]), "fvu": fvu(x, res.x_hat),
        "dead_frac": float(dead.float().mean()), "lr": lr, "l1_coeff": l1,
    }  # fmt: skip


@torch.no_grad()
def evaluate_crosscoder(cc: CrossCoder, batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """FVU per model and L0 of the inference encoding (threshold for BatchTopK) over ``batches``."""
    err = var = None
    l0_sum, n, fired = 0.0, 0, torch.zeros(cc.cfg.dict_size, dtype=torch.bool)
    device = cc.W_enc.device
    for x in batches:
        x = getattr(x, "acts", x).to(device)
        x_hat, f = cc(x)
        e = (x - x_hat).pow(2).sum((0, 2)).double()
        v = (x - x.mean(0, keepdim=True)).pow(2).sum((0, 2)).double()
        err, var = (e, v) if err is None else (err + e, var + v)
        l0_sum += float((f > 0).sum())
        n += x.shape[0]
        fired |= (f > 0).any(0).cpu()
    if n == 0:
        raise DiffingError("no batches to evaluate the crosscoder on")
    return {"fvu": [float(a / max(b, 1e-12)) for a, b in zip(err, var)], "l0": l0_sum / n, "eval_tokens": n,
            "eval_fired_frac": float(fired.float().mean())}  # fmt: skip


def final_metrics(cc, source, cfg, local_bs, rank, world, history, step, device) -> dict[str, Any]:
    metrics: dict[str, Any] = {"steps": step, "tokens": step * cfg.batch_size, "kind": cfg.kind}
    logs = [h for h in history if "loss" in h]
    if logs:
        last = logs[-1]
        metrics.update(
            train_loss=last["loss"],
            train_fvu=last["fvu"],
            train_l0=last["l0"],
            dead_frac=last["dead_frac"],
        )
    if ddp.is_store(source) or isinstance(source, torch.Tensor):
        eval_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1)
        metrics.update(
            evaluate_crosscoder(
                cc,
                itertools.islice(
                    ddp.epoch_batches(source, eval_cfg, local_bs, rank, world, 0, 0), 8
                ),
            )
        )
    metrics["threshold"] = float(cc.threshold)
    return metrics


def warnings_for(metrics: dict[str, Any], steps: int) -> list[str]:
    """Reasons not to trust the result: too few steps, or a reconstruction that explains almost nothing."""
    out = []
    if steps < MIN_STEPS:
        out.append(
            f"the crosscoder trained for only {steps} steps (< {MIN_STEPS}); its latents are "
            "unlikely to be meaningful: train on more tokens"
        )
    fvu = metrics.get("fvu") or metrics.get("train_fvu") or []
    if fvu and max(fvu) > MAX_FVU:
        out.append(
            f"final FVU {max(fvu):.3f} > {MAX_FVU}: the crosscoder explains almost none of the "
            "activations; train longer, raise the learning rate or the dictionary size"
        )
    return out
