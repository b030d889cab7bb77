"""Training loop: stream batches, Adam with warm-up and decay, metrics, checkpoints, resume, DDP.

``train_crosscoder(source, cfg, out)`` trains on an :class:`~diffing.store.ActivationStore`
(normalised activations, streamed in shuffled batches), a ``[N, n_models, d]``
tensor, or any iterable of ``[B, n_models, d]`` batches. Every ``checkpoint_every``
steps it writes ``out/checkpoint/`` (see :mod:`diffing.crosscoder.checkpoint`);
``resume=True`` continues from it and gives the same weights as an uninterrupted
run. At the end it writes ``crosscoder.safetensors`` + ``config.json`` +
``metrics.json`` into ``out``. Batches are read in a background thread
(:mod:`diffing.crosscoder.prefetch`) while the step runs. Under ``torchrun`` each
rank streams a disjoint part of the data (see :mod:`diffing.crosscoder.distributed`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from diffing.crosscoder import distributed as ddp
from diffing.crosscoder.checkpoint import (
    CHECKPOINT_DIR,
    check_out,
    disk_errors,
    load_checkpoint,
    save_checkpoint,
)
from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.model import CrossCoder, compute_dtype, resolve_decode
from diffing.crosscoder.prefetch import Prefetcher, prepare
from diffing.crosscoder.train_metrics import (
    evaluate_crosscoder,  # noqa: F401 (public name, re-exported by diffing.crosscoder)
    final_metrics,
    log_entry,
    warnings_for,
)
from diffing.errors import DiffingError
from diffing.io import folder_lock
from diffing.progress import bar as progress_bar
from diffing.schedule import lr_at

log = logging.getLogger(__name__)


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
    force: bool = False,
) -> TrainResult:
    """Train a crosscoder on ``source`` (store, tensor ``[N, n_models, d]`` or iterable of batches).

    ``pair`` (a :class:`~diffing.models.ModelPair`) with ``spliced_texts`` adds the
    fine-tuned model's next-token loss with its layer activation replaced by the
    reconstruction (every ``cfg.spliced_every`` steps and at the end). ``max_steps``
    stops after that many steps in this call (checkpointing) without changing the schedule.
    ``crosscoder`` starts from given weights (same shape as ``cfg``) instead of a fresh init.
    ``out`` must be new, empty or hold this run's checkpoint; ``force`` writes over anything
    else; with ``resume`` a finished crosscoder of the same config is returned as it is.
    """
    device = check_device(device or "cpu")
    info = ddp.setup(device)
    try:
        with contextlib.ExitStack() as stack:
            if out is not None:  # a second run into the same folder is refused, not interleaved
                stack.enter_context(
                    folder_lock(out, f"train-r{info.rank:03d}", "crosscoder training")
                )
            return _train(
                source, cfg or CrossCoderConfig(), out, resume, pair, spliced_texts, device,
                max_steps, progress, info, crosscoder, force,
            )  # fmt: skip
    finally:
        ddp.teardown(info)


def check_device(device: str) -> str:
    """``device`` if torch can use it, else a DiffingError saying what to pass instead."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise DiffingError(f"device {device!r} is not a torch device; use cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffingError(
            f"device {device!r} was asked for but CUDA is not available (no GPU visible, or torch "
            f"{torch.__version__} built without CUDA); use `device` cpu",
            fields=("device",),
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DiffingError(
            f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible"
        )
    return device


def _train(
    source, cfg, out, resume, pair, spliced_texts, device, max_steps, progress, info, init, force
) -> TrainResult:
    rank, world = info.rank, info.world_size
    cfg = ddp.resolve_config(source, cfg)
    resolve_decode(cfg.decode, device, compute_dtype(cfg.dtype))  # reject impossible paths early
    if cfg.batch_size % world:
        raise DiffingError(
            f"batch_size {cfg.batch_size} is not divisible by the {world} processes; pick a multiple"
        )
    local_bs = cfg.batch_size // world
    total = ddp.total_steps(source, cfg)
    out = Path(out) if out is not None else None
    if check_out(out, cfg, resume=resume, force=force) == "done":
        return _finished(out, device)
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
                f"{out} already holds a training checkpoint; pass `resume=True` to continue it or choose another `out`",
                fields=("resume", "out"),
            )
        step, history = load_checkpoint(ckpt, cfg, cc, opt, last_active)
    elif init is None:
        _init_decoder_bias(cc, ddp.stream(source, cfg, local_bs, rank, world, 0), device)
    # raw store batches (storage dtype): the prefetcher widens and normalises them, on the GPU there
    scales = source.norm_scales(cfg.layer) if ddp.is_store(source) else None
    batches = Prefetcher(
        ddp.stream(source, cfg, local_bs, rank, world, step, raw=True), device=device, scales=scales
    )
    try:
        step, history, timing = _loop(
            cfg, cc, opt, last_active, batches, step, total, max_steps, history, source,
            rank, ckpt, pair, spliced_texts, progress,
        )  # fmt: skip
    finally:
        batches.close()
    if step < total:
        if ckpt is not None:
            save_checkpoint(ckpt, rank, cc, opt, last_active, step, history)
        return TrainResult(
            cc, {"steps": step, "tokens": step * cfg.batch_size}, history, out, False
        )
    metrics = final_metrics(cc, source, cfg, local_bs, rank, world, history, step, device)
    metrics.update(timing)
    if pair is not None and spliced_texts:
        spliced = _spliced(cc, pair, cfg, source, spliced_texts)
        metrics.update(spliced_clean=spliced.clean, spliced_loss=spliced.spliced)
    metrics["warnings"] = warnings_for(metrics, step)
    for w in metrics["warnings"] if rank == 0 else []:
        log.warning(w)
    if out is not None and rank == 0:
        with disk_errors(out):
            cc.save(out, metrics={**metrics, "history": history})
        if ckpt is not None and ckpt.exists():
            shutil.rmtree(ckpt)
    ddp.barrier()
    return TrainResult(cc, metrics, history, out, True)


def _loop(
    cfg, cc, opt, last_active, batches, step, total, max_steps, history, source, rank, ckpt,
    pair, spliced_texts, progress,
) -> tuple[int, list, dict]:  # fmt: skip
    """The steps from ``step`` to the end (or ``max_steps`` more); returns (step, history, loop timing)."""
    step_fn = ddp.wrap(_Step(cc))
    dead_window = cfg.dead_window(total)
    stop = total if max_steps is None else min(total, step + max_steps)
    bar = progress_bar(
        total=total, initial=step, desc="crosscoder", unit="step", enabled=progress and rank == 0
    )
    start, start_step, waited0 = time.perf_counter(), step, batches.waited_s
    while step < stop:
        try:
            x, finite = next(batches)  # [local_bs, n_models, d] on the device
        except StopIteration:
            raise DiffingError(
                f"the data ran out after {step} steps; give fewer steps/tokens or more data"
            ) from None
        ddp.check_batch(finite, step, rank, source)
        lr = lr_at(step, total, float(cfg.lr), cfg.lr_warmup_steps, decay_frac=cfg.lr_decay_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        l1 = (
            cfg.l1_coeff * min(1.0, step / max(1.0, cfg.l1_warmup_frac * total))
            if cfg.kind == "l1"
            else 0.0
        )
        dead = (step - last_active) * cfg.batch_size >= dead_window  # [n]
        res = step_fn(x, l1, dead if cfg.kind == "batchtopk" else None)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(cc.parameters(), cfg.grad_clip)
        opt.step()
        active = ddp.all_reduce(res.active.to(torch.float32), "max") > 0
        step += 1
        last_active.masked_fill_(active, step)  # no host sync, unlike boolean indexing
        if cfg.kind == "batchtopk" and step > cfg.threshold_start_step:
            _update_threshold(cc, res.min_kept, cfg.threshold_beta)
        if step % cfg.log_every == 0 or step == stop:
            history.append(log_entry(cfg, step, x, res, dead, lr, l1))
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
            save_checkpoint(ckpt, rank, cc, opt, last_active, step, history)
        bar.update(1)
    bar.close()
    timing = {}
    if step > start_step:  # this call's loop rate (bias init and final evaluation excluded)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - start
        timing = {"train_seconds": seconds, "tokens_per_s": (step - start_step) * cfg.batch_size / seconds,
                  "data_wait_s": batches.waited_s - waited0}  # fmt: skip
    return step, history, timing


def _finished(out: Path, device: str) -> TrainResult:
    """A finished run in ``out`` (same config): returned as it is, nothing retrained."""
    import json

    cc = CrossCoder.load(out, device=device)
    from diffing.crosscoder.model import METRICS_NAME

    try:
        metrics = json.loads((out / METRICS_NAME).read_text())
    except (OSError, ValueError):
        metrics = {}
    history = metrics.pop("history", []) if isinstance(metrics, dict) else []
    return TrainResult(cc, metrics, history, out, True)


def _init_decoder_bias(cc: CrossCoder, stream, device) -> None:
    """``b_dec`` = mean of the first ``bias_init_batches`` batches (all ranks): reconstruction starts at the mean."""
    total, count = None, 0
    for raw in itertools.islice(stream, cc.cfg.bias_init_batches):
        x, finite = prepare(raw, None, device)
        if not finite:
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


def _update_threshold(cc: CrossCoder, min_kept: float, beta: float) -> None:
    """Threshold = running mean (EMA) of the smallest kept ``f_j * sum_m ||d_j^m||``, averaged over ranks."""
    stat = float(ddp.all_reduce(torch.tensor([min_kept], dtype=torch.float64), "mean")[0])
    with torch.no_grad():
        t = float(cc.threshold)
        cc.threshold.fill_(stat if t < 0 else beta * t + (1 - beta) * stat)


def _spliced(cc, pair, cfg, source, texts):
    from diffing.crosscoder.splice import spliced_loss

    scales = source.norm_scales(cfg.layer) if ddp.is_store(source) else torch.ones(cfg.n_models)
    return spliced_loss(cc, pair, cfg.layer, texts, scales)
