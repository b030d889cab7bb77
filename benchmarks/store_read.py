"""Benchmark: streaming store batches vs the crosscoder trainer that consumes them.

Target: the reader streams shuffled, normalised batches of 4096 tokens at
>= 5x the rate a crosscoder training step consumes them, so training is never
waiting on the store. The consumer is one training step of ``diffing.crosscoder``'s
BatchTopK ``CrossCoder`` (forward_train + backward + Adam step) with d_model 256,
two models and 16384 latents; if that package is missing, a dense BatchTopK-shaped
stand-in of the same size (encoder/decoder matmuls, top-k, backward) is timed instead.
Both are timed in one process, alternated.

    python -m benchmarks.store_read [--tokens 262144] [--d-model 256] [--latents 16384] [--batch-size 4096]

The store is written just before reading, so it is in the OS page cache (a store
larger than RAM reads at disk speed instead; the memory-mapped reader reads
contiguous chunks of 1024 tokens either way).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _consumer(d_model: int, latents: int, k: int = 32):
    """``(step_fn, name)``: one crosscoder training step on a batch ``[B, 2, d_model]``."""
    try:
        from diffing.crosscoder import CrossCoder, CrossCoderConfig

        cc = CrossCoder(CrossCoderConfig(d_model=d_model, dict_size=latents, k=k))
        opt = torch.optim.Adam(cc.parameters(), lr=1e-4)

        def step(x):
            out = cc.forward_train(x)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step, "diffing.crosscoder.CrossCoder (batchtopk) forward_train + backward + Adam"
    except ImportError:
        w_enc = torch.nn.Parameter(torch.randn(2 * d_model, latents) * 0.01)
        w_dec = torch.nn.Parameter(torch.randn(latents, 2 * d_model) * 0.01)
        opt = torch.optim.Adam([w_enc, w_dec], lr=1e-4)

        def step(x):
            flat = x.reshape(x.shape[0], -1)
            f = torch.relu(flat @ w_enc)
            thr = f.flatten().topk(k * x.shape[0]).values[-1]
            f = f * (f >= thr)
            loss = (f @ w_dec - flat).pow(2).sum(-1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step, "dense BatchTopK-shaped stand-in (diffing.crosscoder not importable)"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokens", type=int, default=262144)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--latents", type=int, default=16384)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=5, help="trainer steps per timing round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from diffing.store import ActivationStore, write_store

    with tempfile.TemporaryDirectory() as tmp:
        n, d = args.tokens, args.d_model
        g = torch.Generator().manual_seed(0)
        acts = {0: torch.randn(n, 2, d, generator=g)}
        doc_ids = torch.arange(n) // 512
        write_store(Path(tmp), acts, torch.zeros(n, dtype=torch.long), doc_ids, shard_tokens=65536)
        del acts
        store = ActivationStore.open(tmp)
        step, consumer = _consumer(d, args.latents)
        x = next(store.iter_batches(args.batch_size, layer=0))
        step(x)  # warm-up
        read_rates, train_rates = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            count = sum(1 for _ in store.iter_batches(args.batch_size, layer=0, seed=r))
            read_rates.append(count / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x)
            train_rates.append(args.steps / (time.perf_counter() - t0))
        rb, tb = statistics.median(read_rates), statistics.median(train_rates)
        print(
            json.dumps(
                {
                    "consumer": consumer,
                    "store": {
                        "tokens": n,
                        "d_model": d,
                        "shards": len(store.manifest["shards"]),
                        "dtype": "float32",
                    },
                    "reader_batches_s": [round(v, 2) for v in read_rates],
                    "trainer_steps_s": [round(v, 3) for v in train_rates],
                    "reader_median": round(rb, 2),
                    "trainer_median": round(tb, 3),
                    "ratio": round(rb / tb, 1),
                    "settings": vars(args),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
