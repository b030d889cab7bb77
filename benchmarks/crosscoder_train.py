"""Crosscoder training benchmark: throughput of the sparse BatchTopK step vs a dense reference, and quality.

Run from the repository root::

    python -m benchmarks.crosscoder_train                      # throughput, d_model 2x256, 16,384 latents, k 32, batch 4,096
    python -m benchmarks.crosscoder_train --quality STORE     # + FVU/L0/dead of BatchTopK and L1 on a store (~5 min)
    python -m benchmarks.crosscoder_train --quality organisms # harvest the organism chat pair's middle layer first
    python -m benchmarks.crosscoder_train --skip-throughput --bf16-quality organisms  # FVU of bf16 vs fp32 training

Throughput alternates the two implementations in rounds on the same batches and
reports each round's ratio, so machine noise (other processes) hits both alike.
The dense reference is the straightforward implementation: dense ReLU codes,
batch top-k mask, dense ``einsum`` decode, autograd through everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from diffing.crosscoder import CrossCoder, CrossCoderConfig, train_crosscoder


def dense_batchtopk_loss(cc: CrossCoder, x: torch.Tensor) -> torch.Tensor:
    """Reference BatchTopK loss: every tensor dense ``[B, n]``, decode by a dense matmul."""
    f = torch.relu(torch.einsum("bmd,mdn->bn", x, cc.W_enc) + cc.b_enc)  # [B, n]
    score = f * cc.W_dec.norm(dim=-1).sum(0)  # [B, n]
    idx = score.flatten().topk(cc.cfg.k * x.shape[0]).indices
    mask = torch.zeros_like(score).flatten().scatter_(0, idx, 1.0).view_as(score)  # [B, n]
    x_hat = torch.einsum("bn,mnd->bmd", f * mask, cc.W_dec) + cc.b_dec
    return (x - x_hat).pow(2).sum((1, 2)).mean()


def _step(cc, opt, x, dense: bool) -> None:
    loss = dense_batchtopk_loss(cc, x) if dense else cc.forward_train(x).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(cc.parameters(), 1.0)
    opt.step()


def throughput(
    d_model=256, dict_size=16384, k=32, batch=4096, rounds=3, steps=2, threads=None
) -> dict:
    """Tokens/s of one full training step (forward, backward, clip, Adam) for both implementations."""
    if threads:
        torch.set_num_threads(threads)
    cfg = CrossCoderConfig(d_model=d_model, dict_size=dict_size, k=k, batch_size=batch).resolved()
    models = {name: CrossCoder(cfg) for name in ("sparse", "dense")}
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, 2, d_model, generator=g) for _ in range(steps)]
    for name in models:  # warm-up
        _step(models[name], opts[name], xs[0], name == "dense")
    times = {"sparse": [], "dense": []}
    for _ in range(rounds):
        for name in ("sparse", "dense"):
            t = time.perf_counter()
            for x in xs:
                _step(models[name], opts[name], x, name == "dense")
            times[name].append((time.perf_counter() - t) / steps)
    ratios = [d / s for s, d in zip(times["sparse"], times["dense"])]
    return {
        "config": {"d_model": f"2x{d_model}", "dict_size": dict_size, "k": k, "batch": batch, "threads": torch.get_num_threads()},
        "sparse_tokens_per_s": batch / statistics.median(times["sparse"]),
        "dense_tokens_per_s": batch / statistics.median(times["dense"]),
        "speedup_per_round": ratios,
        "speedup_median": statistics.median(ratios),
    }  # fmt: skip


def _organism_store(out: Path, tokens: int, org: str | None = None) -> Path:
    """Harvest the organism chat pair's middle layer (base + chat) into ``out``."""
    from diffing.models import ModelPair
    from diffing.organisms import cached_organisms
    from diffing.store import harvest

    org = Path(org) if org else cached_organisms(fast=True)
    pair = ModelPair.load(str(org / "base"), str(org / "chat"))
    data = [
        str(p) for p in (org / "corpus" / "text.txt", org / "corpus" / "chat.jsonl") if p.exists()
    ]
    harvest(
        pair,
        out,
        layers=[pair.n_layers // 2],
        data=data,
        tokens=tokens,
        seq_len=128,
        progress=False,
    )
    return out


def quality(
    store_path: str, *, tokens: int, expansion: int, k: int, l1_coeff: float, out: Path
) -> dict:
    """Train BatchTopK and L1 crosscoders on a store; FVU per model, L0, dead fraction of each."""
    from diffing.store import ActivationStore

    store = ActivationStore.open(store_path)
    layer = store.layers[len(store.layers) // 2]
    results = {
        "store": store_path,
        "layer": layer,
        "store_tokens": store.n_tokens,
        "d_model": store.d_model,
    }
    common = dict(layer=layer, expansion=expansion, batch_size=1024, tokens=tokens, lr_warmup_steps=50,
                  threshold_start_step=50, log_every=100, dead_tokens=min(200_000, tokens // 4))  # fmt: skip
    for kind, extra in (("batchtopk", {"k": k}), ("l1", {"l1_coeff": l1_coeff, "lr": 1e-3})):
        t = time.perf_counter()
        res = train_crosscoder(store, CrossCoderConfig(kind=kind, **common, **extra), out / kind)
        m = res.metrics
        results[kind] = {"fvu": m["fvu"], "l0": m["l0"], "dead_frac": m["dead_frac"],
                         "never_fired_in_eval": 1 - m["eval_fired_frac"], "seconds": time.perf_counter() - t,
                         "tokens": m["tokens"]}  # fmt: skip
    return results


@contextlib.contextmanager
def _bf16_parameters():
    """The rejected alternative, for comparison: parameters and Adam state in bfloat16 (matmuls in float32)."""
    import diffing.crosscoder.train as train_module

    original = train_module.CrossCoder

    class BF16Params(original):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.to(torch.bfloat16)

    train_module.CrossCoder = BF16Params
    try:
        yield
    finally:
        train_module.CrossCoder = original


def bf16_quality(
    store_path: str, *, tokens: int, expansion: int, k: int, seeds: int, out: Path
) -> dict:
    """FVU of BatchTopK crosscoders trained in bfloat16 (fp32 master weights) vs float32, same steps and seeds."""
    from diffing.store import ActivationStore

    store = ActivationStore.open(store_path)
    layer = store.layers[len(store.layers) // 2]
    common = dict(layer=layer, expansion=expansion, k=k, batch_size=1024, tokens=tokens, lr_warmup_steps=50,
                  threshold_start_step=50, log_every=100, dead_tokens=min(200_000, tokens // 4), auxk_alpha=1.0)  # fmt: skip
    runs = []
    for seed in range(seeds):
        row = {"seed": seed}
        for dtype in ("float32", "bfloat16"):
            t = time.perf_counter()
            cfg = CrossCoderConfig(dtype=dtype, seed=seed, **common)
            m = train_crosscoder(store, cfg, out / f"{dtype}-{seed}", force=True).metrics
            row[dtype] = {"fvu": m["fvu"], "l0": m["l0"], "dead_frac": m["dead_frac"], "steps": m["steps"],
                          "seconds": time.perf_counter() - t}  # fmt: skip
        row["fvu_gap"] = [b - a for a, b in zip(row["float32"]["fvu"], row["bfloat16"]["fvu"])]
        t = time.perf_counter()
        with _bf16_parameters():
            cfg = CrossCoderConfig(seed=seed, **common)
            m = train_crosscoder(store, cfg, out / f"bf16-params-{seed}", force=True).metrics
        row["bf16_parameters"] = {"fvu": m["fvu"], "l0": m["l0"], "dead_frac": m["dead_frac"],
                                  "seconds": time.perf_counter() - t}  # fmt: skip
        runs.append(row)
    return {"store": store_path, "layer": layer, "store_tokens": store.n_tokens, "d_model": store.d_model,
            "tokens": tokens, "runs": runs}  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per round and implementation")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument(
        "--quality", default=None, help="STORE folder, or 'organisms' to harvest the chat pair"
    )
    p.add_argument(
        "--quality-tokens", type=int, default=2_000_000, help="training tokens per crosscoder"
    )
    p.add_argument(
        "--bf16-quality", default=None, help="STORE or 'organisms': FVU of bf16 vs fp32 training"
    )
    p.add_argument("--seeds", type=int, default=2, help="seeds of the bf16-vs-fp32 comparison")
    p.add_argument("--harvest-tokens", type=int, default=500_000)
    p.add_argument(
        "--organisms",
        default=None,
        help="an existing organism build (default: the cached fast build)",
    )
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--l1-coeff", type=float, default=2.0)
    p.add_argument("--out", default="/tmp/diffing-bench-crosscoder")
    args = p.parse_args(argv)
    report = {}
    if not args.skip_throughput:
        report["throughput"] = throughput(
            rounds=args.rounds, steps=args.steps, threads=args.threads
        )
        print(json.dumps(report["throughput"], indent=2))
    if args.quality:
        out = Path(args.out)
        store = (
            str(_organism_store(out / "store", args.harvest_tokens, args.organisms))
            if args.quality == "organisms"
            else args.quality
        )
        report["quality"] = quality(store, tokens=args.quality_tokens, expansion=args.expansion, k=args.k,
                                    l1_coeff=args.l1_coeff, out=out)  # fmt: skip
        print(json.dumps(report["quality"], indent=2))
    if args.bf16_quality:
        out = Path(args.out)
        store = (
            str(_organism_store(out / "store", args.harvest_tokens, args.organisms))
            if args.bf16_quality == "organisms"
            else args.bf16_quality
        )
        report["bf16_quality"] = bf16_quality(store, tokens=args.quality_tokens, expansion=args.expansion,
                                              k=args.k, seeds=args.seeds, out=out)  # fmt: skip
        print(json.dumps(report["bf16_quality"], indent=2))


if __name__ == "__main__":
    main()
