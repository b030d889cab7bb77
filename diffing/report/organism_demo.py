"""``demo``: build (or reuse) the built-in organism pair and write the diff report of base vs ``chat``.

This is what ``make demo`` runs. The organisms are built once per machine by
``diffing.organisms.cached_organisms`` (about 8 minutes on 2 CPU cores for the full
build) and the analysis is the plain ``diffing analyze BASE CHAT`` with its default sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffing.report.config import AnalyzeConfig
from diffing.report.pipeline import Report, analyze, default_progress

DEMO_VARIANT = "chat"
"""Which organism the demo compares with the base (the one with a refusal behaviour)."""


def demo_config(root: Path, variant: str = DEMO_VARIANT) -> AnalyzeConfig:
    """The default ``analyze`` config for ``base`` vs ``variant`` of the organism build at ``root``.

    Nothing demo-specific: the pair's own prompt sets and corpora are found by
    ``analyze`` itself (they sit next to ``organism.json``, as any pair's may), and
    the sizes are the ones ``analyze`` picks for the model and the device.
    """
    return AnalyzeConfig(base=str(root / "base"), finetuned=str(root / variant))


def demo(
    out_dir: str | Path = "demo-report",
    *,
    fast: bool = False,
    variant: str = DEMO_VARIANT,
    config: AnalyzeConfig | None = None,
    progress: Callable[[str], None] | None = default_progress,
) -> Report:
    """Build or reuse the organisms (``fast`` selects the small test build) and analyse base vs ``variant``."""
    from diffing.organisms import cached_organisms

    if progress:
        progress(
            "organisms: building or reusing the cached build (the first build takes several minutes)"
        )
    root = Path(cached_organisms(fast=fast, progress=progress is not None))  # a bar per variant
    cfg = config or demo_config(root, variant)
    cfg.base, cfg.finetuned = str(root / "base"), str(root / variant)
    return analyze(out_dir=out_dir, config=cfg, progress=progress)
