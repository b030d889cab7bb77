"""JSON (``pca.json``, ``mining.json``), report sections and the files both lens methods write.

Everything is strict JSON (no NaN or infinity: non-finite numbers become null); the PCA
directions go to ``pca.safetensors`` beside the JSON so they can be reused as vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from diffing.io import write_json
from diffing.lens.mining import MiningResult
from diffing.lens.pca import PCAResult

SECTION_TOKENS = 10
"""Tokens per list in a report section."""


def finite(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def pca_json(result: PCAResult) -> dict:
    """``pca.json``: per layer the variance spectrum and every direction's readout (fields in docs/lens.md)."""
    layers = []
    for lay in result.layers:
        dec = lay.decomposition
        mean_norm = float(dec.mean.norm())
        layers.append(
            {
                "layer": lay.layer,
                "positions": dec.count,
                "mean_diff_norm": mean_norm,
                "mean_norm_finetuned": lay.mean_norm_finetuned,
                "mean_share": dec.mean_share,
                "uncentred_first_ratio": dec.first_ratio,
                "total_variance": dec.total_variance,
                "explained_variance": dec.variance.tolist(),
                "explained_variance_ratio": dec.variance_ratio.tolist(),
                "directions": [
                    {
                        "name": d.name,
                        "explained": d.explained,
                        "cosine_with_mean": float(d.vector @ dec.mean) / mean_norm
                        if mean_norm > 0
                        else 0.0,
                        "promoted": d.promoted,
                        "promoted_negative": d.promoted_negative,
                        "top_contexts": d.top_contexts,
                        "bottom_contexts": d.bottom_contexts,
                        "by_role": d.by_role,
                    }
                    for d in lay.directions
                ],
            }
        )
    return finite(
        {
            "method": "activation-difference PCA",
            "config": asdict(result.config),
            "tokens": result.tokens,
            "positions": result.positions,
            "documents": result.documents,
            "layers": layers,
        }
    )


def mining_json(result: MiningResult) -> dict:
    """``mining.json``: the ranked tokens and the NMF clusters (fields in docs/lens.md)."""
    return finite(
        {
            "method": "diff mining",
            "config": asdict(result.config),
            "tokens": result.tokens,
            "positions": result.positions,
            "documents": result.documents,
            "top_tokens": result.top_tokens,
            "clusters": result.clusters,
            "nmf_relative_error": result.nmf_error,
        }
    )


def _tokens(rows: list[dict]) -> list[str]:
    return [r["token"] for r in rows[:SECTION_TOKENS]]


def pca_section(data: PCAResult | dict) -> dict:
    """A compact summary for ``report.json``: per layer the explained variance ratios, the share of the
    mean, and the top logit-lens tokens (both signs) of the uncentred direction and of each component."""
    data = pca_json(data) if isinstance(data, PCAResult) else data
    return {
        "layers": [
            {
                "layer": lay["layer"],
                "mean_share": lay["mean_share"],
                "explained_variance_ratio": lay["explained_variance_ratio"],
                "directions": [
                    {
                        "name": d["name"],
                        "explained": d["explained"],
                        "promoted": _tokens(d["promoted"]),
                        "promoted_negative": _tokens(d["promoted_negative"]),
                        "top_context": (d["top_contexts"] or [None])[0],
                    }
                    for d in lay["directions"]
                ],
            }
            for lay in data["layers"]
        ]
    }


def mining_section(data: MiningResult | dict) -> dict:
    """A compact summary for ``report.json``: the top raised tokens and each cluster's tokens."""
    data = mining_json(data) if isinstance(data, MiningResult) else data
    return {
        "positions": data["positions"],
        "top_tokens": [
            {k: t[k] for k in ("token", "id", "count", "mean_diff")}
            for t in data["top_tokens"][:SECTION_TOKENS]
        ],
        "clusters": [
            {"positions": c["positions"], "tokens": _tokens(c["tokens"])} for c in data["clusters"]
        ],
    }


def _write_with_figures(path: Path, data: dict, pair_info: dict | None, figures) -> Path:
    """Write ``data`` (led by ``pair_info`` when given) with the figures ``figures(data, folder)`` draws."""
    if pair_info:
        data = {"pair": pair_info, **data}
    data["figures"] = figures(data, path.parent)
    write_json(path, data)
    return path


def save_pca(result: PCAResult, out_dir: str | Path, *, pair_info: dict | None = None) -> Path:
    """Write ``pca.json``, ``pca.safetensors`` (``layer{L}.mean``, ``.uncentred``, ``.components``) and the
    figures into ``out_dir``; returns the JSON path."""
    from safetensors.torch import save_file

    from diffing.lens.figures import pca_figures

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for lay in result.layers:
        dec = lay.decomposition
        tensors[f"layer{lay.layer}.mean"] = dec.mean.contiguous()
        tensors[f"layer{lay.layer}.uncentred"] = dec.first.contiguous()
        tensors[f"layer{lay.layer}.components"] = dec.components.contiguous()
    save_file(tensors, str(out / "pca.safetensors"))
    return _write_with_figures(out / "pca.json", pca_json(result), pair_info, pca_figures)


def save_mining(
    result: MiningResult, out_dir: str | Path, *, pair_info: dict | None = None
) -> Path:
    """Write ``mining.json`` and its figure into ``out_dir``; returns the JSON path."""
    from diffing.lens.figures import mining_figures

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return _write_with_figures(out / "mining.json", mining_json(result), pair_info, mining_figures)


def pair_info(pair) -> dict:
    """The pair's names and shape, as recorded at the top of both JSON files."""
    return {
        "base": pair.base_ref,
        "finetuned": pair.finetuned_ref,
        "family": pair.config.model_type,
        "n_layers": pair.n_layers,
        "d_model": pair.d_model,
    }
