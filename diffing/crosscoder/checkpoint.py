"""The training output folder: what may be written there, resumable checkpoints, and disk errors.

``check_out`` refuses to write over a folder that holds anything but this run's own
checkpoint (a model folder, another crosscoder, a finished run) unless forced; a
finished crosscoder is only "resumed" (returned as is) when its config matches.
``save_checkpoint`` / ``load_checkpoint`` write and read ``out/checkpoint/``
(weights, Adam state, step, dead-latent clock, RNG state, history; safetensors +
JSON, atomically) and refuse a checkpoint made with another config or on another
store (the store fingerprint in ``store_manifest``). ``disk_errors`` turns a full
disk or an unwritable folder into a one-line :class:`DiffingError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from pathlib import Path

import torch

from diffing.crosscoder import distributed as ddp
from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.model import CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME
from diffing.errors import DiffingError
from diffing.io import write_json

CHECKPOINT_DIR = "checkpoint"
"""Sub-folder of ``out`` holding the resumable training state."""

RUN_FIELDS = ("batch_size", "seed", "steps", "tokens", "layer")
"""Config fields besides the shape that a resumed run must share with its checkpoint."""

_OWN = {CHECKPOINT_DIR, CHECKPOINT_DIR + ".tmp", WEIGHTS_NAME + ".tmp"}
"""Entries a training run itself leaves in ``out`` before it finishes."""


@contextlib.contextmanager
def disk_errors(path: Path):
    """Re-raise an OSError while writing ``path`` as a DiffingError saying what to do."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise DiffingError(
                f"no space left on the disk while writing {path}; free some space (or choose "
                "another `out`) and rerun with `resume=True` to continue from the last checkpoint",
                fields=("out", "resume"),
            ) from err
        raise DiffingError(
            f"cannot write {path} ({err.strerror or err}); check that the folder is writable"
        ) from err


def config_differences(old: CrossCoderConfig, new: CrossCoderConfig) -> list[str]:
    """``"field: old vs new"`` for each shape/run field (and the store fingerprint) that differs."""
    diff = [
        f"{f}: checkpoint {getattr(old, f)} vs now {getattr(new, f)}"
        for f in old.arch_mismatch(new)
        + [f for f in RUN_FIELDS if getattr(old, f) != getattr(new, f)]
    ]
    a, b = _fingerprint(old), _fingerprint(new)
    if a and b and a != b:
        diff.append(f"store: checkpoint {a[:12]} vs now {b[:12]} (another store)")
    return diff


def _fingerprint(cfg: CrossCoderConfig) -> str | None:
    return (cfg.store_manifest or {}).get("fingerprint")


def check_out(out: Path | None, cfg: CrossCoderConfig, *, resume: bool, force: bool) -> str:
    """What to do with ``out``: ``"train"`` (fresh or resume its checkpoint) or ``"done"`` (finished, same config).

    DiffingError when ``out`` holds anything else (unless ``force``), or a finished
    crosscoder (unless ``force``, or ``resume`` with the same config).
    """
    if out is None or not out.exists():
        return "train"
    if not out.is_dir():
        raise DiffingError(f"`out` {out} is a file; give a folder", fields=("out",))
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # locks, markers
    if force:
        if not resume:  # start over: an old checkpoint would otherwise be refused below
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        return "train"
    if {WEIGHTS_NAME, CONFIG_NAME} <= entries:
        old = CrossCoderConfig.load(out / CONFIG_NAME)
        diff = config_differences(old, cfg)
        if resume and not diff:
            return "done"
        steps = _finished_steps(out)
        what = f"a finished crosscoder ({steps} steps)" if steps else "a finished crosscoder"
        if resume:
            raise DiffingError(
                f"{out} holds {what} trained with another config ({'; '.join(diff)}); "
                "pass `force=True` to replace it or choose another `out`",
                fields=("force", "out"),
            )
        raise DiffingError(
            f"{out} already holds {what}; pass `resume=True` to keep it, `force=True` to replace it, "
            "or choose another `out`",
            fields=("resume", "force", "out"),
        )
    other = sorted(entries - _OWN)
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        raise DiffingError(
            f"`out` {out} holds other files ({shown}), not a crosscoder training run; choose an "
            "empty or new folder, or pass `force=True` to write into it anyway",
            fields=("out", "force"),
        )
    return "train"


def _finished_steps(out: Path) -> int | None:
    try:
        return int(json.loads((out / METRICS_NAME).read_text()).get("steps"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def save_checkpoint(ckpt: Path, rank: int, cc, opt, last_active, step, history) -> None:
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
        meta = {
            "step": step,
            "data_position": {"batches_per_rank": step},
            "history": history,
            "config": cc.cfg.to_dict(),
        }
        with disk_errors(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(tensors, str(tmp / "state.safetensors"))
            write_json(tmp / "state.json", meta, non_finite="null")
            shutil.rmtree(ckpt, ignore_errors=True)
            tmp.rename(ckpt)
    ddp.barrier()


def load_checkpoint(ckpt: Path, cfg: CrossCoderConfig, cc, opt, last_active) -> tuple[int, list]:
    """Restore the state :func:`save_checkpoint` wrote; DiffingError if it came from another config or store."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((ckpt / "state.json").read_text())
        tensors = load_file(str(ckpt / "state.safetensors"))
    except (OSError, json.JSONDecodeError) as err:
        raise DiffingError(
            f"cannot read the checkpoint in {ckpt} ({err}); delete it to start over"
        ) from err
    diff = config_differences(CrossCoderConfig.from_dict(meta["config"]), cfg)
    if diff:
        raise DiffingError(
            f"the checkpoint in {ckpt} was made with another config ({', '.join(diff)}); "
            "use the same options and store, or another `out`",
            fields=("out",),
        )
    dev = cc.W_enc.device
    cc.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in cc.named_parameters():
        state = {
            k.split(".")[-1]: v.to(dev) for k, v in tensors.items() if k.startswith(f"opt.{name}.")
        }
        if state:
            state["step"] = state["step"].cpu()
            opt.state[p] = state
    last_active.copy_(tensors["last_active"].to(dev))
    torch.set_rng_state(tensors["rng_torch"])
    return int(meta["step"]), list(meta.get("history", []))
