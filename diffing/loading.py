"""Loading one checkpoint: a Hugging Face model id or a local folder, by one code path.

A local folder and a hub id both go through ``AutoModelForCausalLM.from_pretrained``;
the only difference is that a folder is checked up front (exists, has a config, has
safetensors weights) so the user gets a clear error instead of a deep traceback.
Weights load from safetensors only, unless the user opts into pickle checkpoints,
which are then read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from diffing.errors import DiffingError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def looks_local(ref: str | os.PathLike) -> bool:
    """Whether a reference names a local path rather than a hub id (``org/name``)."""
    s = str(ref)
    return (
        os.path.exists(s)
        or s.startswith(("/", "./", "../", "~"))
        or s.endswith(os.sep)
        or "\\" in s
    )


def is_adapter(ref: str | os.PathLike) -> bool:
    """Whether a local folder holds a PEFT adapter (it has ``adapter_config.json``)."""
    return looks_local(ref) and (Path(ref).expanduser() / "adapter_config.json").is_file()


def check_folder(
    ref: str | os.PathLike, *, allow_pickle: bool = False, kind: str = "model"
) -> Path:
    """Validate a local checkpoint folder and return its path; raise a clear error if unusable."""
    path = Path(ref).expanduser()
    if not path.exists():
        raise DiffingError(
            f"{kind} path {str(ref)!r} does not exist; pass a local folder or a Hugging Face model id"
        )
    if not path.is_dir():
        raise DiffingError(
            f"{kind} path {str(ref)!r} is a file; pass the folder that holds config.json and the weights"
        )
    if kind == "adapter":
        return path
    if not (path / "config.json").is_file():
        raise DiffingError(
            f"{kind} folder {str(path)!r} has no config.json; it is not a Hugging Face model folder "
            "(save one with model.save_pretrained(folder))"
        )
    files = [p.name for p in path.iterdir()]
    if any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in files):
        return path
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles and not allow_pickle:
        raise DiffingError(
            f"{kind} folder {str(path)!r} has only pickle weights ({pickles[0]}), which can run code when loaded; "
            "convert them to safetensors, or opt in with `allow_pickle=True`, "
            "which loads them with weights_only=True",
            fields=("allow_pickle",),
        )
    if not pickles:
        raise DiffingError(
            f"{kind} folder {str(path)!r} has no weights (*.safetensors); the checkpoint is incomplete"
        )
    return path


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | str:
    """The dtype to load with: explicit, ``"auto"`` (the checkpoint's), or float32 on CPU and auto on GPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32 if device == "cpu" else "auto"
    if dtype == "auto":
        return "auto"
    if not hasattr(torch, str(dtype)) or not isinstance(getattr(torch, str(dtype)), torch.dtype):
        raise DiffingError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return getattr(torch, str(dtype))


def resolve_device(device: str | None) -> str:
    """``cuda`` when available and not given, else ``cpu``; ``auto`` means ``device_map="auto"``."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def load_tokenizer(ref: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer of a checkpoint (hub id or folder)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(ref), trust_remote_code=trust_remote_code, revision=revision
        )
    except Exception as err:
        raise DiffingError(
            f"could not load the tokenizer of {str(ref)!r}: {_first_line(err)}"
        ) from err


def load_causal_lm(
    ref: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
) -> torch.nn.Module:
    """Load a causal LM from a hub id or a local folder, in eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    if looks_local(ref):
        check_folder(ref, allow_pickle=allow_pickle)
    kwargs = dict(
        dtype=resolve_dtype(dtype, device),
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
        revision=revision,
    )
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(
                str(Path(ref).expanduser()) if looks_local(ref) else ref, **kwargs
            )
    except DiffingError:
        raise
    except Exception as err:
        hint = (
            ""
            if looks_local(ref)
            else " (is it a valid model id, cached locally if you are offline?)"
        )
        raise DiffingError(f"could not load model {str(ref)!r}{hint}: {_first_line(err)}") from err
    if device != "auto":
        model = model.to(device)
    return model.eval()


def read_adapter_config(ref: str | os.PathLike) -> dict:
    """The adapter's ``adapter_config.json`` as a dict."""
    path = check_folder(ref, kind="adapter") / "adapter_config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DiffingError(f"adapter config {str(path)!r} is not valid JSON: {err}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
