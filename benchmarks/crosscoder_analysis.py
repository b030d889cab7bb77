"""Benchmark: crosscoder analysis vs one streaming encoder pass over the same tokens.

Target: ``analyze_crosscoder`` on a 16k-latent crosscoder over 1M tokens
finishes within 2x the time of one pass of those tokens through the encoder.
Both runs read the same synthetic store (d_model 64, float16) and are timed side
by side in one process, alternating; wall time and the process's CPU time are both
reported (on a shared machine the CPU time is the steadier of the two).

    python -m benchmarks.crosscoder_analysis [--tokens 1000000] [--latents 16384] [--repeats 2]

No model pair is given, so the logit lens and causal check (which depend on the
models and transcripts, not on the store size) are skipped; everything else of
the analysis runs, figures included.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch


def build_store(path: Path, n_tokens: int, d: int, seed: int = 0) -> None:
    """A synthetic store: sparse sums of random directions, shared and model-specific, 128-token documents."""
    from diffing.store import write_store

    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(2, 512, d, generator=g)  # [2, features, d]
    dirs[1, :32] = torch.randn(32, d, generator=g)  # some features differ between the models
    acts = torch.empty(n_tokens, 2, d)
    step = 65536
    for s in range(0, n_tokens, step):
        b = min(step, n_tokens - s)
        coef = torch.rand(b, 512, generator=g) * (
            torch.rand(b, 512, generator=g) < 0.03
        )  # [b, features]
        acts[s : s + b] = torch.einsum("bf,mfd->bmd", coef, dirs) + 0.1 * torch.randn(
            b, 2, d, generator=g
        )
    token_ids = torch.randint(0, 1000, (n_tokens,), generator=g)
    doc_ids = torch.arange(n_tokens) // 128
    roles = torch.randint(0, 5, (n_tokens,), generator=g)
    write_store(
        path, {6: acts}, token_ids, doc_ids, roles=roles, dtype="float16", shard_tokens=131072
    )


def build_crosscoder(store, n_latents: int, k: int = 32):
    """A BatchTopK crosscoder with random weights, 5% chat-only and 5% base-only latents, threshold set for L0 ≈ k."""
    from diffing.crosscoder import CrossCoder, CrossCoderConfig

    cc = CrossCoder(CrossCoderConfig(d_model=store.d_model, dict_size=n_latents, k=k, layer=6))
    m = n_latents // 20
    with torch.no_grad():
        cc.W_dec[0, :m] *= 0.01  # chat-only
        cc.W_dec[1, m : 2 * m] *= 0.01  # base-only
        x = store.read_tokens(0, 4096, layer=6).acts
        scores = torch.relu(cc.pre_acts(x)) * cc.decoder_norms().sum(0)
        cc.threshold.fill_(float(torch.quantile(scores.flatten()[:1_000_000], 1 - k / n_latents)))
    return cc


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``t0``."""
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


def encoder_pass(cc, store, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds for one streaming pass of the store through the encoder (the reference)."""
    t0 = _clock()
    with torch.no_grad():
        for batch in store.iter_sequential(batch_size, layer=6):
            cc.encode(batch.acts)
    return _since(t0)


def analysis(cc, store, out: Path, batch_size: int) -> tuple[tuple[float, float], dict]:
    """(wall, CPU) seconds for ``analyze_crosscoder`` (no pair: no lens, no causal check), and its summary."""
    from diffing.crosscoder.analyze import AnalysisConfig, analyze_crosscoder

    t0 = _clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = analyze_crosscoder(cc, store, out, config=AnalysisConfig(batch_size=batch_size))
    return _since(t0), res.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--latents", type=int, default=16384)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from diffing.store import ActivationStore

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_store(Path(tmp) / "store", args.tokens, args.d_model)
        store = ActivationStore.open(Path(tmp) / "store")
        cc = build_crosscoder(store, args.latents)
        print(f"setup {time.perf_counter() - t:.1f}s; {store}", flush=True)
        enc, ana = [], []
        for r in range(args.repeats):  # alternate, so load changes hit both
            enc.append(encoder_pass(cc, store, args.batch_size))
            secs, summary = analysis(cc, store, Path(tmp) / f"out{r}", args.batch_size)
            ana.append(secs)
            print(
                f"repeat {r}: encoder pass wall {enc[-1][0]:.1f}s cpu {enc[-1][1]:.1f}s | analysis "
                f"wall {ana[-1][0]:.1f}s cpu {ana[-1][1]:.1f}s | ratio wall "
                f"{ana[-1][0] / enc[-1][0]:.2f} cpu {ana[-1][1] / enc[-1][1]:.2f}",
                flush=True,
            )
        print(f"classes {summary['classes']}; latent scaling {summary['latent_scaling']}")
        for i, what in enumerate(("wall", "cpu")):
            best_e, best_a = min(e[i] for e in enc), min(a[i] for a in ana)
            print(
                f"tokens {args.tokens}, latents {args.latents}, d_model {args.d_model}, "
                f"batch {args.batch_size}: best {what} encoder pass {best_e:.1f}s, best {what} "
                f"analysis {best_a:.1f}s, ratio of bests {best_a / best_e:.2f} (target <= 2)"
            )


if __name__ == "__main__":
    main()
