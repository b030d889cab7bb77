"""Benchmark: paired harvest throughput vs bare Hugging Face forwards; peak RSS vs --tokens.

Targets:

1. ``harvest`` (both models, up to the deepest requested layer, written to disk) runs at
   >= 1.0x the tokens/s of running both models' bare Hugging Face forward passes (no
   nnsight, full depth, logits included) over the same padded batches. Harvest and
   baseline are timed side by side in one process and alternated, so machine noise
   hits both alike; the ratio is of the medians.
2. Peak RSS of a harvest does not grow with ``--tokens``: harvests of N and 10 N tokens
   each run in a fresh subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``);
   the peaks must agree within 10%. The harvest buffers at most one shard plus one
   length-sorted group (``sort_batches * batch_size`` sequences), so the small run must
   already span a few groups (default: 16384 tokens of 128-token sequences = 2 groups).

    python -m benchmarks.harvest [--hidden 256] [--layers 8] [--layer 3] [--tokens 16384] [--repeats 3]
    python -m benchmarks.harvest --organisms   # the fast organism build's base/chat pair

Default pair: a tiny random Llama (hidden 256, 8 layers) and a perturbed copy;
a middle layer (3 of 0..7) is harvested.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WORDS = (
    "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token "
    "tell me how to bake bread here is a short answer about rivers mountains and cities"
).split()


def _pair_dirs(root: Path, args) -> tuple[str, str]:
    if args.organisms:
        from diffing.organisms import cached_organisms

        org = cached_organisms(fast=True)
        return str(org / "base"), str(org / "chat")
    from diffing.tiny import build_tiny_model, perturb_model

    base = build_tiny_model(root / "base", "llama", hidden=args.hidden, layers=args.layers)
    ft = perturb_model(base, root / "ft", scale=0.1)
    return str(base), str(ft)


def _corpus(root: Path, n_docs: int = 4000) -> Path:
    rng = random.Random(0)
    path = root / "text.txt"
    path.write_text(
        "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 400))) for _ in range(n_docs)
        )
        + "\n"
    )
    return path


def _batches(pair, data: Path, tokens: int, seq_len: int, batch_size: int, sort_batches: int):
    """The exact padded batches a harvest of these settings feeds the models."""
    from diffing.data.corpus import resolve_all
    from diffing.store.harvesting import _groups
    from diffing.store.sequences import sequence_stream
    from diffing.tokens import Encoded, pad_batch, pad_id_of

    stream = sequence_stream(
        pair.tokenizer, resolve_all([str(data)]), seq_len=seq_len, chat_fraction=0.0
    )
    out = []
    for group in _groups(
        stream,
        tokens=tokens,
        rank=0,
        world_size=1,
        start_seq=0,
        group_size=sort_batches * batch_size,
    ):
        ordered = sorted(group, key=lambda s: len(s.input_ids))
        for i in range(0, len(ordered), batch_size):
            part = ordered[i : i + batch_size]
            out.append(
                pad_batch([Encoded(s.input_ids, s.roles) for s in part], pad_id_of(pair.tokenizer))
            )
    return out


@torch.no_grad()
def _bare_forward(pair, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        for which in ("base", "finetuned"):
            pair.hf(which)(input_ids=b.input_ids, attention_mask=b.attention_mask)
    return time.perf_counter() - t0


def _harvest_once(pair, out: Path, data: Path, args) -> float:
    from diffing.store import harvest

    t0 = time.perf_counter()
    harvest(
        pair,
        out,
        layers=[args.layer],
        data=[str(data)],
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        progress=False,
    )
    return time.perf_counter() - t0


def throughput(args, root: Path, base: str, ft: str, data: Path) -> dict:
    """Median tokens/s of harvest and of the bare forwards, alternated ``repeats`` times."""
    from diffing.models import ModelPair

    pair = ModelPair.load(base, ft)
    batches = _batches(pair, data, args.tokens, args.seq_len, args.batch_size, 8)
    n_tok = int(sum(int(b.attention_mask.sum()) for b in batches))
    _bare_forward(pair, batches[:2])  # warm-up
    bare, harv = [], []
    for r in range(args.repeats):
        bare.append(n_tok / _bare_forward(pair, batches))
        harv.append(n_tok / _harvest_once(pair, root / f"store-{r}", data, args))
    b, h = statistics.median(bare), statistics.median(harv)
    return {
        "tokens": n_tok,
        "bare_tok_s": [round(x) for x in bare],
        "harvest_tok_s": [round(x) for x in harv],
        "bare_median": round(b),
        "harvest_median": round(h),
        "ratio": round(h / b, 3),
        "layer": args.layer,
        "n_layers": pair.n_layers,
        "d_model": pair.d_model,
    }


def _rss_child(args) -> None:
    """Run one harvest and print its peak RSS (called in a fresh subprocess)."""
    import resource

    from diffing.models import ModelPair
    from diffing.store import harvest

    torch.set_num_threads(args.threads)
    pair = ModelPair.load(args.base, args.ft)
    t0 = time.perf_counter()
    store = harvest(
        pair,
        args.out,
        layers=[args.layer],
        data=[args.data],
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        shard_tokens=args.shard_tokens,
        progress=False,
    )
    print(
        json.dumps(
            {
                "tokens": store.n_tokens,
                "seconds": time.perf_counter() - t0,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def peak_rss(args, root: Path, base: str, ft: str, data: Path) -> dict:
    """Peak RSS of harvests of ``rss_tokens`` and 10x that, each in a fresh process."""
    out = {}
    for n in (args.rss_tokens, 10 * args.rss_tokens):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.harvest",
            "--rss-child",
            "--base",
            base,
            "--ft",
            ft,
            "--data",
            str(data),
            "--out",
            str(root / f"rss-{n}"),
            "--tokens",
            str(n),
            "--layer",
            str(args.layer),
            "--seq-len",
            str(args.rss_seq_len),
            "--batch-size",
            str(args.batch_size),
            "--shard-tokens",
            str(args.shard_tokens),
            "--threads",
            str(args.threads),
        ]
        res = subprocess.run(
            cmd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
        )
        if res.returncode:
            raise RuntimeError(res.stderr[-3000:])
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    small, big = (out[n]["maxrss_mib"] for n in sorted(out))
    return {"runs": out, "growth": round(big / small - 1, 4)}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--organisms", action="store_true", help="use the fast organism build's base/chat pair"
    )
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--layer", type=int, default=3, help="layer harvested (middle of the model)")
    p.add_argument("--tokens", type=int, default=16384, help="tokens per throughput round")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--rss-tokens", type=int, default=16384, help="small RSS run (the large one is 10x)"
    )
    p.add_argument(
        "--rss-seq-len",
        type=int,
        default=128,
        help="sequence length of the RSS runs (the small run must hold a few length-sorted groups)",
    )
    p.add_argument("--shard-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--skip-rss", action="store_true")
    # internal: one RSS measurement in a subprocess
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--ft", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss_child:
        _rss_child(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, ft = _pair_dirs(root, args)
        data = _corpus(root)
        result = {"throughput": throughput(args, root, base, ft, data)}
        print(json.dumps(result, indent=1), flush=True)
        if not args.skip_rss:
            result["peak_rss"] = peak_rss(args, root, base, ft, data)
        result["settings"] = {
            k: v
            for k, v in vars(args).items()
            if k not in ("base", "ft", "data", "out", "rss_child")
        }
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
