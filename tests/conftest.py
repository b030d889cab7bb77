"""Shared fixtures: offline mode, quiet libraries, the built-in organisms, tiny random pairs."""

from __future__ import annotations

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# tiny models run fastest on one thread (measured 3-10x faster than two on 2 busy cores)
torch.set_num_threads(1)

try:  # quieter logs; progress bars off
    import transformers  # noqa: E402

    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def organisms():
    """Folder of the fast organism build (base, chat, quirk, null; see docs/organisms.md).

    Built once per machine under ``$DIFFING_CACHE`` (default ``~/.cache/diffing``) and reused.
    """
    from diffing.organisms import cached_organisms

    return cached_organisms(fast=True)


@pytest.fixture(scope="session")
def tiny_pair_dirs(tmp_path_factory):
    """``(base_dir, finetuned_dir)``: a tiny random Llama and a copy whose layer-1 MLP was perturbed."""
    from diffing.tiny import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("tiny_pair")
    base = build_tiny_model(root / "base", "llama")
    ft = perturb_model(base, root / "ft", modules=["layers.1.mlp.down_proj"], scale=0.5)
    return base, ft


@pytest.fixture(scope="session")
def tiny_pair(tiny_pair_dirs):
    """A loaded :class:`~diffing.models.ModelPair` of :func:`tiny_pair_dirs`."""
    from diffing.models import ModelPair

    return ModelPair.load(str(tiny_pair_dirs[0]), str(tiny_pair_dirs[1]))


class _NoDiffing:
    """A meta-path finder that refuses to import ``diffing``: the NDIF server has no such package."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "diffing" or name.startswith("diffing."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: simulated NDIF server)")
        return None


@pytest.fixture
def server_without_diffing(monkeypatch):
    """Count simulated remote runs; hide ``diffing`` while each one is deserialised."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore
    runs = {"n": 0}

    def hide_all(self):
        hidden = hide(self)
        runs["n"] += 1
        assert "diffing" not in sys.modules
        sys.meta_path.insert(0, _NoDiffing)
        return hidden

    def restore_all(self, hidden):
        sys.meta_path.remove(_NoDiffing)
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", hide_all)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", restore_all)
    return runs
