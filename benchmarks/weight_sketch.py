"""Benchmark: how accurate and how costly the remote weight sketches are (``diffing.stats.weight_sketch``).

With ``--remote`` each weight matrix comes back as a ``[k, k]`` sketch instead of itself. This
measures, for deltas of known norm (full rank, rank 8, rank 1, and a 1/i singular-value decay),
the relative error of the sketched ``||ΔW||`` over many seeds against the standard error the
sketch itself reports, for several ``k``; and the time to sketch one matrix against one
``x @ Wᵀ`` of a 2,048-token batch (a forward pass's share for that matrix), on this CPU.

    python -m benchmarks.weight_sketch [--dim 512] [--seeds 30] [--sizes 16 64 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffing.stats.weight_sketch import relative_error, sketch_matrix


def _deltas(d: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    decay = torch.arange(1, d + 1, dtype=torch.float32) ** -1.0
    return {
        "full rank": torch.randn(d, d, generator=g),
        "rank 8": torch.randn(d, 8, generator=g) @ torch.randn(8, d, generator=g),
        "rank 1": torch.randn(d, 1, generator=g) @ torch.randn(1, d, generator=g),
        "1/i spectrum": q1 @ torch.diag(decay) @ q2,
    }


def accuracy(d: int, seeds: int, sizes: list[int]) -> list[tuple]:
    """Rows ``(k, delta, mean ratio, spread of ratios, mean reported error)``."""
    rows = []
    for k in sizes:
        for name, w in _deltas(d).items():
            exact = float(w.norm())
            ratios, errs = [], []
            for seed in range(seeds):
                s = sketch_matrix(w, k, seed)
                ratios.append(float(s.norm()) / k / exact)
                errs.append(relative_error(s))
            rows.append(
                (k, name, statistics.mean(ratios), statistics.stdev(ratios), statistics.mean(errs))
            )
    return rows


def timing(d_out: int, d_in: int, k: int, repeats: int = 3) -> tuple[float, float]:
    """``(seconds to sketch a [d_out, d_in] matrix, seconds of x @ Wᵀ for 2,048 tokens)``, medians."""
    w = torch.randn(d_out, d_in)
    x = torch.randn(2048, d_in)
    sk, mm = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sketch_matrix(w, k)
        sk.append(time.perf_counter() - t)
        t = time.perf_counter()
        _ = x @ w.T
        mm.append(time.perf_counter() - t)
    return statistics.median(sk), statistics.median(mm)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    args = ap.parse_args(argv)
    print(f"accuracy: {args.dim} x {args.dim} deltas, {args.seeds} seeds")
    print("| k | delta | mean sketched/exact | spread (std) | mean reported error |")
    print("|---|---|---|---|---|")
    for k, name, mean, spread, err in accuracy(args.dim, args.seeds, args.sizes):
        print(f"| {k} | {name} | {mean:.3f} | {100 * spread:.1f}% | {100 * err:.1f}% |")
    print()
    print("| matrix | k | sketch (s) | x @ W.T, 2,048 tokens (s) |")
    print("|---|---|---|---|")
    for shape in ((4096, 4096), (11008, 4096)):
        s, m = timing(*shape, k=64)
        print(f"| {shape[0]} x {shape[1]} | 64 | {s:.3f} | {m:.3f} |")


if __name__ == "__main__":
    main()
