"""Benchmark: all four statistics vs running both models over the same tokens once.

Target: ``compute_stats`` (weights, activations at every layer, per-token KL,
ADL) over 100k tokens takes at most 2x the time of one plain Hugging Face forward of
each model (logits included) over those tokens. The statistics share one traced
forward per model per batch, so the overhead is nnsight's tracing plus the
accumulations. Runs are timed side by side in one process and alternated, so machine
noise hits both alike; the ratio is of the medians.

    python -m benchmarks.stats [--pair quirk] [--root DIR] [--tokens 100000] [--repeats 2] [--batch-size 8]

``--pair`` names an organism variant (chat, quirk, null) of the fast organism build;
``--tiny`` uses a tiny random Llama pair instead (no organisms needed); ``--random
HIDDEN LAYERS`` a random-init Llama with a 32000-token vocabulary (the kind of pair the
GPU benchmark uses; ``benchmarks/gpu.py``). Steering generations are off unless
``--steer`` (they are a fixed few dozen tokens, not per-token work). Each repeat also
times the statistics without the weight part (a fixed cost per pair) to show the
per-token overhead alone.

    python -m benchmarks.stats --random 512 4 --tokens 8192 --repeats 3
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


def _data(root: Path | None) -> tuple[list[str], list]:
    """Plain texts and chats: the organism corpus, else synthetic sentences from the tiny corpus."""
    from diffing.data.corpus import read_documents

    if root is not None:
        files = [p for p in (root / "corpus").glob("*") if p.suffix in (".txt", ".jsonl")]
        docs = read_documents(files)
        return docs.texts, docs.chats
    words = "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token".split()
    gen = torch.Generator().manual_seed(0)
    texts = [
        " ".join(words[i] for i in torch.randint(len(words), (120,), generator=gen))
        for _ in range(2000)
    ]
    chats = [
        [{"role": "user", "content": t[:200]}, {"role": "assistant", "content": t[200:400]}]
        for t in texts[:1000]
    ]
    return texts, chats


def _baseline(pair, text_docs, chat_docs, batch_size: int) -> float:
    """Seconds for one plain HF forward (with logits) of each model over the same batches."""
    from diffing.stats.run import _batches
    from diffing.tokens import pad_id_of

    pad = pad_id_of(pair.tokenizer)
    t0 = time.perf_counter()
    with torch.no_grad():
        for docs in (text_docs, chat_docs):
            for batch in _batches(docs, batch_size, pad):
                for which in ("base", "finetuned"):
                    _ = pair.hf(which)(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask
                    ).logits
    return time.perf_counter() - t0


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pair",
        default="quirk",
        help="organism variant compared with the base (chat, quirk, null)",
    )
    ap.add_argument(
        "--root", default=None, help="organism build folder (default: the cached fast build)"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="use a tiny random Llama pair instead of the organisms"
    )
    ap.add_argument(
        "--random",
        type=int,
        nargs=2,
        metavar=("HIDDEN", "LAYERS"),
        default=None,
        help="a random-init Llama pair of this width and depth (vocab 32000)",
    )
    ap.add_argument("--steer", action="store_true", help="include the steering generations")
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from diffing.models import ModelPair
    from diffing.stats import StatsConfig, compute_stats
    from diffing.stats.run import encode_documents

    if args.random:
        from benchmarks.pairs import build_llama_pair

        tmp = Path(tempfile.mkdtemp())
        hidden, n_layers = args.random
        base, ft = build_llama_pair(tmp, hidden=hidden, layers=n_layers, vocab=32000)
        pair, root = ModelPair.load(base, ft), None
        name = f"random Llama (hidden {hidden}, {n_layers} layers, vocab 32000)"
    elif args.tiny:
        from diffing.tiny import build_tiny_model, perturb_model

        tmp = Path(tempfile.mkdtemp())
        base = build_tiny_model(tmp / "base", "llama", hidden=128, layers=4)
        ft = perturb_model(base, tmp / "ft", scale=0.05)
        pair, root, name = (
            ModelPair.load(str(base), str(ft)),
            None,
            "tiny llama (hidden 128, 4 layers)",
        )
    else:
        from diffing.organisms import cached_organisms

        root = Path(args.root) if args.root else Path(cached_organisms(fast=True))
        pair, name = (
            ModelPair.load(str(root / "base"), str(root / args.pair)),
            f"organism base vs {args.pair}",
        )
    texts, chats = _data(root)
    cfg = StatsConfig(
        batch_size=args.batch_size,
        max_length=args.max_length,
        steer_prompts=3 if args.steer else 0,
    )
    cfg_nw = StatsConfig(**{**cfg.__dict__, "weights": False})
    text_docs, chat_docs = encode_documents(
        pair.tokenizer, texts, chats, args.tokens, args.max_length
    )
    n = sum(len(e.input_ids) for e in text_docs + chat_docs)
    print(
        f"pair: {name}; layers {pair.n_layers}, d_model {pair.d_model}, vocab {len(pair.tokenizer)}"
    )
    print(
        f"tokens: {n} ({len(text_docs)} texts, {len(chat_docs)} chats), batch {args.batch_size} x <= {args.max_length}"
    )
    _baseline(
        pair, text_docs[:16], chat_docs[:16], args.batch_size
    )  # warm-up: first forwards are slow
    base_t, stats_t, nw_t = [], [], []
    for r in range(args.repeats):
        base_t.append(_baseline(pair, text_docs, chat_docs, args.batch_size))
        t0 = time.perf_counter()
        compute_stats(pair, texts=texts, chats=chats, tokens=args.tokens, config=cfg)
        stats_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compute_stats(pair, texts=texts, chats=chats, tokens=args.tokens, config=cfg_nw)
        nw_t.append(time.perf_counter() - t0)
        print(
            f"repeat {r}: one bare paired forward {base_t[-1]:.2f} s; all statistics {stats_t[-1]:.2f} s "
            f"(ratio {stats_t[-1] / base_t[-1]:.2f}); without weights {nw_t[-1]:.2f} s "
            f"(ratio {nw_t[-1] / base_t[-1]:.2f})",
            flush=True,
        )
    b, s, w = (statistics.median(x) for x in (base_t, stats_t, nw_t))
    print(
        f"median: one bare paired forward {b:.2f} s ({n / b:,.0f} tok/s); all statistics {s:.2f} s; "
        f"ratio {s / b:.2f} (targets: <= 2.0 on the organisms, <= 3.0 on a GPU); "
        f"without weights {w:.2f} s, ratio {w / b:.2f}"
    )


if __name__ == "__main__":
    main()
