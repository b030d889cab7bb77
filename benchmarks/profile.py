"""Profile one harvest or one ``compute_stats`` run (cProfile, main thread) next to bare forwards.

The pair is a random-init Llama large enough that the forward dominates on a CPU (default
hidden 768, 6 layers, vocab 32000; ``benchmarks/pairs.py``), so what shows up besides
``linear`` is overhead the pipeline should hide. Prints one JSON line (wall time, tokens/s,
bare forwards of both models in tokens/s before and after, ratio) and the top entries by
internal time. Results: docs/benchmarks/harvest-pipeline.md and docs/benchmarks/stats.md.

    python -m benchmarks.profile harvest [--tokens 8192] [--pack]
    python -m benchmarks.profile stats [--tokens 4096]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import torch


def _bare(pair, tokens: int, seq: int) -> float:
    """Tokens/s of both models' full forwards (logits included) on unpadded ``[8, seq]`` batches."""
    ids = torch.randint(3, 300, (8, seq))
    t0, n = time.perf_counter(), 0
    with torch.no_grad():
        while n < tokens:
            for which in ("base", "finetuned"):
                pair.hf(which)(input_ids=ids, use_cache=False)
            n += ids.numel()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["harvest", "stats"])
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--pack", action="store_true", help="harvest: pack plain text")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from benchmarks.pairs import build_llama_pair, write_corpus
    from diffing.models import ModelPair

    root = Path(tempfile.mkdtemp())
    base, ft = build_llama_pair(root, hidden=args.hidden, layers=args.layers, intermediate=2048)
    data = write_corpus(root / "text.txt", 2000)
    pair = ModelPair.load(base, ft)
    tokens = args.tokens or (8192 if args.what == "harvest" else 4096)
    if args.what == "harvest":
        from diffing.store import harvest

        kw = dict(layers=[args.layers // 2], data=[str(data)], seq_len=256, batch_size=8,
                  sort_batches=1, shard_tokens=2048, progress=False)  # fmt: skip
        if args.pack:  # only when asked, so the script also profiles trees from before packing
            kw["pack"] = True
        harvest(pair, root / "warm", tokens=1024, **kw)
        run = lambda: harvest(pair, root / "run", tokens=tokens, **kw)  # noqa: E731
        seq = 256
    else:
        from diffing.stats import StatsConfig, compute_stats

        texts = data.read_text().splitlines()
        compute_stats(pair, texts=texts[:8], tokens=256,
                      config=StatsConfig(steer_prompts=0, weights=False))  # fmt: skip
        run = lambda: compute_stats(pair, texts=texts, tokens=tokens, config=StatsConfig())  # noqa: E731
        seq = 128
    before = _bare(pair, tokens, seq)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run()
    prof.disable()
    wall = time.perf_counter() - t0
    after = _bare(pair, tokens, seq)
    bare = (before + after) / 2
    summary = {"what": args.what, "tokens": tokens, "wall_s": round(wall, 2),
               "tok_s": round(tokens / wall), "bare_tok_s": [round(before), round(after)],
               "ratio_vs_bare": round(tokens / wall / bare, 2)}  # fmt: skip
    print(json.dumps(summary))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    print(buf.getvalue())


if __name__ == "__main__":
    main()
