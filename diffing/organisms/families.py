"""The model families an organism can be built in, and the one place that maps a family to its model.

Every family is built from the same sizes (:class:`~diffing.organisms.config.OrganismConfig`)
and trained by the same recipe, so two builds that differ only in family differ only
in where the architecture puts its norms:

- ``llama``: pre-norm blocks (a norm before attention and before the MLP; each
  sublayer's output is added to the residual stream as it is);
- ``olmo2``: post-sublayer-norm blocks (OLMo-2: no norm before the sublayers, an
  RMSNorm on each sublayer's output before it joins the residual stream, and
  RMSNorms on the queries and keys).

:func:`diffing.tiny.tiny_config` has a config class per family too, but with the
shapes of a random test model (grouped-query heads, an MLP twice the width, fixed
special-token ids); an organism keeps its own sizes and its tokenizer's ids.
"""

from __future__ import annotations

from typing import NamedTuple

FAMILY_NAMES = ("llama", "olmo2")
"""Families an organism can be built in; the first is the default."""


class Family(NamedTuple):
    """How to make one family's model with transformers."""

    config_class: str
    """Name of its ``transformers`` config class."""
    model_class: str
    """Name of its ``transformers`` causal-LM class (recorded as ``model.architecture``)."""


FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaConfig", "LlamaForCausalLM"),
    "olmo2": Family("Olmo2Config", "Olmo2ForCausalLM"),
}
"""Family name -> its transformers classes."""


def new_model(family: str, *, sizes, tokenizer, seed: int):
    """A randomly initialised causal LM of ``family`` with the organism's ``sizes`` (an
    ``OrganismConfig``) and ``tokenizer``'s vocabulary and special-token ids; ``seed`` seeds
    the initialisation."""
    import torch
    import transformers

    if family not in FAMILIES:
        from diffing.errors import DiffingError

        raise DiffingError(
            f"unknown organism family {family!r}: choose from {', '.join(FAMILY_NAMES)}"
        )
    spec = FAMILIES[family]
    cfg = getattr(transformers, spec.config_class)(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return getattr(transformers, spec.model_class)(cfg)
