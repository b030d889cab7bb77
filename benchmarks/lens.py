"""Benchmark: activation-difference PCA and diff mining vs one paired forward over the same tokens.

Target: each method over the tokens costs at most 3x one plain Hugging Face forward of each
model (logits included) over those tokens. PCA traces both models once (stopping at its layer),
adds ``d^2`` float64 products per position and reads its directions in a second pass over the
differences kept in memory; mining needs the logits of both models, a log-softmax and a top-k
per position, then a small NMF. Runs are timed side by side in one process and alternated,
so machine noise hits all alike; the ratios are of the medians.

    python -m benchmarks.lens [--pair quirk] [--root DIR] [--tokens 20000] [--repeats 3] [--batch-size 8]
    python -m benchmarks.lens --tiny --hidden 512 [--tokens 20000]

``--pair`` names an organism variant of the fast organism build (plain-text corpus);
``--tiny`` uses a tiny random Llama pair of width ``--hidden`` instead (no organisms needed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _texts(root: Path | None) -> list[str]:
    """The organism's plain-text corpus, else synthetic sentences."""
    if root is not None:
        from diffing.data.corpus import read_documents

        return read_documents([root / "corpus" / "text.txt"]).texts
    words = "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token".split()
    gen = torch.Generator().manual_seed(0)
    return [
        " ".join(words[i] for i in torch.randint(len(words), (120,), generator=gen))
        for _ in range(2000)
    ]


def _baseline(pair, docs, batch_size: int) -> float:
    """Seconds for one plain HF forward (with logits) of each model over the same batches."""
    from diffing.lens.data import batches

    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in batches(docs, batch_size, pair.tokenizer):
            for which in ("base", "finetuned"):
                _ = pair.hf(which)(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).logits
    return time.perf_counter() - t0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="quirk", help="organism variant compared with the base")
    ap.add_argument("--root", default=None, help="organism build (default: the cached fast build)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama pair instead")
    ap.add_argument("--hidden", type=int, default=256, help="--tiny: hidden size")
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from diffing.lens import MiningConfig, PCAConfig, diff_mining, diff_pca
    from diffing.lens.data import encode_corpus
    from diffing.models import ModelPair

    if args.tiny:
        from diffing.tiny import build_tiny_model, perturb_model

        tmp = Path(tempfile.mkdtemp())
        base = build_tiny_model(tmp / "base", "llama", hidden=args.hidden, layers=4)
        ft = perturb_model(base, tmp / "ft", scale=0.05)
        pair, root = ModelPair.load(str(base), str(ft)), None
        name = f"tiny llama (hidden {args.hidden}, 4 layers)"
    else:
        from diffing.organisms import cached_organisms

        root = Path(args.root) if args.root else Path(cached_organisms(fast=True))
        pair = ModelPair.load(str(root / "base"), str(root / args.pair))
        name = f"organism base vs {args.pair}"
    texts = _texts(root)
    common = dict(tokens=args.tokens, batch_size=args.batch_size, max_length=args.max_length)
    docs = encode_corpus(pair.tokenizer, texts, None, args.tokens, args.max_length)
    n = sum(len(e.input_ids) for e in docs)
    print(
        f"pair: {name}; layers {pair.n_layers}, d_model {pair.d_model}, vocab {len(pair.tokenizer)}"
    )
    print(f"tokens: {n} in {len(docs)} documents, batch {args.batch_size}")
    runs = {
        "both models once": lambda: _baseline(pair, docs, args.batch_size),
        "lens pca": lambda: _timed(lambda: diff_pca(pair, texts=texts, config=PCAConfig(**common))),
        "lens mine": lambda: _timed(
            lambda: diff_mining(pair, texts=texts, config=MiningConfig(**common))
        ),
    }
    runs["both models once"]()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            times[key].append(run())
    base = statistics.median(times["both models once"])
    for key, ts in times.items():
        ratio = statistics.median(ts) / base
        print(f"{key:>18}: {', '.join(f'{t:.2f}' for t in ts)} s; median ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
