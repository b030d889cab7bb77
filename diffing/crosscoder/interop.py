"""Import crosscoders saved by science-of-finetuning's ``dictionary_learning`` library.

Their ``CrossCoder`` / ``BatchTopKCrossCoder`` (the code behind Minder et al. 2025)
keep, in a state dict:

==========================  =========================  ======================================
their key                   shape                      ours
==========================  =========================  ======================================
``encoder.weight``          ``[n_models, d, n]``       ``W_enc``
``encoder.bias``            ``[n]``                    ``b_enc``
``decoder.weight``          ``[n_models, n, d]``       ``W_dec``
``decoder.bias``            ``[n_models, d]``          ``b_dec``
``threshold`` (BatchTopK)   scalar, -1 = not learned   ``threshold``
``k`` (BatchTopK)           scalar int                 ``cfg.k``
``code_normalization_id``   scalar (1 = CROSSCODER)    must be CROSSCODER
==========================  =========================  ======================================

Their encoder is ``relu(sum_m x^m W_enc^m + b_enc)`` and BatchTopK keeps ``f`` where
``f * sum_m ||d_j^m|| > threshold`` (batch top-k while ``threshold < 0``): the same
rule as :class:`~diffing.crosscoder.model.CrossCoder`, so an import decodes identically.
Hub checkpoints (``PyTorchModelHubMixin``) hold ``model.safetensors`` + ``config.json``
(``activation_dim``, ``dict_size``, ``num_encoder_layers``, ``k``, ``code_normalization``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffing.crosscoder.config import CrossCoderConfig
from diffing.crosscoder.model import CONFIG_NAME, WEIGHTS_NAME, CrossCoder
from diffing.errors import DiffingError

CROSSCODER_NORMALIZATION_ID = 1
"""Value of their ``code_normalization_id`` buffer for ``CodeNormalization.CROSSCODER`` (the default)."""

_KEYS = {
    "encoder.weight": "W_enc",
    "encoder.bias": "b_enc",
    "decoder.weight": "W_dec",
    "decoder.bias": "b_dec",
}


def download(repo_id: str) -> Path:
    """Fetch a crosscoder from the Hugging Face hub (ours or dictionary_learning's) into the cache."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # offline, unknown id, no access
        raise DiffingError(
            f"cannot find crosscoder {repo_id!r}: not a local folder and the hub download failed "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the path, or unset HF_HUB_OFFLINE"
        ) from err


def _read_state(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and config dict from a file or folder in their layout."""
    config: dict = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        files = sorted(path.glob("*.safetensors")) or sorted(
            [*path.glob("*.pt"), *path.glob("*.pth"), *path.glob("*.bin")]
        )
        if not files:
            raise DiffingError(
                f"no crosscoder weights in {path}: expected {WEIGHTS_NAME} + {CONFIG_NAME} or a dictionary_learning model.safetensors/.pt"
            )
        preferred = [f for f in files if f.stem in ("model", "model_final", "ae")]
        path = (preferred or files)[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), config
    if not allow_pickle:
        raise DiffingError(
            f"{path} is a pickle checkpoint; pass `allow_pickle=True` to read it with weights_only=True, or convert it to safetensors",
            fields=("allow_pickle",),
        )
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "_hub_mixin_config" in state:
        config = {**state.pop("_hub_mixin_config"), **config}
    return state, config


def load_dictionary_learning(
    ref: str | Path, *, allow_pickle: bool = False, device: str | None = None
) -> CrossCoder:
    """A :class:`CrossCoder` from a dictionary_learning crosscoder (folder, file, or hub id)."""
    path = Path(ref)
    if not path.exists():
        path = download(str(ref))
    state, config = _read_state(path, allow_pickle)
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise DiffingError(
            f"{path} is not a dictionary_learning crosscoder: missing {', '.join(missing)}"
        )
    norm_id = int(state.get("code_normalization_id", torch.tensor(CROSSCODER_NORMALIZATION_ID)))
    code_norm = str(config.get("code_normalization", "CROSSCODER")).upper()
    if norm_id != CROSSCODER_NORMALIZATION_ID or code_norm != "CROSSCODER":
        raise DiffingError(
            f"{path} uses code normalization {code_norm} (id {norm_id}); only CROSSCODER is supported"
        )
    w_enc = state["encoder.weight"]  # [n_models, d, n]
    if w_enc.dim() != 3 or state["decoder.weight"].shape != (
        w_enc.shape[0],
        w_enc.shape[2],
        w_enc.shape[1],
    ):
        raise DiffingError(
            f"{path}: encoder {list(w_enc.shape)} and decoder {list(state['decoder.weight'].shape)} do not form a crosscoder"
        )
    m, d, n = w_enc.shape
    is_topk = "k" in state or "k" in config or "threshold" in state
    k = int(state["k"]) if "k" in state else int(config.get("k", 1))
    cfg = CrossCoderConfig(
        n_models=m, d_model=d, dict_size=n, kind="batchtopk" if is_topk else "l1", k=k,
        dtype=str(w_enc.dtype).replace("torch.", ""),
        extra={"imported_from": str(ref), "format": "dictionary_learning", "source_config": config},
    )  # fmt: skip
    cc = CrossCoder(cfg.resolved())
    ours = {ours_key: state[theirs] for theirs, ours_key in _KEYS.items()}
    ours["threshold"] = (
        state["threshold"].reshape(()).float() if "threshold" in state else cc.threshold
    )
    cc.load_state_dict(ours)
    return cc.to(device) if device else cc


def to_dictionary_learning(cc: CrossCoder) -> dict[str, torch.Tensor]:
    """Our crosscoder as a dictionary_learning state dict (for their ``BatchTopKCrossCoder`` / ``CrossCoder``)."""
    out = {theirs: getattr(cc, ours).detach().cpu().clone() for theirs, ours in _KEYS.items()}
    out["code_normalization_id"] = torch.tensor(CROSSCODER_NORMALIZATION_ID)
    if cc.cfg.kind == "batchtopk":
        out["threshold"] = cc.threshold.detach().cpu().float().clone()
        out["k"] = torch.tensor(cc.cfg.k, dtype=torch.int)
    return out
