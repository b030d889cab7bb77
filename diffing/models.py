"""ModelPair: a base checkpoint and its fine-tuned version, both wrapped by nnsight.

The fine-tuned side is a hub id, a local folder, or a PEFT adapter applied to the
base. Compatibility (same tokenizer, same family and shapes) is checked at load
time, because every method downstream compares the two models token by token.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffing.arch import ArchSpec, arch_for, d_model, get_module, num_layers
from diffing.errors import DiffingError
from diffing.integrity import check_adapter_base, check_finite
from diffing.loading import (
    check_folder,
    is_adapter,
    load_causal_lm,
    load_tokenizer,
    looks_local,
    read_adapter_config,
)
from diffing.remote import set_remote


@dataclass
class AdapterInfo:
    """A LoRA adapter kept unmerged, so its weight delta ``scaling * B @ A`` is exact."""

    path: str
    """Folder the adapter was loaded from."""
    config: dict
    """Its ``adapter_config.json``."""
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)
    """Module name (as in the merged model) -> (A ``[r, in]``, B ``[out, r]``, scaling)."""

    def delta(self, module: str) -> torch.Tensor:
        """Exact weight change of ``module``: ``scaling * B @ A`` (``[out, in]``, as ``nn.Linear`` stores it)."""
        a, b, scaling = self.factors[module]
        delta = scaling * (b.float() @ a.float())
        return delta.T if self.config.get("fan_in_fan_out") else delta


def _wrap(model: torch.nn.Module, tokenizer):
    """Wrap a loaded HF model in ``nnsight.LanguageModel``."""
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LanguageModel(model, tokenizer=tokenizer)


def _check_hub_ref(ref: str) -> None:
    if looks_local(ref):
        raise DiffingError(
            f"{ref!r} is a local folder; remote execution (NDIF) runs models deployed on its "
            "servers: give their Hugging Face ids, or drop `remote`",
            fields=("remote",),
        )


def _remote_lm(ref: str, tokenizer, trust_remote_code: bool):
    """A config-only (meta-device) ``nnsight.LanguageModel`` of a hub model, for NDIF.

    Its generation config (end-of-turn ids) is read from the hub too when it has one.
    """
    from nnsight import LanguageModel
    from transformers import GenerationConfig

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm = LanguageModel(ref, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise DiffingError(
            f"could not load the config of {ref!r} for remote execution: {str(err).splitlines()[0]}"
        ) from err
    try:
        lm._module.generation_config = GenerationConfig.from_pretrained(ref)
    except (OSError, ValueError):
        pass  # no generation_config.json: generation stops at the tokenizer's EOS
    return lm


def _apply_adapter(
    model: torch.nn.Module, adapter_path: str
) -> tuple[torch.nn.Module, AdapterInfo]:
    """Apply a PEFT adapter, record its exact factors, and return the merged model."""
    from peft import PeftModel

    config = read_adapter_config(adapter_path)
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            peft_model = PeftModel.from_pretrained(model, str(Path(adapter_path).expanduser()))
    except Exception as err:
        raise DiffingError(
            f"could not apply adapter {adapter_path!r} to the base model: {err}"
        ) from err
    info = AdapterInfo(path=str(adapter_path), config=config)
    prefix = "base_model.model."
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            clean = name[len(prefix) :] if name.startswith(prefix) else name
            info.factors[clean] = (
                module.lora_A["default"].weight.detach().clone(),
                module.lora_B["default"].weight.detach().clone(),
                float(module.scaling["default"]),
            )
    return peft_model.merge_and_unload().eval(), info


def _check_tokenizers(tok_b, tok_f, base: str, finetuned: str) -> None:
    vb, vf = tok_b.get_vocab(), tok_f.get_vocab()
    if vb == vf:
        return
    only_b = sorted(set(vb.items()) - set(vf.items()), key=lambda kv: kv[1])
    only_f = sorted(set(vf.items()) - set(vb.items()), key=lambda kv: kv[1])
    example = (only_f or only_b)[0]
    raise DiffingError(
        f"the tokenizers of {base!r} and {finetuned!r} differ ({len(vb)} vs {len(vf)} tokens; "
        f"{len(only_b) + len(only_f)} (token, id) pairs differ, e.g. {example!r}); "
        "a pair must share one vocabulary with the same ids, so both models read the same tokens"
    )


def _check_shapes(cfg_b, cfg_f, base: str, finetuned: str) -> None:
    if cfg_b.model_type != cfg_f.model_type:
        raise DiffingError(
            f"the models differ in architecture ({cfg_b.model_type} vs {cfg_f.model_type}); "
            "pair a model with a fine-tune of that same model"
        )
    for what, fn in (("hidden size", d_model), ("layer count", num_layers)):
        if fn(cfg_b) != fn(cfg_f):
            raise DiffingError(
                f"the models differ in {what} ({base!r}: {fn(cfg_b)}, {finetuned!r}: {fn(cfg_f)}); "
                "pair a model with a fine-tune of that same model"
            )


@dataclass
class ModelPair:
    """Two checkpoints of one model, traced with nnsight, reading one shared tokenizer."""

    base: object
    """The base model as an ``nnsight.LanguageModel``."""
    finetuned: object
    """The fine-tuned model as an ``nnsight.LanguageModel`` (adapters merged)."""
    tokenizer: object
    """The shared tokenizer; its chat template is the fine-tuned model's when it has one."""
    arch: ArchSpec
    """Where layers, norms and projections live in this family."""
    base_ref: str
    """How the base was named (hub id or folder)."""
    finetuned_ref: str
    """How the fine-tuned model was named (hub id, folder, or adapter folder)."""
    adapter: AdapterInfo | None = None
    """The unmerged adapter when the fine-tuned side came from one."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know about the pair that are not errors."""
    remote: bool | str = False
    """nnsight remote execution of traces: False (here), True (NDIF; no local weights), "local" (simulated)."""

    @classmethod
    def load(
        cls,
        base: str,
        finetuned: str | None = None,
        *,
        adapter: str | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        remote: bool | str = False,
        allow_nonfinite: bool = False,
    ) -> ModelPair:
        """Load ``base`` and ``finetuned`` (hub ids or folders; ``finetuned`` may be an adapter folder).

        ``adapter`` applies a PEFT adapter on top of ``finetuned`` (or of ``base`` when
        ``finetuned`` is None). ``device="auto"`` spreads large models with ``device_map="auto"``.
        ``remote=True`` traces both models on NDIF (nnsight remote execution): only their configs
        and the tokenizer are loaded here, so only tracing (``harvest``) works on such a pair;
        ``remote="local"`` loads the weights and runs each trace through the same serialisation.
        Loaded weights are checked for NaN/inf (DiffingError naming the model and parameter;
        ``allow_nonfinite=True`` only warns). An adapter whose recorded base differs from the
        model it is applied to gives a warning (in ``notes`` too), or a DiffingError when both
        are local folders with different weights.
        """
        if finetuned is None and adapter is None:
            raise DiffingError("give a fine-tuned model, an adapter, or both")
        if remote not in (False, True, "local"):
            raise DiffingError(f"remote must be False, True (NDIF) or 'local', got {remote!r}")
        if remote is True:
            return cls._load_remote(base, finetuned, adapter, trust_remote_code)
        if finetuned is not None and is_adapter(finetuned):
            finetuned, adapter = (None, str(finetuned)) if adapter is None else (finetuned, adapter)
        for ref in (base, finetuned):  # fail fast, before any loading, on unusable folders
            if ref is not None and looks_local(ref):
                check_folder(ref, allow_pickle=allow_pickle)
        notes = []
        if adapter is not None:
            check_folder(adapter, kind="adapter")
            mismatch = check_adapter_base(
                adapter, read_adapter_config(adapter), finetuned if finetuned is not None else base
            )
            if mismatch:
                warnings.warn(mismatch, stacklevel=2)
                notes.append(mismatch)
        opts = dict(
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        tok_b = load_tokenizer(base, trust_remote_code=trust_remote_code)
        hf_b = load_causal_lm(base, **opts)
        check_finite(hf_b, str(base), allow_nonfinite=allow_nonfinite)
        ft_source = finetuned if finetuned is not None else base
        tok_f = (
            load_tokenizer(ft_source, trust_remote_code=trust_remote_code) if finetuned else tok_b
        )
        hf_f = load_causal_lm(ft_source, **opts)
        info = None
        ft_ref = str(finetuned) if finetuned is not None else str(adapter)
        if adapter is not None:
            hf_f, info = _apply_adapter(hf_f, adapter)
            if (Path(adapter).expanduser() / "tokenizer_config.json").is_file():
                tok_f = load_tokenizer(adapter)
        check_finite(hf_f, ft_ref, allow_nonfinite=allow_nonfinite)
        _check_shapes(hf_b.config, hf_f.config, str(base), ft_ref)
        arch = arch_for(hf_b.config)
        _check_tokenizers(tok_b, tok_f, str(base), ft_ref)
        tokenizer = tok_f
        if getattr(tok_f, "chat_template", None) and not getattr(tok_b, "chat_template", None):
            notes.append(
                "the base tokenizer has no chat template; both models use the fine-tuned model's"
            )
        elif not getattr(tok_f, "chat_template", None) and getattr(tok_b, "chat_template", None):
            tokenizer = tok_b
            notes.append(
                "the fine-tuned tokenizer has no chat template; both models use the base model's"
            )
        elif not getattr(tok_f, "chat_template", None):
            notes.append(
                "neither tokenizer has a chat template; chat data needs an explicit template"
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(
            base=set_remote(_wrap(hf_b, tokenizer), remote),
            finetuned=set_remote(_wrap(hf_f, tokenizer), remote),
            tokenizer=tokenizer,
            arch=arch,
            base_ref=str(base),
            finetuned_ref=ft_ref,
            adapter=info,
            notes=notes,
            remote=remote,
        )

    @classmethod
    def _load_remote(cls, base, finetuned, adapter, trust_remote_code: bool) -> ModelPair:
        """Both models as config-only nnsight models whose traces run on NDIF."""
        if adapter is not None or finetuned is None:
            raise DiffingError(
                "remote execution (NDIF) runs models deployed on its servers; an adapter cannot be "
                "applied there: merge it, push the merged model to the Hub, or run locally"
            )
        for ref in (base, finetuned):
            _check_hub_ref(ref)
        tokenizer = load_tokenizer(finetuned, trust_remote_code=trust_remote_code)
        _check_tokenizers(
            load_tokenizer(base, trust_remote_code=trust_remote_code), tokenizer, base, finetuned
        )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm_b, lm_f = (_remote_lm(ref, tokenizer, trust_remote_code) for ref in (base, finetuned))
        _check_shapes(lm_b._module.config, lm_f._module.config, str(base), str(finetuned))
        return cls(
            base=set_remote(lm_b, True),
            finetuned=set_remote(lm_f, True),
            tokenizer=tokenizer,
            arch=arch_for(lm_b._module.config),
            base_ref=str(base),
            finetuned_ref=str(finetuned),
            remote=True,
        )

    @property
    def config(self):
        """The (shared) transformers config of the base model."""
        return self.base._module.config

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return num_layers(self.config)

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return d_model(self.config)

    @property
    def models(self) -> tuple:
        """``(base, finetuned)`` nnsight models, in the order every paired tensor uses."""
        return (self.base, self.finetuned)

    def hf(self, which: str) -> torch.nn.Module:
        """The underlying Hugging Face module of ``"base"`` or ``"finetuned"``."""
        return {"base": self.base, "finetuned": self.finetuned}[which]._module

    def layer_module(self, which: str, layer: int) -> torch.nn.Module:
        """Decoder block ``layer`` of one model (torch module)."""
        return get_module(self.hf(which), self.arch.layers)[layer]

    def check_layers(self, layers) -> list[int]:
        """Validate layer indices (negative counts from the end) and return them sorted, deduplicated."""
        out = set()
        for layer in layers:
            idx = int(layer) + (self.n_layers if int(layer) < 0 else 0)
            if not 0 <= idx < self.n_layers:
                raise DiffingError(
                    f"layer {layer} is out of range: the model has layers 0..{self.n_layers - 1}"
                )
            out.add(idx)
        if not out:
            raise DiffingError("no layers requested")
        return sorted(out)


def load_model(
    ref: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    remote: bool | str = False,
    allow_nonfinite: bool = False,
):
    """Load one checkpoint as ``(nnsight LanguageModel, tokenizer, ArchSpec)``, for single-model methods.

    Same loading path and checks as :meth:`ModelPair.load`; a missing pad token falls back to EOS.
    ``remote=True`` loads only the config and tokenizer of a hub model that NDIF serves and runs
    every trace there (the refusal pipeline's extraction, selection and evaluation work so;
    anything that reads weights, like exporting an orthogonalised model, does not);
    ``remote="local"`` loads the weights and runs each trace through NDIF's serialisation.
    Non-finite weights raise DiffingError unless ``allow_nonfinite=True``.
    """
    if remote not in (False, True, "local"):
        raise DiffingError(f"remote must be False, True (NDIF) or 'local', got {remote!r}")
    tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if remote is True:
        _check_hub_ref(ref)
        lm = _remote_lm(ref, tokenizer, trust_remote_code)
        return set_remote(lm, True), tokenizer, arch_for(lm._module.config)
    hf = load_causal_lm(
        ref,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    check_finite(hf, str(ref), allow_nonfinite=allow_nonfinite)
    arch = arch_for(hf.config)
    return set_remote(_wrap(hf, tokenizer), remote), tokenizer, arch
