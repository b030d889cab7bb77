"""GPU benchmark: harvest and stats against bare forwards of the same pair, plus crosscoder training.

One run builds a random-init Llama pair locally (no downloads) and measures, side by side:

1. **harvest** (layer ``L/2``, packed text, bf16 store, written to disk) vs both models' bare
   full Hugging Face forwards (logits included) over the same batches; target >= 1.5x.
2. **stats** (``compute_stats``: weights, activations at every layer, KL, ADL with
   Patchscope and steering) vs one bare paired forward (logits included) over the same
   batches; target <= 3x. The weight statistics (a fixed cost per pair) and the per-token
   part are also timed apart.
3. **crosscoder**: ``benchmarks.gpu_crosscoder.run(small, device)`` when that module exists
   (an ``unavailable`` entry otherwise).

Full size (one H100/H200, under 8 minutes): Llama hidden 2048, 16 layers, vocab 32000, bf16;
harvest of layer 8, seq 1024, batch 16, 262,144 tokens; stats over 65,536 tokens.
``--small`` runs the same code on a tiny pair in seconds (CPU tests).

    python -m benchmarks.gpu [--small] [--device cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass
class Setup:
    """Sizes of one benchmark run."""

    hidden: int
    """Model width."""
    layers: int
    """Decoder blocks."""
    vocab: int
    """Vocabulary size (the tokenizer's ids are a prefix of it)."""
    intermediate: int
    """MLP width."""
    heads: int
    """Attention heads."""
    kv_heads: int
    """Key/value heads (grouped-query attention)."""
    dtype: str
    """Model and store dtype."""
    layer: int
    """Harvested layer."""
    seq_len: int
    """Harvest sequence length."""
    batch_size: int
    """Harvest sequences per forward."""
    tokens: int
    """Harvest tokens."""
    stats_tokens: int
    """Stats token budget."""
    stats_batch: int
    """Stats documents per forward."""
    stats_max_length: int
    """Stats document length cap."""


FULL = Setup(2048, 16, 32000, 5632, 32, 4, "bfloat16", 8, 1024, 16, 262_144, 65_536, 8, 128)
"""The GPU configuration (a TinyLlama-sized pair)."""
SMALL = Setup(64, 4, 1000, 128, 4, 2, "float32", 2, 64, 4, 2048, 1024, 4, 64)
"""Seconds on a CPU: the same code paths on a tiny pair."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


@torch.no_grad()
def _bare(pair, batches, device: torch.device) -> None:
    """Both models' full forwards (logits included) over ``batches`` (``(ids, mask or None)``)."""
    for ids, mask in batches:
        for which in ("base", "finetuned"):
            kw = {"attention_mask": mask} if mask is not None else {}
            pair.hf(which)(input_ids=ids, use_cache=False, **kw)


def _harvest_batches(pair, data: Path, s: Setup, device: torch.device) -> list:
    """The exact batches the harvest feeds the models (packed text: unpadded), on the device."""
    from diffing.data.corpus import resolve_all
    from diffing.store.harvesting import _groups
    from diffing.store.pipeline import prepare_batches
    from diffing.store.sequences import sequence_stream
    from diffing.tokens import pad_id_of

    stream = sequence_stream(
        pair.tokenizer, resolve_all([str(data)]), seq_len=s.seq_len, chat_fraction=0.0, pack=True
    )
    groups = _groups(stream, tokens=s.tokens, rank=0, world_size=1, start_seq=0,
                     group_size=8 * s.batch_size)  # fmt: skip
    out = []
    for item in prepare_batches(groups, s.batch_size, pad_id_of(pair.tokenizer)):
        mask = item.batch.attention_mask.to(device) if item.padded else None
        out.append((item.batch.input_ids.to(device), mask))
    return out


def bench_harvest(pair, root: Path, data: Path, s: Setup, device: torch.device) -> dict:
    """Paired harvest vs both models' bare full forwards over the same tokens."""
    from diffing.store import harvest

    batches = _harvest_batches(pair, data, s, device)
    n_tok = sum(int(ids.numel()) for ids, _ in batches)
    kw = dict(layers=[s.layer], data=[str(data)], seq_len=s.seq_len, batch_size=s.batch_size,
              dtype=s.dtype, pack=True, progress=False)  # fmt: skip
    harvest(pair, root / "warm", tokens=2 * s.seq_len * s.batch_size, **kw)  # warm-up
    _timed(lambda: _bare(pair, batches[:2], device), device)
    bare_s, _ = _timed(lambda: _bare(pair, batches, device), device)
    harvest_s, store = _timed(lambda: harvest(pair, root / "store", tokens=s.tokens, **kw), device)
    return {
        "tokens": n_tok,
        "stored_tokens": store.n_tokens,
        "bare_seconds": round(bare_s, 4),
        "harvest_seconds": round(harvest_s, 4),
        "bare_tok_s": round(n_tok / bare_s, 1),
        "harvest_tok_s": round(n_tok / harvest_s, 1),
        "ratio": round(bare_s / harvest_s, 3),
        "target": ">= 1.5 (harvest tokens/s over bare full forwards of both models)",
    }


def bench_stats(pair, data: Path, s: Setup, device: torch.device) -> dict:
    """``compute_stats`` vs one bare paired forward over the same batches."""
    from diffing.stats import StatsConfig, compute_stats
    from diffing.stats.run import _batches, encode_documents
    from diffing.tokens import pad_id_of

    texts = data.read_text().splitlines()
    text_docs, _ = encode_documents(pair.tokenizer, texts, None, s.stats_tokens, s.stats_max_length)
    pad = pad_id_of(pair.tokenizer)
    batches = [
        (b.input_ids.to(device), b.attention_mask.to(device))
        for b in _batches(text_docs, s.stats_batch, pad)
    ]
    n_tok = sum(len(e.input_ids) for e in text_docs)
    cfg = StatsConfig(batch_size=s.stats_batch, max_length=s.stats_max_length)

    def run(weights: bool):
        c = StatsConfig(**{**asdict(cfg), "weights": weights})
        return compute_stats(pair, texts=texts, tokens=s.stats_tokens, config=c)

    compute_stats(pair, texts=texts[:8], tokens=2 * s.stats_max_length,
                  config=StatsConfig(**{**asdict(cfg), "steer_prompts": 0}))  # fmt: skip
    _timed(lambda: _bare(pair, batches[:2], device), device)
    bare_s, _ = _timed(lambda: _bare(pair, batches, device), device)
    stats_s, _ = _timed(lambda: run(True), device)
    no_w_s, _ = _timed(lambda: run(False), device)
    return {
        "tokens": n_tok,
        "bare_paired_forward_seconds": round(bare_s, 4),
        "stats_seconds": round(stats_s, 4),
        "stats_without_weights_seconds": round(no_w_s, 4),
        "weights_seconds": round(max(stats_s - no_w_s, 0.0), 4),
        "ratio": round(stats_s / bare_s, 3),
        "ratio_without_weights": round(no_w_s / bare_s, 3),
        "target": "<= 3 (stats seconds over one bare paired forward)",
    }


def bench_crosscoder(small: bool, device: torch.device) -> dict:
    """The crosscoder trainer's benchmark, if its module is there."""
    try:
        from benchmarks import gpu_crosscoder
    except ImportError as err:
        return {"status": "unavailable", "reason": f"benchmarks.gpu_crosscoder: {err}"}
    return gpu_crosscoder.run(small, str(device))


def main(argv: list[str] | None = None) -> dict:
    """Run everything; print the JSON result (and write it to ``--out``); return it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny pair: seconds on a CPU")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if present)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = SMALL if args.small else FULL
    from benchmarks.pairs import build_llama_pair, write_corpus
    from diffing.models import ModelPair

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, ft = build_llama_pair(root / "pair", hidden=s.hidden, layers=s.layers, vocab=s.vocab,
                                    intermediate=s.intermediate, heads=s.heads,
                                    kv_heads=s.kv_heads, dtype=s.dtype)  # fmt: skip
        data = write_corpus(root / "text.txt", 3000 if not args.small else 200)
        pair = ModelPair.load(base, ft, dtype=s.dtype, device=str(device))
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "setup": asdict(s) | {"small": args.small},
            "harvest": bench_harvest(pair, root, data, s, device),
            "stats": bench_stats(pair, data, s, device),
        }
        del pair
        result["crosscoder"] = bench_crosscoder(args.small, device)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
