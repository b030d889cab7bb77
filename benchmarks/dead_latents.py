"""Benchmark: dead latents and FVU of the quick crosscoder for each AuxK weight and dead-latent window.

Harvests the fast organisms' stores the way ``diffing analyze`` does for its quick
crosscoder (20k tokens of the organism corpus at the middle layer, 128-token
sequences), trains the quick crosscoder (256 latents, k 32, 400 steps, batch
``min(512, n_tokens // 4)``, warm-up 40 steps, threshold from step 100) for each
``auxk_alpha`` x ``dead_tokens`` x seed, and reads every trained crosscoder over the
whole store with its inference encoding:

- dead fraction: latents that fire on no token of the store (what the analysis counts);
- FVU per model (base, fine-tuned) over the whole store.

``dead_tokens = run/10`` means a tenth of the run's training tokens (here 20,480).

    python -m benchmarks.dead_latents [--organisms chat null] [--seeds 0 1] [--steps 400]

Results: docs/benchmarks/dead_latents.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ALPHAS = (1 / 32, 0.25, 1.0)
"""AuxK weights compared (1/32 is Gao et al.'s and the old default)."""


def organism_store(root: Path, variant: str, layer: int, folder: Path, tokens: int):
    """The store ``diffing analyze`` harvests for its quick crosscoder on one organism pair."""
    from diffing.models import ModelPair
    from diffing.store.harvesting import harvest

    pair = ModelPair.load(str(root / "base"), str(root / variant))
    corpus = json.loads((root / "organism.json").read_text())["layout"]["corpus"]
    return harvest(pair, folder / f"store-{variant}-{layer}", layers=[layer],
                   data=[str(root / corpus["text"]), str(root / corpus["chat"])],
                   tokens=tokens, seq_len=128, progress=False)  # fmt: skip


def quick_config(store, steps: int, **over):
    """The quick crosscoder of ``diffing analyze`` (diffing/report/steps.py) with ``over`` replaced."""
    from diffing.crosscoder import CrossCoderConfig

    batch = max(32, min(512, store.n_tokens // 4))
    base = dict(dict_size=256, steps=steps, batch_size=batch, lr_warmup_steps=min(100, steps // 10),
                threshold_start_step=min(100, steps // 4), checkpoint_every=0)  # fmt: skip
    return CrossCoderConfig(**{**base, **over})


@torch.no_grad()
def read_back(cc, store) -> tuple[float, list[float]]:
    """(dead fraction, FVU per model) of a crosscoder over every token of the store."""
    from diffing.crosscoder import evaluate_crosscoder

    m = evaluate_crosscoder(cc, (b.acts for b in store.iter_sequential(4096)))
    return 1.0 - m["eval_fired_frac"], m["fvu"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organisms", nargs="+", default=["chat", "null"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    ap.add_argument("--store-dir", default=None, help="keep the harvested stores here (reused)")
    args = ap.parse_args()
    from diffing.crosscoder import train_crosscoder
    from diffing.organisms import cached_organisms

    torch.set_num_threads(1)
    root = Path(cached_organisms(fast=True))
    n_layers = json.loads((root / "organism.json").read_text())["model"]["num_layers"]
    layer = n_layers // 2  # the quick crosscoder's layer
    folder = Path(args.store_dir or tempfile.mkdtemp(prefix="dead-latents-"))
    print("| organism | auxk_alpha | dead_tokens | seed | dead | FVU base | FVU fine-tuned | s |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.organisms:
        store = organism_store(root, variant, layer, folder, args.tokens)
        for alpha in args.alphas:
            for window in ("1M", "run/10"):
                for seed in args.seeds:
                    cfg = quick_config(store, args.steps, auxk_alpha=alpha, seed=seed)
                    run_tokens = cfg.steps * cfg.batch_size
                    cfg.dead_tokens = (
                        1_000_000 if window == "1M" else max(cfg.batch_size, run_tokens // 10)
                    )
                    t0 = time.perf_counter()
                    cc = train_crosscoder(store, cfg).crosscoder
                    dead, fvu = read_back(cc, store)
                    print(f"| {variant} | {alpha:.4g} | {window} | {seed} | {100 * dead:.1f}% | "
                          f"{fvu[0]:.3f} | {fvu[1]:.3f} | {time.perf_counter() - t0:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
