"""The paired activation store: harvest both models' residual streams to disk, stream them back.

``harvest(pair, out, ...)`` fills a store; ``ActivationStore.open(path)`` reads it
(memory-mapped, shuffled batches, contexts); ``write_store`` fabricates one from
in-memory tensors. Layout: :mod:`diffing.store.format`; docs: docs/store.md.
"""

from __future__ import annotations

from diffing.lazy import lazy_exports
from diffing.store.config import HarvestConfig
from diffing.store.format import FORMAT_VERSION, Manifest, ShardInfo

# Names from modules that import torch load on first use (the CLI reads the config only).
_EXPORTS = {
    "ActivationStore": "diffing.store.reader",
    "StoreBatch": "diffing.store.reader",
    "write_store": "diffing.store.writer",
    "harvest": "diffing.store.harvesting",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "HarvestConfig",
    "Manifest",
    "ShardInfo",
    "StoreBatch",
    "harvest",
    "write_store",
]
