"""Stream two checkpoints' tensors from safetensors, one at a time, without loading either model.

Used by :func:`diffing.stats.weights.weight_stats_from_files`: each tensor name is
read from the base file and from the fine-tuned file (or rebuilt exactly from a LoRA
adapter's factors) with ``safetensors.safe_open``, so peak memory is two tensors,
not two models. References are local folders or hub ids (the cached snapshot is
used; ``HF_HUB_OFFLINE=1`` is respected).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from diffing.errors import DiffingError
from diffing.loading import looks_local

_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json", "adapter_config.json"]


def resolve_folder(ref: str) -> Path:
    """A local folder holding ``ref``'s files: the folder itself, or the hub snapshot (downloaded if allowed)."""
    if looks_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise DiffingError(
                f"checkpoint folder {ref!r} does not exist; pass a local folder or a hub id"
            )
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=ref, allow_patterns=_PATTERNS))
    except Exception as err:
        raise DiffingError(
            f"could not find the safetensors files of {ref!r} ({type(err).__name__}); "
            "download the model first or pass a local folder"
        ) from err


def tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (from the index when sharded)."""
    from safetensors import safe_open

    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        weight_map = json.loads(index[0].read_text())["weight_map"]
        return {name: folder / fname for name, fname in weight_map.items()}
    out: dict[str, Path] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            out.update({name: file for name in f.keys()})
    if not out:
        raise DiffingError(
            f"{str(folder)!r} has no *.safetensors weights; convert the checkpoint to safetensors "
            "or load the pair in memory (weight_stats(pair))"
        )
    return out


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_same_architecture(base: Path, ft: Path) -> None:
    """Raise a :class:`DiffingError` when two checkpoints' configs name different families or shapes."""
    cb, cf = _config(base), _config(ft)
    for key in ("model_type", "hidden_size", "n_embd", "num_hidden_layers", "n_layer"):
        if key in cb and key in cf and cb[key] != cf[key]:
            raise DiffingError(
                f"the checkpoints differ in architecture ({key}: {cb[key]!r} vs {cf[key]!r}); "
                "pair a model with a fine-tune of that same model"
            )


class _Reader:
    """Open safetensors handles of one checkpoint, read one tensor at a time."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self._handles: dict[Path, object] = {}

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        file = self.files[name]
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file].get_tensor(name)


def _lookup(pattern: dict, module: str, default):
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: a key matches a module-name suffix."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


def adapter_deltas(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]]:
    """Module name (as in the merged model) -> (A ``[r, in]``, B ``[out, r]``, scaling, fan_in_fan_out)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    files = sorted(folder.glob("adapter_model*.safetensors"))
    if not files:
        raise DiffingError(
            f"adapter {str(folder)!r} has no adapter_model.safetensors; save it with save_pretrained"
        )
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    out = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        module = (
            module[len("base_model.model.") :] if module.startswith("base_model.model.") else module
        )
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        r = _lookup(cfg.get("rank_pattern"), module, cfg.get("r", a.shape[0]))
        alpha = _lookup(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", r))
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[module] = (a, b, float(scaling), bool(cfg.get("fan_in_fan_out")))
    return out


def stream_deltas(base_ref: str, ft_ref: str) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, W_b, W_f - W_b)`` for every tensor both checkpoints hold, streamed from safetensors."""
    base_dir = resolve_folder(base_ref)
    ft_dir = resolve_folder(ft_ref)
    base = _Reader(tensor_files(base_dir))
    if (ft_dir / "adapter_config.json").is_file():
        for module, (a, b, scaling, fan_in_fan_out) in sorted(adapter_deltas(ft_dir).items()):
            name = f"{module}.weight"
            if name not in base.files:
                raise DiffingError(
                    f"the adapter changes {module!r}, which the base checkpoint {base_ref!r} lacks"
                )
            delta = scaling * (b.float() @ a.float())  # [out, in]
            yield name, base.get(name), delta.T if fan_in_fan_out else delta
        return
    check_same_architecture(base_dir, ft_dir)
    ft = _Reader(tensor_files(ft_dir))
    common = [n for n in base.files if n in ft.files]
    if not common:
        raise DiffingError(
            f"{base_ref!r} and {ft_ref!r} share no tensor names; they are not the same model "
            "(pair a model with a fine-tune of it)"
        )
    for name in common:
        w_b, w_f = base.get(name), ft.get(name)
        if w_b.shape != w_f.shape:
            raise DiffingError(
                f"tensor {name!r} has shape {tuple(w_b.shape)} in the base and {tuple(w_f.shape)} in the "
                "fine-tuned checkpoint; pair a model with a fine-tune of that same model"
            )
        yield name, w_b, w_f.float() - w_b.float()
