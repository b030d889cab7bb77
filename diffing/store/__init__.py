"""The paired activation store: harvest both models' residual streams to disk, stream them back.

``harvest(pair, out, ...)`` fills a store; ``ActivationStore.open(path)`` reads it
(memory-mapped, shuffled batches, contexts); ``write_store`` fabricates one from
in-memory tensors. Layout: :mod:`diffing.store.format`; docs: docs/store.md.
"""

from __future__ import annotations

from diffing.store.format import FORMAT_VERSION, Manifest, ShardInfo
from diffing.store.reader import ActivationStore, StoreBatch
from diffing.store.writer import write_store

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "Manifest",
    "ShardInfo",
    "StoreBatch",
    "write_store",
]

from diffing.store.harvesting import HarvestConfig, harvest  # noqa: E402

__all__ += ["HarvestConfig", "harvest"]
