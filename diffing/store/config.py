"""The settings of a harvest (no torch here: the command line builds its options from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from diffing.configs import limits, validate
from diffing.store.format import FORMAT_VERSION


@dataclass
class HarvestConfig:
    """The settings of a harvest; all but ``tokens`` must match for a rerun to resume."""

    layers: list[int]
    """Layers to store (index k = output of decoder block k)."""
    data: list[str]
    """Data specs (files, folders, ``hf:NAME[:split]``, ``organism:NAME``)."""
    tokens: int = field(metadata=limits(gt=0))
    """Model-input tokens to harvest (the store holds slightly fewer after dropping BOS/outliers)."""
    seq_len: int = field(default=1024, metadata=limits(ge=2))
    """Longest sequence fed to the models; longer texts are cut, chats truncated."""
    batch_size: int = field(default=8, metadata=limits(gt=0))
    """Sequences per forward pass."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Storage dtype of activations: float32, bfloat16 or float16."""
    chat_fraction: float = field(default=0.5, metadata=limits(ge=0, le=1))
    """Share of tokens taken from chat data when both kinds are given."""
    drop_bos: bool = True
    """Drop position 0 of every sequence (BOS / attention sink)."""
    drop_outliers: bool = True
    """Drop positions whose norm exceeds ``outlier_factor`` x the sequence's median norm in either model."""
    outlier_factor: float = field(default=10.0, metadata=limits(gt=0))
    """Multiple of the median norm above which a position counts as an outlier."""
    shard_tokens: int = field(default=0, metadata=limits(ge=0))
    """Kept tokens per shard (0: about 128 MiB of activations per shard)."""
    sort_batches: int = field(default=8, metadata=limits(gt=0))
    """Batches whose sequences are sorted by length together (less padding); shards end on these groups."""
    world_size: int = field(default=1, metadata=limits(gt=0))
    """Processes the data is split across."""
    pack: bool = False
    """Concatenate plain-text documents (EOS-separated) into full ``seq_len`` sequences: no padding mask."""

    def __post_init__(self) -> None:
        validate(self)

    def resume_key(self, models: list[dict]) -> dict:
        """What must match between runs for one to continue the other."""
        key = {k: v for k, v in asdict(self).items() if k != "tokens"}
        if not self.pack:  # stores begun before packing existed resume as before
            del key["pack"]
        key.update(
            models=[{"ref": m["ref"], "hash": m["hash"]} for m in models],
            format_version=FORMAT_VERSION,
        )
        return key
