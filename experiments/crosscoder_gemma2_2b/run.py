"""Crosscoder diffing of Gemma-2-2b vs Gemma-2-2b-it (Minder et al. 2025, arXiv 2504.02922).

Pipeline, the same for the paper-scale run and the ``--dry-run``: harvest layer 13
of both models over a 50/50 mix of web text and chat transcripts into an activation
store; verify its checksums; train a BatchTopK crosscoder (73,728 latents, k = 100)
and an L1 crosscoder for comparison; analyse each (relative decoder norm classes,
Latent Scaling, top contexts, logit lens, causal KL check on chat transcripts).
``results.json`` puts the measured figures next to the paper's.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python experiments/NAME/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common import synthetic_corpus, timed, tiny_pair  # noqa: E402

NAME = "crosscoder_gemma2_2b"


def _chat_transcripts(data: list[str], n: int) -> list:
    """The first ``n`` chat transcripts among the data specs (for the causal check)."""
    from diffing.data.corpus import resolve_all

    out = []
    for src in resolve_all(data):
        if src.kind != "chat":
            continue
        for doc in src.documents():
            out.append(doc)
            if len(out) >= n:
                return out
    return out


def run(cfg: dict, out: Path, *, progress=print) -> dict:
    """Run the pipeline into ``out``; return the figures for ``results.json``."""
    from diffing.crosscoder import (
        AnalysisConfig,
        CrossCoderConfig,
        analyze_crosscoder,
        train_crosscoder,
    )
    from diffing.models import ModelPair
    from diffing.store import ActivationStore
    from diffing.store.harvesting import harvest

    times: dict[str, float] = {}
    m, h = cfg["models"], cfg["harvest"]
    if cfg["dry_run"]:
        base, finetuned = tiny_pair(out / "models", cfg["tiny"])
        data = [str(p) for p in synthetic_corpus(out / "data")]
    else:
        base, finetuned, data = m["base"], m["finetuned"], list(h["data"])
    pair = timed(
        times,
        "load",
        lambda: ModelPair.load(base, finetuned, dtype=m.get("dtype"), device=m.get("device")),
        progress,
    )
    layer = h["layer"]
    store = timed(
        times,
        "harvest",
        lambda: harvest(
            pair, out / "store", layers=[layer], data=data, tokens=h["tokens"], seq_len=h["seq_len"],
            batch_size=h["batch_size"], dtype=h["dtype"], chat_fraction=h["chat_fraction"], progress=bool(progress),
        ),
        progress,
    )  # fmt: skip
    timed(times, "verify", lambda: ActivationStore.open(out / "store").verify(), progress)
    a = cfg["analysis"]
    transcripts = _chat_transcripts(data, a["causal_transcripts"])
    device = "cuda" if str(pair.base.device).startswith("cuda") else "cpu"
    acfg = AnalysisConfig(max_tokens=a["max_tokens"])
    results: dict = {
        "store": {"tokens": store.n_tokens, "layer": layer, "d_model": store.d_model},
        "crosscoders": {},
    }
    for kind, table in cfg["crosscoder"].items():
        ccfg = CrossCoderConfig(**{**table, "layer": layer})
        trained = timed(
            times, f"train_{kind}",
            lambda ccfg=ccfg, kind=kind: train_crosscoder(store, ccfg, out / f"crosscoder-{kind}", device=device, progress=bool(progress), resume=True),
            progress,
        )  # fmt: skip
        analysis = timed(
            times, f"analyze_{kind}",
            lambda trained=trained, kind=kind: analyze_crosscoder(
                trained.crosscoder, store, out / f"analysis-{kind}", pair=pair, top=a["top"],
                causal_texts=transcripts or None, config=acfg,
            ),
            progress,
        )  # fmt: skip
        fvu = trained.metrics.get("fvu", [float("nan")] * 2)
        results["crosscoders"][kind] = {
            "variance_explained_base": 1 - fvu[0],
            "variance_explained_chat": 1 - fvu[1],
            "dead_fraction": trained.metrics.get("dead_frac"),
            "l0": trained.metrics.get("l0"),
            "steps": trained.metrics.get("steps"),
            "classes": analysis.summary.get("classes"),
            "latent_scaling": analysis.summary.get("latent_scaling"),
            "causal": (analysis.summary.get("causal") or {}).get("fraction_closed"),
            "files": str(analysis.out_dir),
        }
    results["paper"] = cfg.get("paper", {})
    results["seconds"] = times
    return results


if __name__ == "__main__":
    from experiments.run import script_main

    sys.exit(script_main(NAME))
