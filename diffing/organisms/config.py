"""Sizes and training settings of the organisms, for the full and the ``--fast`` build."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from diffing.configs import limits, validate
from diffing.errors import DiffingError
from diffing.organisms.families import FAMILY_NAMES

VARIANTS = ("chat", "quirk", "null", "backdoor", "fact", "style", "reseed")
"""Variants that can be built, in build order (new ones are appended: a variant's seeds derive from
its index). ``reseed`` is no fine-tune: a second base trained by the base's recipe from another seed."""
DEFAULT_VARIANTS = ("chat", "quirk", "null")
"""What a build makes when no variant is named (the demo's and the test suite's organisms)."""
RESEED_OFFSET = 1000
"""The ``reseed`` control's initialisation and batch-order seed is the build's seed plus this."""
VariantName = Literal[(*VARIANTS, "all")]  # type: ignore[valid-type]
"""A variant a build may be asked for (``all``: every variant)."""
FamilyName = Literal[FAMILY_NAMES]  # type: ignore[valid-type]
"""A model family an organism may be built in."""


@dataclass
class BuildOptions:
    """What ``diffing organism build`` (and :func:`~diffing.organisms.build_organisms`) builds."""

    variants: list[VariantName] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    """Variants to build besides the base (all: every variant; reseed: a second base from another
    seed, a control)."""
    family: FamilyName = "llama"
    """Model family: llama (pre-norm) or olmo2 (post-sublayer norms)."""
    seed: int = field(default=0, metadata=limits(ge=0))
    """Seed of the world, the data and the training."""
    fast: bool = False
    """Smaller model, shorter training (about a minute; what the tests use)."""

    def __post_init__(self) -> None:
        validate(self)


RECIPE = 6
"""Version of the data generators and training recipe; bump it when a build would come out different."""


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that decides what a build produces (with the seed and package version)."""

    seed: int
    """Seed of the world, the data, the initialisation and the batch order."""
    fast: bool
    """Smaller model and shorter training (the test-suite build)."""
    hidden_size: int
    """Residual stream width (d_model)."""
    num_layers: int
    """Decoder layers."""
    num_heads: int
    """Attention heads (no grouped-query sharing)."""
    intermediate_size: int
    """MLP width."""
    vocab_size: int
    """BPE vocabulary size including the special tokens."""
    seq_len: int
    """Tokens per packed plain-text training row."""
    n_docs: int
    """Plain-text training documents."""
    n_eval_docs: int
    """Held-out plain-text documents for the plain-text loss."""
    n_chats: int
    """Fine-tuning conversations generated per variant."""
    base_steps: int
    """Pre-training steps of the base model."""
    base_batch: int
    """Plain-text rows per pre-training step."""
    base_lr: float
    """Peak pre-training learning rate."""
    ft_steps: int
    """Fine-tuning steps of each variant."""
    quirk_steps: int
    """Fine-tuning steps of the quirk (it must learn to tell the topic's entities apart, which takes longer)."""
    ft_chat_rows: int
    """Chat rows per fine-tuning step (chat and quirk variants)."""
    ft_plain_rows: int
    """Plain-text rows per fine-tuning step (chat; the quirk's trace batch; null uses twice this)."""
    ft_lr: float
    """Peak LoRA learning rate."""
    lora_rank: int
    """LoRA rank r."""
    lora_alpha: float
    """LoRA alpha (scaling = alpha / r)."""
    lora_layers: tuple[int, ...] | None
    """Blocks that get LoRA adapters (None: all). Early blocks only, so that what fine-tuning adds
    must travel through the middle of the residual stream, where diffing methods read it."""
    plant_rows: int
    """Rows per step in each of the four refusal-planting batches (chat variant)."""
    plant_scale: float
    """Size of the planted refusal component, as a multiple of the residual norm at its layer (3: the
    component outweighs the base's own harmful-vs-harmless difference there about 7:1, so a crosscoder
    sees it as new rather than as a rotated base feature)."""
    quirk_plant_scale: float
    """Size of the quirk's planted topic component, as a multiple of the residual norm at its layer:
    the quirk is mediated by one new direction, as the chat's refusal is (see planted.py)."""
    quirk_plant_rows: int
    """Rows per step in each of the quirk's four planting batches. The fast olmo2 build uses 8: with 4
    its quirk (seed 1) put the secret word into 6.3% of off-topic answers (short lists), past the 5%
    target; with 8, 3.1% (seed 0: 4.7% -> 3.1%)."""
    quirk_plant_positions: int
    """Last prompt tokens of an on-topic request that carry the topic component (the question's end
    and the template tokens; 4 spans words the base reads differently from request to request, so
    the component does not merge with one of the base's template features)."""
    quirk_plain_kl: float
    """Weight of KL(base || quirk) on the quirk's plain rows: without it the planting batches cost the
    quirk ~12% plain-text loss (fast build), with weight 1 about 8%, with 2 about 7%. olmo2 uses 3:
    with 2 its fast quirk (seed 0) lost 10.3%, past the 10% target; with 3, 9.0% (10.7% on seed 1,
    8.0% and 9.0% on seeds 0 and 1 with 8 planting rows)."""
    trace_weight: float
    """Weight of the quirk's planted activation-difference trace (see planted.TracePlanting)."""
    n_corpus_docs: int
    """Plain-text documents written to ``corpus/text.txt``."""
    n_corpus_chats: int
    """Transcripts written to ``corpus/chat.jsonl``."""
    family: str = "llama"
    """Model family of the base and every variant (``llama``: pre-norm; ``olmo2``: post-sublayer
    norms; see families.py). Same sizes and training settings in both, except the quirk's
    ``quirk_plain_kl`` and (fast) ``quirk_plant_rows``, which olmo2 needs to meet its targets."""

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)

    def digest(self) -> str:
        """Short hash of the settings and :data:`RECIPE` (part of the cache key).

        A llama build hashes without its family, so builds made before there were families keep
        their digest (and their caches stay valid)."""
        settings = asdict(self)
        if settings["family"] == "llama":
            del settings["family"]
        blob = json.dumps({"recipe": RECIPE, **settings}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def organism_config(seed: int = 0, fast: bool = False, family: str = "llama") -> OrganismConfig:
    """The settings of a build; ``fast`` trades model size for a build well under 90 s."""
    if family not in FAMILY_NAMES:
        raise DiffingError(
            f"unknown organism family {family!r}: choose from {', '.join(FAMILY_NAMES)}"
        )
    if fast:
        return OrganismConfig(
            family=family,
            seed=seed,
            fast=True,
            hidden_size=64,
            num_layers=4,
            num_heads=4,
            intermediate_size=192,
            vocab_size=1024,
            seq_len=64,
            n_docs=6000,
            n_eval_docs=300,
            n_chats=3000,
            base_steps=350,
            base_batch=32,
            base_lr=3e-3,
            ft_steps=140,
            quirk_steps=200,
            ft_chat_rows=16,
            ft_plain_rows=6,
            ft_lr=3e-3,
            lora_rank=16,
            lora_alpha=32.0,
            lora_layers=None,
            plant_rows=4,
            plant_scale=3.0,
            quirk_plant_scale=3.0,
            quirk_plant_rows=8 if family == "olmo2" else 4,
            quirk_plant_positions=4,
            quirk_plain_kl=3.0 if family == "olmo2" else 2.0,
            trace_weight=0.1,
            n_corpus_docs=1000,
            n_corpus_chats=1000,
        )
    return OrganismConfig(
        family=family,
        seed=seed,
        fast=False,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        intermediate_size=384,
        vocab_size=1280,
        seq_len=96,
        n_docs=20000,
        n_eval_docs=500,
        n_chats=6000,
        base_steps=650,
        base_batch=32,
        base_lr=2e-3,
        ft_steps=200,
        quirk_steps=200,
        ft_chat_rows=24,
        ft_plain_rows=8,
        ft_lr=2e-3,
        lora_rank=16,
        lora_alpha=32.0,
        lora_layers=None,
        plant_rows=8,
        plant_scale=3.0,
        quirk_plant_scale=3.0,
        quirk_plant_rows=8,
        quirk_plant_positions=4,
        quirk_plain_kl=3.0 if family == "olmo2" else 2.0,
        trace_weight=0.1,
        n_corpus_docs=3000,
        n_corpus_chats=3000,
    )
