"""Training loop: stream batches, Adam with warm-up and decay, metrics, checkpoints, resume, DDP.

``train_crosscoder(source, cfg, out)`` trains on an :class:`~diffing.store.ActivationStore`
(normalised activations, streamed in shuffled batches), a ``[N, n_models, d]``
tensor, or any iterable of ``[B, n_models, d]`` batches. Every ``checkpoint_every``
steps it writes ``out/checkpoint/`` (weights, Adam state, step, dead-latent
clock, RNG state, history: safetensors + JSON); ``resume=True`` continues from
it and gives the same weights as an uninterrupted run. At the end it writes
``crosscoder.safetensors`` + ``config.json`` + ``metrics.json`` into ``out``.
Under ``torchrun`` each rank streams a disjoint part of the data (see
:mod:`diffing.crosscoder.distributed`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from diffing.crosscoder import distributed as ddp
from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.model import CrossCoder
from diffing.errors import DiffingError
from diffing.io import write_json

CHECKPOINT_DIR = "checkpoint"


class TrainResult(NamedTuple):
    """What :func:`train_crosscoder` returns."""

    crosscoder: CrossCoder
    """The trained crosscoder (on CPU unless a device was given)."""
    metrics: dict[str, Any]
    """Final metrics: ``fvu`` per model, ``l0`` (inference), ``dead_frac``, ``loss``, ``steps``, ``tokens``..."""
    history: list[dict[str, Any]]
    """One entry per log interval (step, tokens, loss, recon, aux, fvu, l0, dead_frac, lr)."""
    out: Path | None
    """Folder holding ``crosscoder.safetensors``, ``config.json``, ``metrics.json`` (None if not saved)."""
    finished: bool
    """False when ``max_steps`` stopped the run early (a checkpoint was written to resume from)."""


class _Step(nn.Module):
    """The training forward as a module, so DDP can wrap it."""

    def __init__(self, cc: CrossCoder):
        super().__init__()
        self.cc = cc

    def forward(self, x: torch.Tensor, l1_coeff: float, dead: torch.Tensor | None):
        return self.cc.forward_train(x, l1_coeff=l1_coeff, dead=dead)


def train_crosscoder(
    source,
    cfg: CrossCoderConfig | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    pair=None,
    spliced_texts: list[str] | None = None,
    device: str | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    crosscoder: CrossCoder | None = None,
) -> TrainResult:
    """Train a crosscoder on ``source`` (store, tensor ``[N, n_models, d]`` or iterable of batches).

    ``pair`` (a :class:`~diffing.models.ModelPair`) with ``spliced_texts`` adds the
    fine-tuned model's next-token loss with its layer activation replaced by the
    reconstruction (every ``cfg.spliced_every`` steps and at the end). ``max_steps``
    stops after that many steps in this call (checkpointing) without changing the schedule.
    ``crosscoder`` starts from given weights (same shape as ``cfg``) instead of a fresh init.
    """
    info = ddp.setup(device or "cpu")
    try:
        return _train(
            source,
            cfg or CrossCoderConfig(),
            out,
            resume,
            pair,
            spliced_texts,
            device or "cpu",
            max_steps,
            progress,
            info,
            crosscoder,
        )
    finally:
        ddp.teardown(info)


def _train(
    source, cfg, out, resume, pair, spliced_texts, device, max_steps, progress, info, init
) -> TrainResult:
    rank, world = info.rank, info.world_size
    cfg = ddp.resolve_config(source, cfg)
    if cfg.batch_size % world:
        raise DiffingError(
            f"batch_size {cfg.batch_size} is not divisible by the {world} processes; pick a multiple"
        )
    local_bs = cfg.batch_size // world
    total = ddp.total_steps(source, cfg)
    out = Path(out) if out is not None else None
    cc = CrossCoder(cfg)
    if init is not None:
        if init.cfg.arch_mismatch(cfg):
            raise DiffingError(
                f"the initial crosscoder differs from the config in {init.cfg.arch_mismatch(cfg)}"
            )
        cc.load_state_dict(init.state_dict())
    cc = cc.to(device)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
    last_active = torch.zeros(
        cfg.dict_size, dtype=torch.long, device=device
    )  # step each latent last fired
    step, history = 0, []
    ckpt = out / CHECKPOINT_DIR if out is not None else None
    if ckpt is not None and ckpt.exists():
        if not resume:
            raise DiffingError(
                f"{out} already holds a training checkpoint; pass --resume to continue it or choose another --out"
            )
        step, history = _load_checkpoint(ckpt, cfg, cc, opt, last_active)
    elif init is None:
        _init_decoder_bias(cc, ddp.stream(source, cfg, local_bs, rank, world, 0), device)
    stream = ddp.stream(source, cfg, local_bs, rank, world, step)
    step_fn = ddp.wrap(_Step(cc))
    stop = total if max_steps is None else min(total, step + max_steps)
    bar = _progress(progress and rank == 0, step, total)
    spliced = None
    while step < stop:
        x = ddp.next_batch(stream, step, rank, source).to(device)  # [local_bs, n_models, d]
        lr = _lr_at(cfg, step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        l1 = (
            cfg.l1_coeff * min(1.0, step / max(1.0, cfg.l1_warmup_frac * total))
            if cfg.kind == "l1"
            else 0.0
        )
        dead = (step - last_active) * cfg.batch_size >= cfg.dead_tokens  # [n]
        res = step_fn(x, l1, dead if cfg.kind == "batchtopk" else None)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(cc.parameters(), cfg.grad_clip)
        opt.step()
        active = ddp.all_reduce(res.active.to(torch.float32), "max") > 0
        step += 1
        last_active[active] = step
        if cfg.kind == "batchtopk" and step > cfg.threshold_start_step:
            _update_threshold(cc, res.min_kept, cfg.threshold_beta)
        if step % cfg.log_every == 0 or step == stop:
            history.append(_log_entry(cfg, step, x, res, dead, lr, l1))
            bar.set_postfix(
                loss=f"{history[-1]['loss']:.3g}", fvu=history[-1]["fvu"][-1], l0=history[-1]["l0"]
            )
        if (
            pair is not None
            and spliced_texts
            and cfg.spliced_every
            and step % cfg.spliced_every == 0
        ):
            spliced = _spliced(cc, pair, cfg, source, spliced_texts)
            history.append(
                {"step": step, "spliced_clean": spliced.clean, "spliced_loss": spliced.spliced}
            )
        if (
            ckpt is not None
            and cfg.checkpoint_every
            and step % cfg.checkpoint_every == 0
            and step < total
        ):
            _save_checkpoint(ckpt, rank, cc, opt, last_active, step, history)
        bar.update(1)
    bar.close()
    if step < total:
        if ckpt is not None:
            _save_checkpoint(ckpt, rank, cc, opt, last_active, step, history)
        return TrainResult(
            cc, {"steps": step, "tokens": step * cfg.batch_size}, history, out, False
        )
    metrics = _final_metrics(cc, source, cfg, local_bs, rank, world, history, step, device)
    if pair is not None and spliced_texts:
        spliced = _spliced(cc, pair, cfg, source, spliced_texts)
        metrics.update(spliced_clean=spliced.clean, spliced_loss=spliced.spliced)
    if out is not None and rank == 0:
        cc.save(out, metrics={**metrics, "history": history})
        if ckpt is not None and ckpt.exists():
            shutil.rmtree(ckpt)
    ddp.barrier()
    return TrainResult(cc, metrics, history, out, True)


def _init_decoder_bias(cc: CrossCoder, stream, device) -> None:
    """``b_dec`` = mean of the first ``bias_init_batches`` batches (all ranks): reconstruction starts at the mean."""
    total, count = None, 0
    for x in itertools.islice(stream, cc.cfg.bias_init_batches):
        x = getattr(x, "acts", x).to(device)
        if not bool(torch.isfinite(x).all()):
            continue  # the training loop reports bad batches with their position
        s = x.double().sum(0)  # [n_models, d]
        total = s if total is None else total + s
        count += x.shape[0]
    if total is None:
        return
    stats = ddp.all_reduce(
        torch.cat(
            [
                total.flatten(),
                torch.tensor([float(count)], dtype=torch.float64, device=total.device),
            ]
        )
    )
    with torch.no_grad():
        cc.b_dec.copy_((stats[:-1] / stats[-1]).view_as(cc.b_dec).to(cc.b_dec.dtype))


def _lr_at(cfg: CrossCoderConfig, step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.lr_warmup_steps))
    decay_steps = cfg.lr_decay_frac * total
    decay = min(1.0, (total - step) / decay_steps) if decay_steps > 0 else 1.0
    return float(cfg.lr) * warm * decay


def _update_threshold(cc: CrossCoder, min_kept: float, beta: float) -> None:
    """Threshold = running mean (EMA) of the smallest kept ``f_j * sum_m ||d_j^m||``, averaged over ranks."""
    stat = float(ddp.all_reduce(torch.tensor([min_kept], dtype=torch.float64), "mean")[0])
    with torch.no_grad():
        t = float(cc.threshold)
        cc.threshold.fill_(stat if t < 0 else beta * t + (1 - beta) * stat)


def _fvu(x: torch.Tensor, x_hat: torch.Tensor) -> list[float]:
    """Per-model fraction of variance unexplained of one batch (sums reduced over ranks)."""
    err = (x - x_hat).pow(2).sum((0, 2))  # [n_models]
    var = (x - x.mean(0, keepdim=True)).pow(2).sum((0, 2))  # [n_models]
    both = ddp.all_reduce(torch.cat([err, var]).double())
    m = x.shape[1]
    return [float(e / max(v, 1e-12)) for e, v in zip(both[:m], both[m:])]


def _log_entry(cfg, step, x, res, dead, lr, l1) -> dict[str, Any]:
    scal = ddp.all_reduce(
        torch.tensor(
            [res.loss.item(), res.recon.item(), res.aux.item(), res.sparsity.item(), res.l0],
            dtype=torch.float64,
        ),
        "mean",
    )
    return {
        "step": step, "tokens": step * cfg.batch_size, "loss": float(scal[0]), "recon": float(scal[1]),
        "aux": float(scal[2]), "sparsity": float(scal[3]), "l0": float(scal[4]), "fvu": _fvu(x, res.x_hat),
        "dead_frac": float(dead.float().mean()), "lr": lr, "l1_coeff": l1,
    }  # fmt: skip


def _progress(enabled: bool, start: int, total: int):
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=start, desc="crosscoder", unit="step")

    class _Null:
        def update(self, *_):
            pass

        def set_postfix(self, **_):
            pass

        def close(self):
            pass

    return _Null()


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


def _final_metrics(cc, source, cfg, local_bs, rank, world, history, step, device) -> dict[str, Any]:
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


def _spliced(cc, pair, cfg, source, texts):
    from diffing.crosscoder.splice import spliced_loss

    scales = source.norm_scales(cfg.layer) if ddp.is_store(source) else torch.ones(cfg.n_models)
    return spliced_loss(cc, pair, cfg.layer, texts, scales)


# ---- checkpoints ---------------------------------------------------------------------------


def _save_checkpoint(ckpt: Path, rank: int, cc, opt, last_active, step, history) -> None:
    """Atomically write weights, Adam state, step, dead-latent clock and RNG state (rank 0)."""
    ddp.barrier()
    if rank == 0:
        from safetensors.torch import save_file

        names = {id(p): n for n, p in cc.named_parameters()}
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in cc.state_dict().items()}
        for group in opt.param_groups:
            for p in group["params"]:
                for key, val in opt.state.get(p, {}).items():
                    tensors[f"opt.{names[id(p)]}.{key}"] = (
                        torch.as_tensor(val).detach().cpu().contiguous()
                    )
        tensors["last_active"] = last_active.cpu()
        tensors["rng_torch"] = torch.get_rng_state()
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "state.safetensors"))
        meta = {
            "step": step,
            "data_position": {"batches_per_rank": step},
            "history": history,
            "config": cc.cfg.to_dict(),
        }
        write_json(tmp / "state.json", meta, non_finite="null")
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
    ddp.barrier()


def _load_checkpoint(ckpt: Path, cfg: CrossCoderConfig, cc, opt, last_active) -> tuple[int, list]:
    from safetensors.torch import load_file

    try:
        meta = json.loads((ckpt / "state.json").read_text())
        tensors = load_file(str(ckpt / "state.safetensors"))
    except (OSError, json.JSONDecodeError) as err:
        raise DiffingError(
            f"cannot read the checkpoint in {ckpt} ({err}); delete it to start over"
        ) from err
    old = CrossCoderConfig.from_dict(meta["config"])
    diff = old.arch_mismatch(cfg) + [
        f
        for f in ("batch_size", "seed", "steps", "tokens", "layer")
        if getattr(old, f) != getattr(cfg, f)
    ]
    if diff:
        pairs = ", ".join(
            f"{f}: checkpoint {getattr(old, f)} vs now {getattr(cfg, f)}" for f in diff
        )
        raise DiffingError(
            f"the checkpoint in {ckpt} was made with another config ({pairs}); use the same options or another --out"
        )
    dev = cc.W_enc.device
    cc.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(cc.named_parameters())
    for name, p in params.items():
        state = {
            k.split(".")[-1]: v.to(dev) for k, v in tensors.items() if k.startswith(f"opt.{name}.")
        }
        if state:
            state["step"] = state["step"].cpu()
            opt.state[p] = state
    last_active.copy_(tensors["last_active"].to(dev))
    torch.set_rng_state(tensors["rng_torch"])
    return int(meta["step"]), list(meta.get("history", []))


def schedule_summary(cfg: CrossCoderConfig, total: int) -> str:
    """One line describing the run (for the CLI)."""
    return (
        f"{cfg.kind} crosscoder: {cfg.n_models}x{cfg.d_model} -> {cfg.dict_size} latents"
        + (f", k={cfg.k}" if cfg.kind == "batchtopk" else f", l1={cfg.l1_coeff}")
        + f", {total} steps x {cfg.batch_size} tokens, lr {cfg.lr:.2g}"
    )
