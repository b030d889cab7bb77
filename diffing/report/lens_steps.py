"""The corpus-lens steps of ``analyze``: activation-difference PCA and diff mining (``diffing.lens``).

Both read the run's corpus (the statistics' texts and chats) at half the statistics'
token budget each, so the two together cost about one more statistics pass; both write
their own files (``pca.json`` + ``pca.safetensors``, ``mining.json``, figures) into their
folder and a compact section (``diffing.lens.output``) into the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffing.report.config import AnalyzeConfig
from diffing.report.inputs import RunData

Progress = Callable[[str], None]


def _tokens(data: RunData) -> int:
    return max(1_000, data.budget.tokens // 2)


def pca(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
) -> dict:
    """``pca``: principal directions of ``x_ft - x_base`` at the ADL's layer (``--adl-layer``, else the middle)."""
    from diffing.lens.config import PCAConfig
    from diffing.lens.output import pair_info, pca_section, save_pca
    from diffing.lens.pca import diff_pca

    corpus = data.corpus()
    layers = [cfg.adl_layer] if cfg.adl_layer is not None else None
    pcfg = PCAConfig(tokens=_tokens(data), layers=layers)
    progress(f"pca: {pcfg.tokens} tokens, layer {layers[0] if layers else 'middle'}")
    res = diff_pca(pair, texts=corpus.texts, chats=corpus.chats, config=pcfg)
    save_pca(res, out, pair_info=pair_info(pair))
    sec = pca_section(res)
    sec.update(tokens=res.tokens, positions=res.positions, documents=res.documents)
    return {"pca": sec}


def mining(
    pair, cfg: AnalyzeConfig, out: Path, progress: Progress, data: RunData, report: dict
) -> dict:
    """``mining``: the tokens whose log-probability the fine-tune raises most often, and their NMF clusters."""
    from diffing.lens.config import MiningConfig
    from diffing.lens.mining import diff_mining
    from diffing.lens.output import mining_section, pair_info, save_mining

    corpus = data.corpus()
    mcfg = MiningConfig(tokens=_tokens(data), seed=cfg.seed)
    progress(f"mining: {mcfg.tokens} tokens")
    res = diff_mining(pair, texts=corpus.texts, chats=corpus.chats, config=mcfg)
    save_mining(res, out, pair_info=pair_info(pair))
    sec = mining_section(res)
    sec.update(tokens=res.tokens, documents=res.documents, nmf_relative_error=res.nmf_error)
    return {"mining": sec}
